"""Fuzz run, part 1: generated and mutated records through decode and every pure stage after it.

At least 100,000 records (FUZZ_RECORDS, default 120,000; FUZZ_SEED picks the run), in micro-batches of
500, through decode -> tokenise (the fast path, compared with the `tokenizers` library on every accepted
text) -> score (the zero-cost model: the real tokeniser, sorting and padding) -> columns -> the sink's
first-of-each-key and COPY records -> trend deltas. Nothing may raise; each record's fate alone equals its
fate in its batch; good records are accepted under their key, bad ones dead-lettered with a reason that
does not quote their text. A failure names the seed and the record; `pytest -m fuzz` runs it.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from config.settings import DEFAULT_MODEL_DIR
from models.classifier import ZeroCostClassifier
from models.text import normalize_text
from schemas.messages import RawMessage
from tests.fuzz.records import Generator, Record
from workers.ingest.sink import first_of_each_key, sorted_records
from workers.pipeline.stages import EARLIEST, decode, encode, score, to_columns, trend_deltas

pytestmark = pytest.mark.fuzz

RECORDS = int(os.environ.get("FUZZ_RECORDS", "120000"))
SEED = int(os.environ.get("FUZZ_SEED", "25"))
BATCH = 500


def fate(raw: RawMessage, now: datetime) -> tuple[str, str]:
    """("accepted", key) or ("dead", reason) of one record decoded alone."""
    accepted, dead = decode([raw], now)
    return ("accepted", accepted[0].key) if accepted else ("dead", dead[0].reason)


def text_of(value: bytes | None) -> str:
    """The longest text field of a record that parses, for the check that reasons never quote it."""
    try:
        document = json.loads(value or b"")
    except (ValueError, RecursionError):
        return ""
    if not isinstance(document, dict):
        return ""
    return max((v for v in document.values() if isinstance(v, str)), key=len, default="")


def check_batch(records: list[Record], offset: int, now: datetime, scorer: ZeroCostClassifier,
                tally: Counter[str]) -> None:
    raws = [RawMessage(r.kind, r.value, f"fuzz-{r.kind}", 0, offset + i)  # type: ignore[arg-type]
            for i, r in enumerate(records)]
    accepted, dead = decode(raws, now)
    alone = [fate(raw, now) for raw in raws]

    # The batch decides as each record alone does; later copies of a key in the batch are dropped.
    expected_accepted, expected_dead, seen = [], [], set()
    for raw, (verdict, detail) in zip(raws, alone):
        if verdict == "dead":
            expected_dead.append((raw.offset, detail))
        elif detail not in seen:
            seen.add(detail)
            expected_accepted.append((raw.offset, detail))
    assert [(a.raw.offset, a.key) for a in accepted] == expected_accepted
    assert [(d.raw.offset, d.reason) for d in dead] == expected_dead

    for record, raw, (verdict, detail) in zip(records, raws, alone):
        tally[f"{record.family}:{verdict}"] += 1
        if record.family == "good":
            assert (verdict, detail) == ("accepted", record.key), (record, detail)
        elif record.family == "bad":
            assert verdict == "dead", (record.defect, record.value[:300] if record.value else record.value)
        if verdict == "dead":
            assert detail and len(detail) <= 1000
            text = text_of(raw.value)
            assert len(text) < 40 or text[:40] not in detail, "a reason quotes the input"
    for letter in dead:
        assert letter.stage in {"decode", "validate"}

    # Every later stage on what was accepted: tokenise (checked against the library), score, columns,
    # the sink's rows, trend deltas.
    encoded = encode(accepted, scorer)
    library = scorer.tokenizer.library_encode([normalize_text(a.message.text) for a in accepted])
    assert encoded.ids == library, "the tokenizer's fast path differs from the library"
    assert all(0 < len(ids) <= scorer.meta.max_length for ids in encoded.ids)
    scored, scores, failed = score(accepted, encoded, scorer)
    assert not failed and len(scored) == len(accepted)
    columns = to_columns(scored, scores)
    assert len(columns) == len(accepted)
    parts = first_of_each_key([columns], 60)
    records_out = sorted_records(parts)
    assert len(records_out) == len(accepted)
    for row in records_out:  # what COPY would send: nothing Postgres refuses
        assert not any(isinstance(v, str) and "\x00" in v for v in row)
    earliest_us = int((EARLIEST - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds() * 1_000_000)
    assert all(us >= earliest_us for us in columns.published_us)
    deltas = trend_deltas(parts)
    counted = sum(n for d, n in zip(deltas.dimension, deltas.n_messages) if d == "topic")
    assert counted == len(accepted)
    tally["tokenised"] += len(accepted)


def test_fuzz_decode_and_the_pure_stages(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    generator = Generator(SEED, now, f"fz{SEED}")
    scorer = ZeroCostClassifier(DEFAULT_MODEL_DIR)
    tally: Counter[str] = Counter()
    crashes: list[dict[str, Any]] = []
    started = time.monotonic()
    batch: list[Record] = []
    done = 0
    for record in generator.records(RECORDS):
        batch.append(record)
        if len(batch) == BATCH or done + len(batch) == RECORDS:
            try:
                check_batch(batch, done, now, scorer, tally)
            except AssertionError:
                _keep(tmp_path, batch, done)
                raise
            except Exception as err:  # noqa: BLE001 - a crash: counted, kept for reproduction, reported below
                crashes.append({"first_record": done, "error": f"{err.__class__.__name__}: {err}"[:500],
                                "file": str(_keep(tmp_path, batch, done))})
            done += len(batch)
            batch = []
    seconds = time.monotonic() - started
    figures = {"fuzz": "stages", "seed": SEED, "records": done, "crashes": len(crashes),
               "seconds": round(seconds, 1), **dict(sorted(tally.items()))}
    print(json.dumps(figures))
    assert done >= RECORDS and not crashes, crashes[:3]


def _keep(folder: Path, batch: list[Record], first: int) -> Path:
    """The batch's records as JSON lines (bytes as hex), to replay a failure."""
    path = folder / f"fuzz-batch-{first}.jsonl"
    with open(path, "w") as out:
        for record in batch:
            out.write(json.dumps({"kind": record.kind, "family": record.family, "defect": record.defect,
                                  "value_hex": None if record.value is None else record.value.hex()}) + "\n")
    return path
