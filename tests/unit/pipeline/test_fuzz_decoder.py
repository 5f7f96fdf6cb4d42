"""Fuzzing the decoder: whatever bytes arrive, each record is either accepted (and then turns into a
row and trend deltas) or becomes a dead letter with a reason; the decoder never raises.

Property-based (hypothesis) plus a corpus of hostile inputs. The number of inputs tried is printed.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.messages import RawMessage
from workers.ingest.sink import first_of_each_key, sorted_records
from workers.pipeline.stages import decode, to_columns, trend_deltas

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
TRIED = {"count": 0}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
timestamps = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                          timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-11)),
                                                     timezone(timedelta(hours=14))]))
hostile_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300) | \
    st.sampled_from(["\u200b\u200c\u200d", "\u202e$AAPL\u202c", "\x00\x01\x1f", "日本株が急落", "😱📉 $TSLA",
                     "مرحبا بالسوق", "a" * 20_001, " \t\n "])


def check(records: list[RawMessage]) -> None:
    """The decoder's contract for any input: every record accounted for once, nothing raised."""
    TRIED["count"] += len(records)
    accepted, dead = decode(records, NOW)
    assert len(accepted) + len(dead) == len(records)
    for letter in dead:
        assert letter.stage in {"decode", "validate"} and letter.reason
    columns = to_columns(accepted, _fixed_scores(len(accepted)))
    parts = first_of_each_key([columns], 60)
    for record in sorted_records(parts):  # what COPY would send: nothing Postgres refuses
        assert not any(isinstance(v, str) and "\x00" in v for v in record)
    trend_deltas(parts)


def _fixed_scores(n: int) -> Any:
    """Fixed scores: the decoder's output must survive the column and aggregation stages."""
    import numpy as np

    from schemas.predictions import BatchScores

    return BatchScores(np.zeros(n, np.int64), np.full(n, 0.9, np.float32),
                       np.tile(np.array([0.1, 0.8, 0.1], np.float32), (n, 1)), ("Macro",),
                       ("negative", "neutral", "positive"), "fs-test")


def raw(value: bytes | None, kind: str = "social") -> RawMessage:
    return RawMessage(kind, value, f"{kind}-topic", 0, 0)  # type: ignore[arg-type]


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512), st.sampled_from(["news", "social"]))
def test_any_bytes(value: bytes, kind: str) -> None:
    check([raw(value, kind)])


@FUZZ
@given(json_values, st.sampled_from(["news", "social"]))
def test_any_json(value: Any, kind: str) -> None:
    check([raw(json.dumps(value).encode(), kind)])


@FUZZ
@given(st.fixed_dictionaries(
    {"id": st.text(max_size=300) | st.integers(), "source": st.text(max_size=150),
     "published_at": timestamps.map(datetime.isoformat) | st.text(max_size=40) | st.integers(),
     "text": hostile_text | st.integers() | st.none()},
    optional={"url": st.text(max_size=50) | st.none(), "author": st.text(max_size=50), "language": st.text(max_size=20),
              "extra": json_values}))
def test_posts_with_wrong_types_odd_text_and_any_timestamp(message: dict[str, Any]) -> None:
    check([raw(json.dumps(message).encode())])


@FUZZ
@given(st.fixed_dictionaries({"id": st.text(min_size=1, max_size=20), "source": st.text(min_size=1, max_size=20),
                              "published_at": timestamps.map(datetime.isoformat), "title": hostile_text,
                              "body": hostile_text}))
def test_articles_with_odd_text_and_any_timestamp(message: dict[str, Any]) -> None:
    check([raw(json.dumps(message).encode(), "news")])


