import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from schemas.messages import RawMessage
from workers.pipeline.stages import decode
from workers.tools.replay import read_messages


def test_csv_rows_become_valid_messages_with_stable_ids(tmp_path: Path) -> None:
    source = tmp_path / "news.csv"
    source.write_text('text,source\n"$AAPL slides, analysts cut targets",wire\nFed holds rates,\n')
    first = list(read_messages(source, "news"))
    second = list(read_messages(source, "news"))
    assert [json.loads(m)["id"] for m in first] == [json.loads(m)["id"] for m in second]
    accepted, dead = decode([RawMessage("news", v, "t", 0, i) for i, v in enumerate(first)], datetime.now(timezone.utc))
    assert dead == [] and [a.message.source for a in accepted] == ["wire", "replay-news"]
    assert accepted[0].message.text == "$AAPL slides, analysts cut targets"


def test_jsonl_lines_are_sent_as_they_are(tmp_path: Path) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_text('{"id": "1", "source": "x", "text": "hi", "published_at": "2026-01-01T00:00:00Z"}\n\nnot json\n')
    assert list(read_messages(source, "social")) == [
        b'{"id": "1", "source": "x", "text": "hi", "published_at": "2026-01-01T00:00:00Z"}', b"not json"]


def test_a_csv_without_text_column_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("headline\nx\n")
    with pytest.raises(ValueError, match="'text' column"):
        list(read_messages(source, "news"))
