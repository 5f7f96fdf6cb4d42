"""Backfill re-scores a file into its own trend series, once, without touching live rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.settings import DEFAULT_MODEL_DIR
from tests.integration.helpers import posts, scalar, send
from workers.ingest.kafka_io import ensure_topics
from workers.tools.backfill import backfill, read_topic_from, resolve_model
from workers.tools.replay import read_messages

pytestmark = pytest.mark.integration


def test_backfill_counts_once_into_its_own_series(engine, classifier, unique, tmp_path: Path):  # type: ignore[no-untyped-def]
    source = tmp_path / "history.jsonl"
    source.write_text("\n".join(json.dumps(p) for p in posts(15, unique)) + "\nnot json\n")
    series = f"bf-{unique}"
    live_before = scalar(engine, "SELECT count(*) FROM classified_messages")

    values = list(read_messages(source, "social"))
    first = backfill(engine, classifier, values, "social", 60, str(source), series=series)
    again = backfill(engine, classifier, values, "social", 60, str(source), series=series)

    assert (first["counted"], first["rejected"], first["messages"]) == (15, 1, 16)
    assert (again["counted"], again["already_counted"]) == (0, 15)
    assert scalar(engine, "SELECT sum(n_messages) FROM trend_windows WHERE series = :s AND dimension = 'topic'",
                  s=series) == 15
    assert scalar(engine, "SELECT count(*) FROM classified_messages") == live_before


def test_a_topic_is_read_from_an_offset_to_its_high_watermark(broker, unique):  # type: ignore[no-untyped-def]
    topic = f"history-{unique}"
    ensure_topics(broker.bootstrap, [topic], 1)
    send(broker.bootstrap, topic, posts(10, unique))
    read = [json.loads(v)["id"] for v in read_topic_from(broker.bootstrap, topic, offset=3)]
    assert read == [f"{unique}-{i}" for i in range(3, 10)]


def test_models_resolve_by_folder_or_default_and_unknown_is_refused(engine) -> None:  # type: ignore[no-untyped-def]
    assert resolve_model(engine, "default", DEFAULT_MODEL_DIR) == DEFAULT_MODEL_DIR
    assert resolve_model(engine, str(DEFAULT_MODEL_DIR), Path("/nowhere")) == DEFAULT_MODEL_DIR
    with pytest.raises(ValueError, match="neither a folder nor a registered version"):
        resolve_model(engine, "fs-000000000000", DEFAULT_MODEL_DIR)
