"""Metrics after a small replay, health and readiness, the report picture, and JSON logs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.integration.helpers import (
    T0,
    RunningWorker,
    detect,
    get,
    insert_windows,
    posts,
    send,
    setup_topics,
    wait_for,
)
from workers.ingest.kafka_io import LIBRDKAFKA_LOGGER, ensure_topics, producer_config
from workers.ingest.observability import WorkerMetrics
from workers.observability import Health, JsonFormatter, ObservabilityServer
from workers.services.embedded import free_port
from workers.tools.report import parse_since, write_report

pytestmark = pytest.mark.integration


def test_metrics_endpoint_reports_a_small_replay(broker, engine, classifier, settings, unique):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    send(broker.bootstrap, settings.social_topic, [*posts(12, unique), b"{not json"])
    metrics = WorkerMetrics(classifier.version, "cpu")
    health = Health()
    server = ObservabilityServer(metrics, health, host="127.0.0.1", port=0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(f"{base}/readyz")[0] == 503  # no partitions yet
        running = RunningWorker(settings, classifier, engine, broker.bootstrap)
        running.worker.on_batch = metrics.on_batch
        running.worker.on_loop = lambda consumer: health.beat(bool(consumer.assignment()))
        with running:
            wait_for(lambda: running.worker.stats.consumed == 13, what="13 records")
            wait_for(lambda: get(f"{base}/readyz")[0] == 200, what="readiness")
            assert get(f"{base}/healthz") == (200, "ok")
        status, body = get(f"{base}/metrics")
    finally:
        server.stop()
    assert status == 200
    series = {line.split(" ")[0]: float(line.split(" ")[1]) for line in body.splitlines()
              if line and not line.startswith("#")}
    assert series["finsentry_messages_consumed_total"] == 13
    assert series["finsentry_messages_classified_total"] == 12
    assert series["finsentry_messages_dead_lettered_total"] == 1
    assert series["finsentry_end_to_end_seconds_count"] == 13
    assert series[f'finsentry_model_info{{device="cpu",version="{classifier.version}"}}'] == 1
    assert any(name.startswith('finsentry_step_seconds_count{step="database"}') for name in series)
    assert series["finsentry_inference_seconds_count"] >= 1


def test_health_goes_stale_when_the_loop_stops() -> None:
    health = Health(stale_after_s=0.05)
    health.beat(True)
    assert health.alive and health.ready
    threading.Event().wait(0.1)
    assert not health.alive


def test_report_draws_a_png_and_an_html_page(engine, unique, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    series = f"report-{unique}"
    insert_windows(engine, series, "Energy | Oil", [0.1] * 10 + [0.8, 0.8] + [0.1] * 6)
    insert_windows(engine, series, "Macro", [0.2] * 18)
    assert len(detect(engine, series, [])) == 2  # opened and resolved
    png = tmp_path / "trends.png"
    result = write_report(engine, png, timedelta(hours=1), series=series, until=T0 + timedelta(minutes=30))
    assert result["topics"] == ["Energy | Oil", "Macro"] and result["alerts"] == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    page = tmp_path / "trends.html"
    write_report(engine, page, timedelta(hours=1), series=series, until=T0 + timedelta(minutes=30))
    assert "data:image/png;base64," in page.read_text() and "Energy | Oil" in page.read_text()
    with pytest.raises(ValueError, match="png or .html"):
        write_report(engine, tmp_path / "x.pdf", timedelta(hours=1), series=series)
    with pytest.raises(ValueError, match="90m, 24h"):
        parse_since("yesterday")


def test_json_logs_keep_extra_fields(capsys: Any) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("finsentry.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("batch stored", extra={"message_id": "x:1", "model_version": "fs-abc"})
    line = json.loads(capsys.readouterr().err.strip())
    assert line["message"] == "batch stored" and line["message_id"] == "x:1" and line["model_version"] == "fs-abc"
    assert line["level"] == "WARNING"


@contextmanager
def librdkafka_json_lines(capfd: Any) -> Iterator[list[str]]:
    """librdkafka's logger alone (not propagated) under the JSON formatter. Yields a list that the caller adds
    the stderr it reads to; what is left is added at the end."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    LIBRDKAFKA_LOGGER.addHandler(handler)
    LIBRDKAFKA_LOGGER.propagate = False
    captured: list[str] = []
    try:
        yield captured
        captured.append(capfd.readouterr().err)
    finally:
        LIBRDKAFKA_LOGGER.removeHandler(handler)
        LIBRDKAFKA_LOGGER.propagate = True


def assert_json_connection_errors(err: str) -> None:
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # a raw librdkafka line fails here
    assert any(line["logger"] == "librdkafka" and "Connect" in line["message"] for line in lines), err


def test_librdkafka_lines_go_through_python_logging_as_json(capfd: Any) -> None:
    """A producer pointed at a closed port: librdkafka's connection errors reach the `librdkafka` logger, one
    JSON object a line under the JSON formatter, and none goes to stderr around it."""
    with librdkafka_json_lines(capfd) as captured:
        producer = Producer(producer_config(f"127.0.0.1:{free_port()}"))
        producer.produce("nowhere", b"x")
        deadline = time.monotonic() + 10
        while "librdkafka" not in "".join(captured) and time.monotonic() < deadline:
            producer.poll(0.2)
            captured.append(capfd.readouterr().err)
        producer.purge()
        producer.flush(1)
        del producer
    assert_json_connection_errors("".join(captured))


def test_topic_creation_hands_its_librdkafka_lines_to_the_logger(capfd: Any) -> None:
    """`ensure_topics` against a closed port fails, and the admin client's connection errors reach the
    logger as JSON on the way out."""
    with librdkafka_json_lines(capfd) as captured:
        with pytest.raises(Exception):  # noqa: B017 - whichever error confluent-kafka gives for no broker
            ensure_topics(f"127.0.0.1:{free_port()}", ["nowhere"], 1, timeout_s=2)
    assert_json_connection_errors("".join(captured))
