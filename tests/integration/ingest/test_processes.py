"""`finsentry worker --processes 2` as real processes: one consumer group, one metrics port each, every
message stored and counted once, both stopped by one signal to the parent; the detector the parent starts
beside them is started again when it dies, and stopped with them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.helpers import posts, scalar, send, setup_topics, wait_for
from workers.ingest.processes import ready
from workers.services.embedded import free_ports

pytestmark = pytest.mark.integration


def test_two_worker_processes_share_the_group_and_stop_together(broker, database_url, engine, settings, unique,
                                                                 tmp_path):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    port = free_ports(2)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DATABASE_URL": database_url,
           "FINSENTRY_SOCIAL_TOPIC": settings.social_topic, "FINSENTRY_NEWS_TOPIC": settings.news_topic,
           "FINSENTRY_DEAD_LETTER_TOPIC": settings.dead_letter_topic, "FINSENTRY_TREND_SERIES": settings.trend_series,
           "FINSENTRY_TOPIC_PARTITIONS": "2", "FINSENTRY_DATA_DIR": str(tmp_path), "FINSENTRY_METRICS_PORT": str(port),
           "FINSENTRY_DETECTOR_METRICS_PORT": "0",
           "FINSENTRY_MICRO_BATCH_SIZE": "50", "FINSENTRY_TOUCHED_TOPIC": settings.touched_topic,
           "FINSENTRY_ALERTS_TOPIC": settings.alerts_topic, "FINSENTRY_DETECTOR_APP_ID": settings.detector_app_id}
    parent = subprocess.Popen([sys.executable, "-m", "finsentry.cli", "worker", "--processes", "2", "--zero-cost-model",
                               "--group", f"procs-{unique}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        # Both children up, each with its own metrics port, each holding partitions of the one group.
        wait_for(lambda: ready(port) and ready(port + 1), timeout_s=120, what="both worker processes ready")
        send(broker.bootstrap, settings.social_topic, posts(400, unique))
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM classified_messages WHERE external_id LIKE :p",
                                p=f"{unique}-%") == 400, timeout_s=120, what="every message stored")
        first = detectors(parent.pid)
        assert len(first) == 1
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: len(detectors(parent.pid)) == 1 and detectors(parent.pid) != first, timeout_s=30,
                 what="the detector started again")
        second = detectors(parent.pid)
        parent.send_signal(signal.SIGTERM)
        out, _ = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == 0
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(reports) == 2 and len({r["pid"] for r in reports}) == 2  # stopped together, each reported
    assert sum(r["stored"] for r in reports) == 400
    counted = scalar(engine, "SELECT sum(n_messages) FROM trend_windows WHERE series = :s AND dimension = 'topic'",
                     s=settings.trend_series)
    assert counted == 400
    time.sleep(0.5)
    assert not ready(port) and not ready(port + 1)  # nothing left running
    assert not os.path.exists(f"/proc/{second[0]}")


def detectors(parent: int) -> list[int]:
    """Pids of the `finsentry detector` children of `parent` that are running."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and b"detector" in argv:
            found.append(int(entry))
    return found
