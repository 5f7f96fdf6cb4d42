"""The worker against the real broker and Postgres: storage, trends, dead letters, replay, commit order."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from tests.integration.helpers import (
    RunningWorker,
    committed_offsets,
    posts,
    read_topic,
    scalar,
    send,
    setup_topics,
    wait_for,
)
from workers.pipeline import stages

pytestmark = pytest.mark.integration


def count_rows(engine, prefix: str) -> int:  # type: ignore[no-untyped-def]
    return int(scalar(engine, "SELECT count(*) FROM classified_messages WHERE message_key LIKE :p", p=f"test-social:{prefix}-%"))


def topic_total(engine, series: str) -> int:  # type: ignore[no-untyped-def]
    return int(scalar(engine, "SELECT coalesce(sum(n_messages), 0) FROM trend_windows "
                              "WHERE series = :s AND dimension = 'topic'", s=series))


def test_messages_are_classified_counted_and_bad_ones_dead_lettered(broker, engine, classifier, settings, unique):  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"message_retention_days": 7})
    setup_topics(broker.bootstrap, settings)
    good = posts(24, unique)
    too_old = posts(1, f"{unique}-old", minutes_ago=8 * 24 * 60)[0]  # past the 7-day message horizon
    bad = [b"{broken json", json.dumps({"id": "x", "source": "s"}).encode(), b"\xff\xfe", json.dumps(too_old).encode()]
    send(broker.bootstrap, settings.social_topic, [*good[:12], *bad, *good[12:]])

    with RunningWorker(settings, classifier, engine, broker.bootstrap) as running:
        wait_for(lambda: running.worker.stats.consumed == 28, what="28 records consumed")

    assert count_rows(engine, unique) == 24
    assert topic_total(engine, settings.trend_series) == 24
    assert int(scalar(engine, "SELECT coalesce(sum(n_messages), 0) FROM trend_windows WHERE series = :s "
                              "AND dimension = 'source' AND key = 'test-social'", s=settings.trend_series)) == 24
    tickers = scalar(engine, "SELECT sum(n_messages) FROM trend_windows WHERE series = :s AND dimension = 'ticker' "
                             "AND key = 'AAPL'", s=settings.trend_series)
    assert int(tickers) == 4  # posts 0, 6, 12, 18 mention $AAPL

    row = None
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM classified_messages WHERE message_key = :k"),
                           {"k": f"test-social:{unique}-0"}).mappings().one()
    assert row["tickers"] == ["AAPL"]
    assert abs(row["p_negative"] + row["p_neutral"] + row["p_positive"] - 1) < 1e-4
    assert abs(row["sentiment_score"] - (row["p_positive"] - row["p_negative"])) < 1e-4
    assert row["model_version"] == classifier.version

    letters = read_topic(broker.bootstrap, settings.dead_letter_topic, f"dlq-reader-{unique}", expected=4)
    reasons = sorted(json.loads(m.value())["reason"] for m in letters)
    assert len(reasons) == 4
    assert any("Invalid JSON" in r or "json" in r.lower() for r in reasons)
    assert any("published_at" in r for r in reasons)
    assert any("older than the message retention horizon (7 days)" in r for r in reasons)

    # Offsets are committed past everything, so the group resumes after the last record.
    offsets = committed_offsets(broker.bootstrap, settings.consumer_group)
    assert sum(offsets.values()) == 28


def test_replaying_the_same_messages_changes_no_count(broker, engine, classifier, settings, unique):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    messages = posts(20, unique)
    send(broker.bootstrap, settings.social_topic, messages)
    with RunningWorker(settings, classifier, engine, broker.bootstrap) as running:
        wait_for(lambda: running.worker.stats.consumed == 20, what="first pass")
    assert topic_total(engine, settings.trend_series) == 20

    # Replay: the same messages again, plus a second group re-reading the topic from the start.
    send(broker.bootstrap, settings.social_topic, messages)
    with RunningWorker(settings, classifier, engine, broker.bootstrap, group=f"replay-{unique}") as running:
        wait_for(lambda: running.worker.stats.consumed == 40, what="replay from the start")
        assert running.worker.stats.stored == 0
        assert running.worker.stats.duplicates == 40
    assert count_rows(engine, unique) == 20
    assert topic_total(engine, settings.trend_series) == 20


def test_offsets_are_committed_only_after_the_database_transaction(broker, engine, classifier, settings, unique):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    send(broker.bootstrap, settings.social_topic, posts(10, unique))

    # Hold a lock that blocks the worker's insert, as a slow or stuck database would.
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        with engine.begin() as conn:
            conn.execute(text("LOCK TABLE classified_messages IN EXCLUSIVE MODE"))
            locked.set()
            release.wait(60)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(10)
    try:
        with RunningWorker(settings, classifier, engine, broker.bootstrap) as running:
            wait_for(lambda: int(scalar(engine, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                                "AND (query LIKE 'COPY classified_messages%' "
                                                "OR query LIKE '%INSERT INTO classified_messages%')")) >= 1,
                     what="the worker's write to wait on the lock")
            assert committed_offsets(broker.bootstrap, settings.consumer_group) == {}
            assert count_rows(engine, unique) == 0
            release.set()
            wait_for(lambda: running.worker.stats.consumed == 10, what="batch to finish")
        assert count_rows(engine, unique) == 10
        assert sum(committed_offsets(broker.bootstrap, settings.consumer_group).values()) == 10
    finally:
        release.set()
        holder.join()


def test_two_workers_in_one_group_add_up_in_the_same_windows(broker, engine, classifier, settings, unique):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    messages = posts(120, unique, minutes_ago=5)  # two minutes' windows, spread over both partitions
    send(broker.bootstrap, settings.social_topic, messages)
    with RunningWorker(settings, classifier, engine, broker.bootstrap) as first, \
            RunningWorker(settings, classifier, engine, broker.bootstrap) as second:
        wait_for(lambda: first.worker.stats.consumed + second.worker.stats.consumed >= 120, timeout_s=120,
                 what="both workers to drain the topic")
    assert count_rows(engine, unique) == 120
    assert topic_total(engine, settings.trend_series) == 120


def test_late_messages_still_count_in_their_own_window(broker, engine, classifier, settings, unique):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    send(broker.bootstrap, settings.social_topic, posts(5, f"{unique}-now", minutes_ago=1))
    late = posts(3, f"{unique}-late", minutes_ago=180)  # three hours late
    send(broker.bootstrap, settings.social_topic, late)
    with RunningWorker(settings, classifier, engine, broker.bootstrap) as running:
        wait_for(lambda: running.worker.stats.consumed == 8, what="all 8 records")
    old = scalar(engine, "SELECT sum(n_messages) FROM trend_windows WHERE series = :s AND dimension = 'topic' "
                         "AND window_start < now() - interval '2 hours'", s=settings.trend_series)
    assert int(old) == 3


class SlowScorer:
    """The real classifier with a slow device, so that several batches are in flight at once."""

    def __init__(self, classifier, delay_s: float) -> None:  # type: ignore[no-untyped-def]
        self.classifier, self.delay_s, self.version = classifier, delay_s, classifier.version

    def encode(self, texts, words_to=None):  # type: ignore[no-untyped-def]
        return self.classifier.encode(texts, words_to)

    def score_encoded(self, encoded):  # type: ignore[no-untyped-def]
        time.sleep(self.delay_s)
        return self.classifier.score_encoded(encoded)


def test_overlapped_batches_commit_offsets_in_order_and_only_once_durable(broker, engine, classifier, settings,
                                                                          unique):  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"micro_batch_size": 8, "pipeline_depth": 2})
    setup_topics(broker.bootstrap, settings)
    send(broker.bootstrap, settings.social_topic, posts(96, unique))
    samples: list[tuple[int, int]] = []
    with RunningWorker(settings, SlowScorer(classifier, 0.1), engine, broker.bootstrap) as running:
        while running.worker.stats.consumed < 96 and running.thread.is_alive():
            committed = sum(committed_offsets(broker.bootstrap, settings.consumer_group).values())
            samples.append((committed, count_rows(engine, unique)))  # read after: rows only grow
            time.sleep(0.05)
        overlap = running.worker.stats.max_in_flight
    # Never an offset committed past a batch that was not yet in Postgres.
    assert samples and all(committed <= durable for committed, durable in samples)
    assert any(committed > 0 for committed, _ in samples)  # offsets were committed while running
    assert overlap >= 2  # the stages did overlap
    assert sum(committed_offsets(broker.bootstrap, settings.consumer_group).values()) == 96
    assert count_rows(engine, unique) == 96 and topic_total(engine, settings.trend_series) == 96


def test_committed_batches_tell_the_detector_which_windows_they_touched(broker, engine, classifier, settings,
                                                                        unique):  # type: ignore[no-untyped-def]
    from workers.ingest.kafka_io import key_partition

    setup_topics(broker.bootstrap, settings)
    messages = posts(30, unique, minutes_ago=10)
    for i, m in enumerate(messages):  # seven seconds apart: a batch touches each key in several windows
        m["published_at"] = (datetime.fromisoformat(m["published_at"]) + timedelta(seconds=6 * i)).isoformat()
    send(broker.bootstrap, settings.social_topic, messages)
    with RunningWorker(settings, classifier, engine, broker.bootstrap) as running:
        wait_for(lambda: running.worker.stats.consumed == 30, what="30 records consumed")

    with engine.connect() as conn:
        windows = {(r.dimension, r.key, r.window_start.isoformat()) for r in conn.execute(text(
            "SELECT dimension, key, window_start FROM trend_windows WHERE series = :s AND dimension IN ('topic', "
            "'ticker')"), {"s": settings.trend_series})}
        progress = conn.execute(text("SELECT topic, partition, window_start FROM ingest_progress WHERE series = :s"),
                                {"s": settings.trend_series}).all()
        released = conn.execute(text("SELECT DISTINCT updated_at FROM ingest_progress WHERE series = :s AND topic = :t"),
                                {"s": settings.trend_series, "t": settings.news_topic}).scalars().all()
        newest = scalar(engine, "SELECT max(window_start) FROM trend_windows WHERE series = :s",
                        s=settings.trend_series)
    keys = {(dimension, key) for dimension, key, _ in windows}
    records = read_topic(broker.bootstrap, settings.touched_topic, f"touched-{unique}", expected=len(keys),
                         timeout_s=30, settle_s=2)  # at least one event per key; then the rest
    events = [json.loads(m.value()) for m in records]
    # One event per key and batch, naming the key's windows that batch touched (oldest first) and the
    # newest of them; each touched (dimension, key, window) of a watched dimension at least once, on its
    # key's partition.
    assert {(e["dimension"], e["key"], w) for e in events for w in e["windows"]} == windows
    assert any(len(e["windows"]) > 1 for e in events)
    assert all(e["windows"] == sorted(e["windows"]) and e["window_start"] == e["windows"][-1] for e in events)
    assert all(e["series"] == settings.trend_series for e in events)
    assert all(m.partition() == key_partition(m.key().decode(), settings.topic_partitions) for m in records)
    assert all(m.key().decode() == f"{e['dimension']}:{e['key']}" for m, e in zip(records, events))
    # Every assigned input partition has a progress row (from its assignment: the epoch, until a batch);
    # the transactions recorded how far event time got on the partitions that had messages.
    assert {(t, p) for t, p, _ in progress} == {(t, p) for t in settings.input_topics
                                                for p in range(settings.topic_partitions)}
    assert max(w for _, _, w in progress) == newest
    assert {w for t, _, w in progress if t == settings.news_topic} == {stages.EPOCH}  # no news was sent
    assert released == [stages.EPOCH]  # and the news partitions, found empty, hold no window back
