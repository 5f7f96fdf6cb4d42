"""The COPY sink against the real Postgres: trend deltas from what was inserted, replays, two writers,
an outage, and the stored trends equal to the pure reference `aggregate` of the rows stored."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text

from config.settings import Horizons
from schemas.errors import RetryableError
from tests.integration.helpers import columns_for, scalar
from workers.ingest.sink import PostgresSink, write_batch
from workers.pipeline import stages
from workers.services.db import make_engine

pytestmark = pytest.mark.integration


def trends(engine: Engine, series: str) -> dict[tuple[str, str, datetime], tuple[int, int, int, int, float]]:
    with engine.connect() as conn:
        return {(r.dimension, r.key, r.window_start): (r.n_messages, r.n_negative, r.n_neutral, r.n_positive,
                                                       round(r.sum_score, 4))
                for r in conn.execute(text("SELECT * FROM trend_windows WHERE series = :s"), {"s": series})}


def stored_reference(engine: Engine, prefix: str) -> dict[tuple[str, str, datetime], tuple[int, int, int, int, float]]:
    """The reference deltas of the rows actually stored (whichever writer stored each)."""
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text(
            "SELECT topic, source, tickers, sentiment, sentiment_score, window_start FROM classified_messages "
            "WHERE external_id LIKE :p"), {"p": f"{prefix}-%"})]
    return {k: (d.n_messages, d.n_negative, d.n_neutral, d.n_positive, round(d.sum_score, 4))
            for k, d in stages.aggregate(rows).items()}


def reference(columns: stages.Columns) -> dict[tuple[str, str, datetime], tuple[int, int, int, int, float]]:
    rows = [{"topic": columns.topic[i], "source": columns.source[i], "tickers": columns.tickers[i],
             "sentiment": columns.sentiment[i], "sentiment_score": float(columns.sentiment_score[i]),
             "window_start": stages.window_start(stages.utc_from_micros(columns.published_us[i]), 60)} for i in range(len(columns))]
    return {k: (d.n_messages, d.n_negative, d.n_neutral, d.n_positive, round(d.sum_score, 4))
            for k, d in stages.aggregate(rows).items()}


def test_sql_trend_deltas_equal_the_reference_and_a_replay_changes_nothing(engine, classifier, unique):  # type: ignore[no-untyped-def]
    series = f"sink-{unique}"
    columns = columns_for(classifier, unique, 40)
    assert write_batch(engine, [columns], 60, series) == 40
    expected = reference(columns)
    assert trends(engine, series) == expected
    assert any(dim == "ticker" for dim, _, _ in expected) and len({w for _, _, w in expected}) == 3
    stored = scalar(engine, "SELECT count(*) FROM classified_messages WHERE external_id LIKE :p", p=f"{unique}-%")
    assert stored == 40

    # The same batch again, and a batch half old and half new: only the new half counts.
    assert write_batch(engine, [columns], 60, series) == 0
    overlap = columns_for(classifier, unique, 40, start=20)
    assert write_batch(engine, [overlap], 60, series) == 20
    expected = stored_reference(engine, unique)
    assert sum(v[0] for (dim, _, _), v in expected.items() if dim == "topic") == 60
    assert trends(engine, series) == expected


def test_a_key_repeated_within_one_flush_is_counted_once(engine, classifier, unique):  # type: ignore[no-untyped-def]
    series = f"sink-{unique}"
    columns = columns_for(classifier, unique, 10)
    sink = PostgresSink(engine, 60, series)
    sink.add(columns)
    sink.add(columns)
    assert sink.flush() == 10
    assert sum(v[0] for (dim, _, _), v in trends(engine, series).items() if dim == "topic") == 10


def test_two_writers_on_the_same_windows_add_up_exactly_once(engine, classifier, unique):  # type: ignore[no-untyped-def]
    series = f"sink-{unique}"
    # Two writers, each with many small batches, overlapping on half of the keys and on every window.
    first = [columns_for(classifier, unique, 20, start=s, step_s=0.6) for s in range(0, 140, 20)]
    second = [columns_for(classifier, unique, 20, start=s, step_s=0.6) for s in range(60, 200, 20)]
    inserted = [0, 0]
    errors: list[BaseException] = []

    def write(index: int, batches: list[stages.Columns]) -> None:
        sink = PostgresSink(engine, 60, series)
        try:
            for batch in batches:
                sink.add(batch)
                while True:
                    try:
                        inserted[index] += sink.flush()
                        break
                    except RetryableError:  # a deadlock between the writers is retried, as the worker does
                        continue
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i, b)) for i, b in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(inserted) == 200
    # Every stored message counted once. A model's scores can vary a little with the batch it is in (int8's
    # do), so the reference is built from the rows as stored.
    expected = stored_reference(engine, unique)
    assert sum(v[0] for (dim, _, _), v in expected.items() if dim == "topic") == 200
    assert trends(engine, series) == expected


def test_a_database_that_is_down_raises_retryable_and_keeps_the_rows(classifier, unique, database_url):  # type: ignore[no-untyped-def]
    from sqlalchemy import make_url

    dead = make_engine(make_url(database_url).set(port=1).render_as_string(hide_password=False))
    sink = PostgresSink(dead, 60, f"sink-{unique}")
    sink.add(columns_for(classifier, unique, 5))
    with pytest.raises(RetryableError):
        sink.flush()
    dead.dispose()
    sink.engine = make_engine(database_url)  # the database is back
    assert sink.flush() == 5
    sink.engine.dispose()


def test_a_backfill_counts_its_series_once_and_leaves_the_messages(engine, classifier, unique):  # type: ignore[no-untyped-def]
    series = f"bf-{unique}"
    columns = columns_for(classifier, unique, 30)
    assert write_batch(engine, [columns], 60, series, store_messages=False) == 30
    assert write_batch(engine, [columns, columns], 60, series, store_messages=False) == 0
    assert trends(engine, series) == reference(columns)
    assert scalar(engine, "SELECT count(*) FROM classified_messages WHERE external_id LIKE :p", p=f"{unique}-%") == 0


def test_a_write_returns_the_trend_windows_it_added_to_and_a_replay_none(engine, classifier, unique):  # type: ignore[no-untyped-def]
    from workers.ingest.sink import write_batches

    series = f"sink-{unique}"
    columns = columns_for(classifier, unique, 30)
    written = write_batches(engine, [columns], 60, series)
    assert written.stored == 30 and not written.seen_before
    assert sorted((t.dimension, t.key, t.window_start) for t in written.touched) == sorted(reference(columns))
    again = write_batches(engine, [columns], 60, series)
    assert (again.stored, again.touched, again.seen_before) == (0, [], True)  # the detector needs no news


def test_the_direct_copy_stores_exact_times_and_a_replay_takes_the_staging_path(engine, classifier, unique):  # type: ignore[no-untyped-def]
    """Fresh messages go straight in by COPY; a batch with stored messages falls back to the staging
    table and counts only its new ones; the sink then stays on that path until a batch is all new."""
    from workers.ingest.sink import write_batches

    series = f"sink-{unique}"
    first = columns_for(classifier, unique, 10, step_s=7.25)
    written = write_batches(engine, [first], 60, series)
    assert (written.stored, written.seen_before) == (10, False)
    with engine.connect() as conn:
        stored = {r.message_key: (r.published_at, r.window_start) for r in conn.execute(text(
            "SELECT message_key, published_at, window_start FROM classified_messages WHERE external_id LIKE :p"),
            {"p": f"{unique}-%"})}
    assert stored == {k: (ts, stages.window_start(ts, 60)) for k, ts in zip(first.message_key, map(stages.utc_from_micros, first.published_us))}

    sink = PostgresSink(engine, 60, series)
    sink.add(columns_for(classifier, unique, 10, start=5, step_s=7.25))  # half stored already
    assert sink.flush() == 5 and sink.replaying
    sink.add(columns_for(classifier, unique, 10, start=15, step_s=7.25))  # all new, through the staging table
    assert sink.flush() == 10 and not sink.replaying
    assert trends(engine, series) == stored_reference(engine, unique)
    assert sum(v[0] for (dim, _, _), v in trends(engine, series).items() if dim == "topic") == 25


def rollups(engine: Engine, series: str) -> dict[str, dict[tuple[str, str, datetime], tuple[float, ...]]]:
    """Each resolution as stored, and the hours and days recomputed from the minute windows."""
    counts = "n_messages, n_negative, n_neutral, n_positive, round(sum_score::numeric, 6)::float8"
    sums = "sum(n_messages), sum(n_negative), sum(n_neutral), sum(n_positive), round(sum(sum_score)::numeric, 6)::float8"
    queries = {
        "hourly": f"SELECT dimension, key, window_start, {counts} FROM trend_hourly WHERE series = :s",
        "daily": f"SELECT dimension, key, window_start, {counts} FROM trend_daily WHERE series = :s",
        "minutes by hour": f"SELECT dimension, key, date_trunc('hour', window_start AT TIME ZONE 'UTC') AT TIME ZONE "
                           f"'UTC', {sums} FROM trend_windows WHERE series = :s GROUP BY 1, 2, 3",
        "minutes by day": f"SELECT dimension, key, date_trunc('day', window_start AT TIME ZONE 'UTC') AT TIME ZONE "
                          f"'UTC', {sums} FROM trend_windows WHERE series = :s GROUP BY 1, 2, 3",
    }
    with engine.connect() as conn:
        return {name: {(r[0], r[1], r[2]): tuple(float(v) for v in r[3:]) for r in conn.execute(text(sql), {"s": series})}
                for name, sql in queries.items()}


def test_rollups_equal_the_sum_of_their_minutes_after_late_data_and_a_replay(engine, classifier, unique):  # type: ignore[no-untyped-def]
    series = f"rollup-{unique}"
    base = datetime(2026, 2, 2, 23, 40, tzinfo=timezone.utc)  # the batches span two hours and midnight
    first = columns_for(classifier, unique, 60, step_s=30, base=base)  # 23:40 .. 00:09:30
    assert write_batch(engine, [first], 60, series) == 60
    late_base = base - timedelta(hours=2)
    late = columns_for(classifier, f"{unique}-late", 40, step_s=60, base=late_base)  # 21:40 .. 22:19
    assert write_batch(engine, [late], 60, series) == 40
    # A replay of both, and a batch half replayed and half new, late again.
    assert write_batch(engine, [first, late], 60, series) == 0
    mixed = columns_for(classifier, f"{unique}-late", 40, start=20, step_s=60, base=late_base)  # 22:00 .. 22:39
    assert write_batch(engine, [mixed], 60, series) == 20
    stored = rollups(engine, series)
    assert stored["hourly"] == stored["minutes by hour"]
    assert stored["daily"] == stored["minutes by day"]
    assert {w.hour for (_, _, w) in stored["hourly"]} == {21, 22, 23, 0}
    assert {w.day for (_, _, w) in stored["daily"]} == {2, 3}
    assert sum(v[0] for (d, _, _), v in stored["daily"].items() if d == "topic") == 120  # each message once


def test_a_message_past_the_minute_horizon_is_counted_in_the_rollups_only(engine, classifier, unique):  # type: ignore[no-untyped-def]
    from workers.ingest.sink import write_batches

    series = f"rollup-{unique}"
    base = datetime(2026, 3, 3, 10, 0, tzinfo=timezone.utc)
    now = base + timedelta(days=2, hours=12)  # the minute horizon (2 days) ends at 22:00 on the 3rd
    horizons = Horizons(minute_windows_days=2)
    old = columns_for(classifier, unique, 10, step_s=60, base=base)
    written = write_batches(engine, [old], 60, series, horizons=horizons, now=now)
    assert written.stored == 10 and written.touched == []  # no minute window: nothing for the detector
    stored = rollups(engine, series)
    assert stored["minutes by hour"] == {}
    assert sum(v[0] for (d, _, _), v in stored["hourly"].items() if d == "topic") == 10
    assert sum(v[0] for (d, _, _), v in stored["daily"].items() if d == "topic") == 10
    recent = columns_for(classifier, unique, 10, start=10, step_s=60, base=now - timedelta(hours=1))
    assert len(write_batches(engine, [recent], 60, series, horizons=horizons, now=now).touched) > 0
    assert sum(v[0] for (d, _, _), v in rollups(engine, series)["minutes by hour"].items() if d == "topic") == 10
