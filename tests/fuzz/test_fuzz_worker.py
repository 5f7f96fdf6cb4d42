"""Fuzz run, part 2: generated and mutated records through a live worker (the embedded broker, a real
Postgres) into the dead-letter topic and the database.

At least 10,000 records (FUZZ_LIVE_RECORDS, default 12,000) from the same generator as part 1, produced
to the news and social topics, consumed by a worker with the shipped model (fp32 on the CPU;
FUZZ_LIVE_MODEL=zero-cost swaps in the zero-cost model: the real tokeniser, sorting and padding, no
forward pass). Then:
- the worker never fails, and consumes every record;
- every record the decoder refuses is on the dead-letter topic once, at its own topic, partition and
  offset, with its stage and the reason the decoder gives it alone;
- every record it accepts is stored, each key once, and counted once in the trends;
- every good record (built valid) is stored, and no bad one is.
A record whose fate depends on the clock (a mutated time that the minutes of the run move across the
"future" limit) is left out of the comparison and counted.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
from confluent_kafka import Producer

from config.settings import DEFAULT_MODEL_DIR
from models.classifier import ZeroCostClassifier
from schemas.messages import RawMessage
from tests.fuzz.records import Generator, Record
from tests.fuzz.test_fuzz_stages import SEED, fate
from tests.integration.helpers import RunningWorker, read_topic, scalar, setup_topics, wait_for
from workers.ingest.kafka_io import producer_config

pytestmark = [pytest.mark.fuzz, pytest.mark.integration]

RECORDS = int(os.environ.get("FUZZ_LIVE_RECORDS", "12000"))
MODEL = os.environ.get("FUZZ_LIVE_MODEL", "shipped")
BROKER_LIMIT = 900_000  # the broker refuses records over 1 MB; part 1 covers larger ones


def produce(bootstrap: str, topics: dict[str, str], records: list[Record]) -> dict[tuple[str, int, int], int]:
    """Each record to its kind's topic; returns (topic, partition, offset) -> record index."""
    producer = Producer({**producer_config(bootstrap), "message.max.bytes": 1_048_576})
    where: dict[tuple[str, int, int], int] = {}
    failures: list[str] = []

    def delivered(index: int) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))
            else:
                where[(msg.topic(), msg.partition(), msg.offset())] = index
        return report

    for i, record in enumerate(records):
        while True:
            try:
                producer.produce(topics[record.kind], value=record.value, on_delivery=delivered(i))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0 and not failures, failures[:3]
    return where


def test_fuzz_records_through_a_live_worker(  # type: ignore[no-untyped-def]
        broker, engine, settings, unique, classifier):
    s = settings.model_copy(update={"micro_batch_size": 500})
    setup_topics(broker.bootstrap, s)
    topics = {"social": s.social_topic, "news": s.news_topic}
    now_start = datetime.now(timezone.utc)
    generated = list(Generator(SEED + 1, now_start, f"fzlive-{unique}").records(RECORDS + RECORDS // 50))
    records = [r for r in generated if r.value is None or len(r.value) <= BROKER_LIMIT][:RECORDS]
    assert len(records) == RECORDS
    started = time.monotonic()  # from the first record produced to the last one consumed
    where = produce(broker.bootstrap, topics, records)
    assert len(where) == RECORDS

    scorer = ZeroCostClassifier(DEFAULT_MODEL_DIR) if MODEL == "zero-cost" else classifier
    with RunningWorker(s, scorer, engine, broker.bootstrap) as running:
        wait_for(lambda: running.worker.stats.consumed >= RECORDS, timeout_s=900, what="every record consumed")
        assert running.thread.is_alive()
        stats = running.worker.stats
    now_end = datetime.now(timezone.utc)
    worker_seconds = time.monotonic() - started

    # What the decoder makes of each record alone, at the run's first and last moment.
    expected_dead: dict[tuple[str, int, int], str] = {}
    expected_keys: set[str] = set()
    clock_dependent: set[tuple[str, int, int]] = set()
    tally: Counter[str] = Counter()
    for coord, index in where.items():
        record = records[index]
        raw = RawMessage(record.kind, record.value, *coord)  # type: ignore[arg-type]
        first, last = fate(raw, now_start), fate(raw, now_end)
        if first != last:
            clock_dependent.add(coord)
            continue
        verdict, detail = first
        tally[f"{record.family}:{verdict}"] += 1
        if verdict == "dead":
            expected_dead[coord] = detail
        else:
            expected_keys.add(detail)
        if record.family == "good":
            assert (verdict, detail) == ("accepted", record.key), record
        elif record.family == "bad":
            assert verdict == "dead", record.defect

    letters = read_topic(broker.bootstrap, s.dead_letter_topic, f"fuzz-dlq-{unique}", expected=len(expected_dead),
                         timeout_s=120, settle_s=3)
    got: dict[tuple[str, int, int], dict[str, Any]] = {}
    for message in letters:
        letter = json.loads(message.value())
        coord = (letter["topic"], letter["partition"], letter["offset"])
        assert coord not in got, f"dead-lettered twice: {coord}"
        got[coord] = letter
    assert set(got) - clock_dependent == set(expected_dead), "dead letters differ from the decoder's verdicts"
    for coord, reason in expected_dead.items():
        assert got[coord]["reason"] == reason and got[coord]["stage"] in {"decode", "validate"}

    stored = {row[0] for row in _rows(engine, "SELECT message_key FROM classified_messages WHERE kafka_topic IN "
                                              "(:social, :news)", social=s.social_topic, news=s.news_topic)}
    clock_keys = {fate(RawMessage(records[where[c]].kind, records[where[c]].value, *c),  # type: ignore[arg-type]
                       now_end)[1] for c in clock_dependent}
    assert stored - clock_keys == expected_keys - clock_keys, "stored keys differ from the accepted ones"
    counted = scalar(engine, "SELECT coalesce(sum(n_messages), 0) FROM trend_windows WHERE series = :s "
                             "AND dimension = 'topic'", s=s.trend_series)
    assert counted == len(stored), "a stored message is counted other than once in the trends"
    assert stats.consumed == RECORDS and stats.dead_lettered == len(got)
    assert stats.stored == len(stored) and stats.duplicates == RECORDS - len(got) - len(stored)

    figures = {"fuzz": "live worker", "seed": SEED + 1, "model": f"{scorer.version} ({scorer.precision})",
               "records": RECORDS, "crashes": 0, "dead_lettered": len(got), "stored": len(stored),
               "duplicates": stats.duplicates,
               "clock_dependent": len(clock_dependent), "seconds": round(worker_seconds, 1),
               **dict(sorted(tally.items()))}
    print(json.dumps(figures))


def _rows(engine: Any, sql: str, **params: Any) -> list[Any]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))
