"""Storage lifecycle against the real Postgres: day partitions made ahead and on demand (also by two
writers at once), retention dropping exactly the expired days, texts before their messages, and minute
windows deleted while the roll-ups keep their counts. Every time is injected; nothing reads the clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text

from config.settings import Horizons
from schemas.errors import RetryableError
from tests.integration.helpers import columns_for, scalar
from workers.ingest.sink import PostgresSink, write_batches
from workers.lifecycle.retention import apply_retention
from workers.services.db import make_engine

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
D1 = datetime(2030, 1, 1, 10, 0, tzinfo=timezone.utc)  # three days of messages: D1, D1 + 1 day, D1 + 2 days
KEEP = Horizons()  # the sink stores everything; the tests' retention runs choose their own horizons


@pytest.fixture
def own_engine(own_database_url: str) -> Iterator[Engine]:
    eng = make_engine(own_database_url)
    yield eng
    eng.dispose()


def partitions_of(engine: Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                        "WHERE i.inhparent = CAST(:t AS regclass)"), {"t": table}).scalars())


def per_day(engine: Engine, table: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {str(day): int(n) for day, n in conn.execute(text(
            f"SELECT (published_at AT TIME ZONE 'UTC')::date, count(*) FROM {table} GROUP BY 1"))}


def trend_totals(engine: Engine) -> dict[str, int]:
    return {table: int(scalar(engine, f"SELECT coalesce(sum(n_messages), 0) FROM {table} WHERE dimension = 'topic'"))
            for table in ("trend_windows", "trend_hourly", "trend_daily")}


def test_partitions_are_created_ahead_and_on_demand(own_engine, classifier, unique):  # type: ignore[no-untyped-def]
    now = datetime(2030, 3, 10, 12, 0, tzinfo=timezone.utc)
    run = apply_retention(own_engine, KEEP, now, days_ahead=3)
    expected = [f"{t}_p203003{d}" for t in ("classified_messages", "message_texts") for d in (10, 11, 12, 13)]
    assert sorted(run.created) == expected and run.dropped == []
    assert partitions_of(own_engine, "classified_messages") == expected[:4]
    assert apply_retention(own_engine, KEEP, now, days_ahead=3).created == []  # made once

    # A batch for a day without partitions: the sink makes them in its transaction.
    columns = columns_for(classifier, unique, 20, step_s=60, base=datetime(2030, 4, 1, 23, 50, tzinfo=timezone.utc))
    assert write_batches(own_engine, [columns], 60, horizons=KEEP).stored == 20
    assert {"classified_messages_p20300401", "classified_messages_p20300402"} <= set(
        partitions_of(own_engine, "classified_messages"))
    assert per_day(own_engine, "message_texts") == {"2030-04-01": 10, "2030-04-02": 10}


def test_two_writers_that_need_the_same_new_day_create_it_once(own_engine, classifier, unique):  # type: ignore[no-untyped-def]
    base = datetime(2030, 5, 5, 8, 0, tzinfo=timezone.utc)
    batches = [columns_for(classifier, f"{unique}-{w}", 30, step_s=10, base=base) for w in range(2)]
    barrier = threading.Barrier(2)
    stored = [0, 0]
    errors: list[BaseException] = []

    def write(index: int) -> None:
        sink = PostgresSink(own_engine, 60, f"s-{unique}", KEEP)
        try:
            sink.connect()
            sink.add(batches[index])
            barrier.wait()
            while True:
                try:
                    stored[index] = sink.flush()
                    return
                except RetryableError:  # a deadlock between the two is retried, as the worker does
                    continue
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
        finally:
            sink.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and stored == [30, 30]
    assert partitions_of(own_engine, "classified_messages") == ["classified_messages_p20300505"]
    assert per_day(own_engine, "classified_messages") == {"2030-05-05": 60}


def test_retention_drops_each_expired_day_and_nothing_else(own_engine, classifier, unique):  # type: ignore[no-untyped-def]
    for day in range(3):  # 3 days x 24 messages, an hour apart
        columns = columns_for(classifier, f"{unique}-{day}", 24, step_s=3600, base=D1.replace(hour=0) + day * DAY)
        assert write_batches(own_engine, [columns], 60, horizons=KEEP).stored == 24
    texts_before, trends_before = per_day(own_engine, "message_texts"), trend_totals(own_engine)
    assert per_day(own_engine, "classified_messages") == texts_before == \
        {"2030-01-01": 24, "2030-01-02": 24, "2030-01-03": 24}
    assert trends_before == {"trend_windows": 72, "trend_hourly": 72, "trend_daily": 72}

    # Texts kept 1 day, messages 2: at 2030-01-04 00:00 the texts of the 1st are past 1 day plus the margin.
    run = apply_retention(own_engine, Horizons(messages_days=2, texts_days=1), datetime(2030, 1, 4, tzinfo=timezone.utc),
                          days_ahead=-1)
    assert run.dropped == ["message_texts_p20300101"] and run.created == []
    assert per_day(own_engine, "message_texts") == {"2030-01-02": 24, "2030-01-03": 24}
    assert per_day(own_engine, "classified_messages") == {"2030-01-01": 24, "2030-01-02": 24, "2030-01-03": 24}
    # A day later the 1st's messages go, and the 2nd's texts; the 3rd is untouched; trends stay.
    run = apply_retention(own_engine, Horizons(messages_days=2, texts_days=1), datetime(2030, 1, 5, tzinfo=timezone.utc),
                          days_ahead=-1)
    assert sorted(run.dropped) == ["classified_messages_p20300101", "message_texts_p20300102"]
    assert per_day(own_engine, "classified_messages") == {"2030-01-02": 24, "2030-01-03": 24}
    assert per_day(own_engine, "message_texts") == {"2030-01-03": 24}
    assert partitions_of(own_engine, "classified_messages") == ["classified_messages_p20300102",
                                                               "classified_messages_p20300103"]
    assert trend_totals(own_engine) == trends_before
    # The dropped day is gone from the table as a whole, not hidden: no dead rows left behind.
    assert scalar(own_engine, "SELECT count(*) FROM pg_class WHERE relname = 'classified_messages_p20300101'") == 0


def test_minute_windows_past_their_horizon_are_deleted_and_the_rollups_keep_them(own_engine, classifier, unique):  # type: ignore[no-untyped-def]
    for day in range(3):
        columns = columns_for(classifier, f"{unique}-{day}", 24, step_s=3600, base=D1.replace(hour=0) + day * DAY)
        write_batches(own_engine, [columns], 60, horizons=KEEP)
    cutoff = datetime(2030, 1, 2, 12, tzinfo=timezone.utc)
    older = scalar(own_engine, "SELECT count(*) FROM trend_windows WHERE window_start < :c", c=cutoff)
    run = apply_retention(own_engine, Horizons(minute_windows_days=1), datetime(2030, 1, 3, 12, tzinfo=timezone.utc),
                          days_ahead=-1)
    assert run.dropped == []
    # Older than 2030-01-02 12:00: the 1st's 24 hours and the 2nd's first 12.
    assert run.minute_windows_deleted == older > 0
    assert trend_totals(own_engine) == {"trend_windows": 36, "trend_hourly": 72, "trend_daily": 72}
    assert scalar(own_engine, "SELECT min(window_start) FROM trend_windows") == cutoff
