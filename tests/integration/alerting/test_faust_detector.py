"""`finsentry detector` as a process on the real broker and Postgres: lost and repeated "window touched"
events change no result."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from confluent_kafka import Producer
from sqlalchemy import text

from tests.integration.faults import DetectorProcess
from tests.integration.helpers import T0, insert_windows, scalar, wait_for
from workers.ingest.kafka_io import ensure_topics, key_partition, producer_config
from workers.ingest.processes import detector_env

pytestmark = pytest.mark.integration


def test_lost_and_repeated_touched_events_change_nothing(broker, engine, settings, unique, tmp_path):  # type: ignore[no-untyped-def]
    s = settings.model_copy(update={"spike_dimensions": ["topic"], "spike_warmup_windows": 5,
                                    "allowed_lateness_s": 120, "detect_interval_s": 0.5, "alerts_topic": ""})
    burst = [0.1] * 10 + [0.9] * 4 + [0.1] * 6  # windows 0-19; closed (lateness 2 windows): 0-16
    keys = ["Macro", "Earnings", "Politics", "Energy | Oil"]
    for key in keys:
        insert_windows(engine, s.trend_series, key, burst)
    # Events for the first two keys, each sent three times; none for the others (lost).
    ensure_topics(broker.bootstrap, [s.touched_topic], s.topic_partitions)
    producer = Producer(producer_config(broker.bootstrap))
    for key in keys[:2]:
        for minute in range(len(burst)):
            event = {"series": s.trend_series, "dimension": "topic", "key": key,
                     "window_start": (T0 + timedelta(minutes=minute)).isoformat()}
            for _ in range(3):
                producer.produce(s.touched_topic, json.dumps(event).encode(), key=f"topic:{key}".encode(),
                                 partition=key_partition(f"topic:{key}", s.topic_partitions))
    assert producer.flush(10) == 0

    detector = DetectorProcess(detector_env(s, broker.bootstrap, engine.url.render_as_string(hide_password=False)),
                               tmp_path).start()
    try:
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM spike_state WHERE series = :s AND last_window_start = :w",
                                s=s.trend_series, w=T0 + timedelta(minutes=16)) == len(keys),
                 timeout_s=90, what="every key stepped up to its last closed window")
    finally:
        detector.stop()
    with engine.connect() as conn:
        per_key = dict(conn.execute(text("SELECT key, count(*) FROM alerts WHERE series = :s GROUP BY key"),
                                    {"s": s.trend_series}).all())
    assert per_key == {key: 1 for key in keys}  # one episode each, whether its events came 3 times or never
    assert scalar(engine, "SELECT count(DISTINCT window_start) FROM alerts WHERE series = :s",
                  s=s.trend_series) == 1  # and the same window for each