def corpus(source: str = "s", now: datetime = NOW) -> list[tuple[str, bytes | None, str]]:
    """(name, value, kind): hostile inputs named in the issue, and their cousins, all from `source`.

    `now` is the clock that will judge them: the "tomorrow" record is a day after it."""
    good = {"id": "c", "source": source, "published_at": "2026-11-22T11:00:00Z", "text": "$AAPL falls"}
    src = source.encode()

    ids = iter(range(1000))

    def post(**changes: Any) -> bytes:  # each with its own id: a batch keeps the first of a repeated key
        return json.dumps({**good, "id": f"c{next(ids)}", **changes}).encode()

    return [
        ("invalid json", b"{\"id\": 1,,}", "social"),
        ("truncated json", post()[:-5], "social"),
        ("invalid utf-8", b"\xc3\x28\xa0\xa1", "social"),
        ("utf-8 inside a string broken",
         b'{"id":"c","source":"' + src + b'","published_at":"2026-11-22T11:00:00Z","text":"\xff"}', "social"),
        ("byte order mark", b"\xef\xbb\xbf" + post(), "social"),
        ("null record", None, "social"),
        ("empty record", b"", "social"),
        ("json null", b"null", "social"),
        ("json array", b"[1,2,3]", "social"),
        ("10 MB text", post(text="x" * 10_000_000), "social"),
        ("10 MB article body", json.dumps({"id": "a", "source": source, "published_at": "2026-11-22T11:00:00Z",
                                           "title": "t", "body": "y" * 10_000_000}).encode(), "news"),
        ("deeply nested json", b"[" * 100_000 + b"]" * 100_000, "social"),
        ("deeply nested field", post(text=None)[:-1] + b', "extra": ' + b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000 + b"}",
         "social"),
        ("NaN literal", post()[:-1] + b', "x": NaN}', "social"),
        ("huge integer id", post(id=10 ** 400), "social"),
        ("duplicate keys",
         b'{"id":"c","id":"d","source":"' + src + b'","published_at":"2026-11-22T11:00:00Z","text":"ok"}', "social"),
        ("control characters", post(text="\x07 $AAPL \x1b[31m bell and escape"), "social"),
        ("NUL character", post(text="$AAPL \x00 falls"), "social"),
        ("only zero-width", post(text="\u200b\u200d\ufeff"), "social"),
        ("right-to-left override", post(text="\u202edaolnwod $AAPL"), "social"),
        ("other scripts", post(text="株価が急落 $SONY Акции упали"), "social"),
        ("emoji", post(text="📉📉📉 $TSLA"), "social"),
        ("year 1", post(published_at="0001-01-01T00:00:00Z"), "social"),
        ("year 9999", post(published_at="9999-12-31T23:59:59Z"), "social"),
        ("naive timestamp", post(published_at="2026-11-22T11:00:00"), "social"),
        ("epoch number", post(published_at=1763800000), "social"),
        ("tomorrow", post(published_at=(now + timedelta(days=1)).isoformat()), "social"),
        ("offset +14", post(published_at="2026-11-23T01:00:00+14:00"), "social"),
        ("wrong kind of message", post(), "news"),
        ("missing fields", b'{"id":"c"}', "social"),
        ("wrong types", post(source=["a"], text={"t": 1}), "social"),
    ]


def test_hostile_corpus_each_accepted_or_dead_lettered_with_its_reason() -> None:
    items = corpus()
    accepted, dead = decode([raw(value, kind) for _, value, kind in items], NOW)
    TRIED["count"] += len(items)
    assert len(accepted) + len(dead) == len(items)
    kept = {a.message.text for a in accepted}
    # Readable text in any script, with control characters or emoji, and odd but valid times, is kept.
    assert "\x07 $AAPL \x1b[31m bell and escape" in kept and "\u202edaolnwod $AAPL" in kept
    assert any("株価" in t for t in kept) and any("TSLA" in t for t in kept)
    reasons = " | ".join(d.reason for d in dead)
    for expected in ("Invalid JSON", "contains a NUL character", "at most 20000 characters", "has no letter or digit", "in the future",
                     "is before 1980", "Extra inputs are not permitted", "Field required"):
        assert expected in reasons, expected
    assert all(len(d.reason) <= 1000 and "xxxxxxxxxx" not in d.reason for d in dead)  # reasons never quote input
    print(json.dumps({"fuzz_inputs_tried": TRIED["count"], "corpus": len(items), "corpus_dead_lettered": len(dead)}))
