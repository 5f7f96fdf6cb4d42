"""Helpers for integration tests: run a worker in a thread, produce messages, read committed offsets."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine, text
from standardwebhooks import Webhook

from config.settings import Settings
from schemas.messages import RawMessage
from schemas.tables import trend_windows
from workers.alerting.detector import run_detection
from workers.alerting.routing import build_routes
from workers.alerting.spikes import SpikeParams
from workers.ingest.kafka_io import ensure_topics
from workers.ingest.worker import Worker
from workers.lifecycle.partitions import create_ahead
from workers.pipeline import stages
from workers.services.db import pooled
from workers.tools.replay import produce

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)

TEXTS = [
    "$AAPL shares slump after weak iPhone guidance",
    "Fed leaves rates unchanged, signals patience",
    "Oil jumps 4% as OPEC+ agrees deeper output cuts",
    "$TSLA recalls 120,000 vehicles over seat belt issue",
    "JPMorgan raises dividend after stress test",
    "$NVDA beats estimates, shares hit record high",
]


SINK_TEXTS = ["$AAPL slumps after weak guidance", "Fed holds rates, signals patience", "$TSLA and $AAPL rally",
              "Oil jumps as OPEC+ cuts output", "Bank raises dividend after stress test"]
SINK_BASE = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def columns_for(scorer: Any, prefix: str, n: int, start: int = 0, step_s: float = 4.0,
                base: datetime = SINK_BASE) -> stages.Columns:
    """n classified posts, keys prefix-start .. prefix-(start+n-1), post i published i * step_s after `base`."""
    raws = [RawMessage("social", (
        '{"id": "%s-%d", "source": "sink-test", "text": "%s", "published_at": "%s"}'
        % (prefix, i, SINK_TEXTS[i % len(SINK_TEXTS)], (base + timedelta(seconds=i * step_s)).isoformat())
    ).encode(), "t", 0, i) for i in range(start, start + n)]
    accepted, dead = stages.decode(raws, base + timedelta(seconds=(start + n) * step_s, days=1))
    assert dead == []
    columns, failed = stages.classify(accepted, scorer)
    assert failed == []
    return columns


def day_partitions(engine: Engine, day: datetime) -> None:
    """Make the day's partitions, as the scheduler does ahead (rows inserted by hand need them)."""
    with pooled(engine) as raw:
        create_ahead(raw, day.date(), 0)


def posts(n: int, prefix: str, minutes_ago: int = 10) -> list[dict[str, Any]]:
    base = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    return [{"id": f"{prefix}-{i}", "source": "test-social", "text": TEXTS[i % len(TEXTS)],
             "published_at": (base + timedelta(seconds=i)).isoformat()} for i in range(n)]


def send(bootstrap: str, topic: str, messages: list[dict[str, Any]] | list[bytes]) -> None:
    values = [m if isinstance(m, bytes) else json.dumps(m).encode() for m in messages]
    produce(bootstrap, topic, values, progress=False)


def setup_topics(bootstrap: str, settings: Settings) -> None:
    ensure_topics(bootstrap, [*settings.input_topics, settings.dead_letter_topic], settings.topic_partitions)


class RunningWorker:
    """A Worker in a background thread; stop() joins it and re-raises anything it raised."""

    def __init__(self, settings: Settings, scorer: Any, engine: Engine, bootstrap: str, group: str | None = None):
        self.stop_event = threading.Event()
        self.worker = Worker(settings, scorer, engine, bootstrap, group_id=group, stop=self.stop_event)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as err:  # noqa: BLE001 - surfaced in stop()
            self.error = err

    def __enter__(self) -> "RunningWorker":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(30)
        if self.error:
            raise self.error


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def read_topic(bootstrap: str, topic: str, group: str, expected: int, timeout_s: float = 30.0,
               settle_s: float = 0.0) -> list[Any]:
    """Records of `topic` until `expected` have come (or timeout_s), then for settle_s more."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out += [m for m in consumer.consume(100, 0.5) if not m.error()]
        settled = time.monotonic() + settle_s
        while time.monotonic() < settled:
            out += [m for m in consumer.consume(100, 0.5) if not m.error()]
    finally:
        consumer.close()
    return out


class Receiver:
    """A real HTTP endpoint that verifies with the standardwebhooks package and answers a scripted status."""

    def __init__(self, statuses: list[int], port: int = 0):
        self.statuses = statuses
        self.received: list[tuple[str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                payload = Webhook(SECRET).verify(body, {k.lower(): v for k, v in self.headers.items()})
                receiver.received.append((self.headers["webhook-id"], payload))
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def insert_windows(engine, series: str, topic: str, shares: list[float], volume: int = 100) -> None:  # type: ignore[no-untyped-def]
    rows = [{"series": series, "dimension": "topic", "key": topic, "window_start": T0 + timedelta(minutes=i),
             "window_seconds": 60, "n_messages": volume, "n_negative": round(s * volume),
             "n_neutral": volume - round(s * volume), "n_positive": 0, "sum_score": -s * volume}
            for i, s in enumerate(shares)]
    with engine.begin() as conn:
        conn.execute(trend_windows.insert(), rows)


def detect(engine, series: str, urls: list[str]) -> list[int]:  # type: ignore[no-untyped-def]
    return run_detection(engine, SpikeParams(warmup_windows=5), allowed_lateness_s=120, window_seconds=60,
                         routes=build_routes(urls, []), series=series)


def get(url: str) -> tuple[int, str]:
    """GET a local endpoint: (status, body), an HTTP error's status and body included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
