"""The detector's metrics, health and JSON logs while `finsentry worker` runs it as a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    SECRET,
    Receiver,
    get,
    insert_windows,
    posts,
    scalar,
    send,
    setup_topics,
    wait_for,
)
from workers.ingest.processes import stop_child

pytestmark = pytest.mark.integration

LOG_FIELDS = {"ts", "level", "logger", "message"}  # what every JSON line of the worker and the detector has


def samples(body: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
            if line and not line.startswith("#")}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the processes' output, each parsed as JSON (a line that is not JSON fails the test)."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"a line of the worker's or the detector's output is not JSON: {line[:300]!r}")
    return parsed


def detector_port(path: Path) -> int | None:
    for line in json_lines(path):
        if line.get("message", "").startswith("detector metrics on"):
            return int(line["port"])
    return None


def test_the_detector_serves_metrics_health_and_json_logs_beside_a_worker(  # type: ignore[no-untyped-def]
        broker, database_url, engine, settings, unique, tmp_path):
    setup_topics(broker.bootstrap, settings)
    # Closed windows with a negative burst on one topic: the detector opens (and resolves) an alert and
    # delivers it to a receiver; posts through the worker move the watermark.
    insert_windows(engine, settings.trend_series, f"Burst {unique}", [0.1] * 10 + [0.9] * 4 + [0.1] * 6)
    receiver = Receiver(statuses=[])
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DATABASE_URL": database_url,
           "FINSENTRY_SOCIAL_TOPIC": settings.social_topic, "FINSENTRY_NEWS_TOPIC": settings.news_topic,
           "FINSENTRY_DEAD_LETTER_TOPIC": settings.dead_letter_topic, "FINSENTRY_TREND_SERIES": settings.trend_series,
           "FINSENTRY_TOUCHED_TOPIC": settings.touched_topic, "FINSENTRY_ALERTS_TOPIC": settings.alerts_topic,
           "FINSENTRY_DETECTOR_APP_ID": settings.detector_app_id, "FINSENTRY_TOPIC_PARTITIONS": "2",
           "FINSENTRY_DATA_DIR": str(tmp_path), "FINSENTRY_METRICS_PORT": "0", "FINSENTRY_DETECTOR_METRICS_PORT": "0",
           "FINSENTRY_LOG_FORMAT": "json", "FINSENTRY_MICRO_BATCH_SIZE": "50", "FINSENTRY_SPIKE_DIMENSIONS": '["topic"]',
           "FINSENTRY_SPIKE_WARMUP_WINDOWS": "5", "FINSENTRY_DETECT_INTERVAL_S": "0.5",
           "FINSENTRY_WEBHOOK_URLS": receiver.url, "FINSENTRY_WEBHOOK_SECRETS": SECRET,
           "FINSENTRY_WEBHOOK_ALLOW_HTTP": "true", "FINSENTRY_WEBHOOK_ALLOW_PRIVATE": "true"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "finsentry.cli", "worker", "--zero-cost-model",
                                   "--group", f"observed-{unique}"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: detector_port(log) is not None, timeout_s=120, what="the detector's metrics port in its log")
        base = f"http://127.0.0.1:{detector_port(log)}"
        send(broker.bootstrap, settings.social_topic, posts(40, unique))
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, timeout_s=120, what="the detector ready (partitions owned)")
        wait_for(lambda: receiver.received, timeout_s=120, what="the alert's webhook")
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM classified_messages WHERE external_id LIKE :p",
                                p=f"{unique}-%") == 40, timeout_s=120, what="the posts stored")
        wait_for(lambda: samples(get(f"{base}/metrics")[1]).get(
            'finsentry_detector_deliveries_total{channel="kafka",outcome="delivered"}', 0) >= 1,
            timeout_s=60, what="the alerts topic's record delivered")
        assert get(f"{base}/healthz") == (200, "ok")
        # The posts (ten minutes old) moved the watermark from the inserted windows' time to theirs.
        wait_for(lambda: samples(get(f"{base}/metrics")[1]).get(
            'finsentry_detector_watermark_timestamp_seconds{dimension="topic"}', 0) > time.time() - 3600,
            timeout_s=60, what="the watermark moved by the worker's batches")
        status, body = get(f"{base}/metrics")
        assert worker.poll() is None, "the worker exited"
    finally:
        stop_child(worker, 60)
    assert status == 200
    series = samples(body)
    print(json.dumps({k: v for k, v in series.items() if k.startswith("finsentry_detector_")
                      and not k.split("{")[0].endswith("_bucket")}))
    assert series['finsentry_detector_keys_stepped_total{trigger="sweep"}'] \
        + series['finsentry_detector_keys_stepped_total{trigger="event"}'] >= 1
    assert series['finsentry_detector_alerts_total{event="opened"}'] >= 1
    assert series['finsentry_detector_deliveries_total{channel="webhook",outcome="delivered"}'] >= 1
    assert series['finsentry_detector_delivery_seconds_count{channel="webhook"}'] >= 1
    assert series["finsentry_detector_sweep_seconds_count"] >= 1
    assert series['finsentry_detector_watermark_lag_seconds{dimension="topic"}'] >= settings.allowed_lateness_s
    assert series["finsentry_detector_owned_partitions"] == 2
    assert series.get('finsentry_detector_errors_total{stage="sweep"}', 0) == 0

    # Every line either process wrote is JSON with the worker's fields, faust's and mode's own lines too.
    lines = json_lines(log)
    logs = [line for line in lines if "logger" in line]  # the rest: the worker's closing summary
    assert all(LOG_FIELDS <= set(line) for line in logs)
    loggers = {line["logger"] for line in logs}
    assert any(name.startswith("faust") or name.startswith("mode") for name in loggers), sorted(loggers)
    assert "workers.alerting.faust_detector" in loggers and "finsentry" in loggers
