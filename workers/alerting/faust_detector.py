"""The spike detector as a faust app: keyed "window touched" events in, alerts out.

Workers publish one event per key a committed batch wrote to, keyed "dimension:key", naming the windows
it wrote (`touched_topic`). Partitions give ownership: the detector instance that is assigned a partition decides
for the keys on it, so detection scales out with partitions and needs no global lock.

- The agent reads the events. When one of an event's windows has closed and is newer than the last window
  the agent stepped for that key (the `detector-last-stepped` table: a cache, changelogged by faust), it
  steps the key.
- A timer, every `detect_interval_s`: when the watermark has moved (windows closed without new events), it
  asks Postgres which owned keys have windows among the newly closed ones not yet stepped, and steps them;
  after a start or a rebalance it asks about every owned key. Then it delivers due webhooks and
  `finsentry.alerts` records.

Postgres is the source of truth. `step_key` reads each key's state and last stepped window under a per-key
lock and commits the alert, its outbox rows and the new state together, so a lost, repeated or replayed
event, a killed detector or two owners during a rebalance change no result. The table is not trusted for
decisions (a faust table recovered after a kill -9 on the embedded broker was found missing updates): a
stale entry only makes the agent step a key again, which finds nothing new.

faust runs here as a library (`faust.Worker`), with its options passed from Settings; its command line
(click) is not used, and it logs through finsentry's handlers (text or JSON) instead of installing its own.
The detector serves its Prometheus metrics, /healthz (the timer ticks) and /readyz (it owns partitions) on
`detector_metrics_port`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import faust
from confluent_kafka import Producer
from sqlalchemy import Engine

from config.settings import Settings
from workers.alerting.delivery import deliver_due
from workers.alerting.detector import (
    Detection,
    closed_by_dimension,
    detection_of,
    newest_window,
    pending_keys,
    step_key,
)
from workers.alerting.observability import DetectorMetrics
from workers.alerting.routing import build_routes
from workers.ingest.kafka_io import ensure_topics, key_partition, partition_count, producer_config
from workers.observability import Health, ObservabilityServer

log = logging.getLogger(__name__)


@dataclass
class Detector:
    """The blocking side of the app (Postgres, webhooks), run on worker threads by the async side."""

    settings: Settings
    engine: Engine
    producer: Producer
    partitions: int  # of the touched topic
    metrics: DetectorMetrics = field(default_factory=DetectorMetrics)
    detection: Detection = field(init=False)
    closed: dict[str, datetime] = field(default_factory=dict)  # per dimension: windows before it are closed
    closed_at: float = 0.0  # time.monotonic() of the last watermark read
    steps: int = 0  # keys stepped since the start
    alerts: int = 0  # alerts opened or resolved since the start

    def __post_init__(self) -> None:
        s = self.settings
        self.detection = detection_of(s, build_routes(s.webhook_url_list, s.webhook_routes, s.webhook_policy))

    def refresh_watermark(self, max_age_s: float = 0.0) -> None:
        """Re-read the closed-window boundary, unless it was read within max_age_s."""
        if time.monotonic() - self.closed_at < max_age_s:
            return
        s = self.settings
        with self.engine.connect() as conn:
            self.closed = closed_by_dimension(conn, s.trend_series, s.spike_dimensions, s.allowed_lateness_s,
                                              s.watermark_idle_s)
            newest = {d: n for d in self.closed if (n := newest_window(conn, s.trend_series, d)) is not None}
        self.closed_at = time.monotonic()
        self.metrics.on_watermark(self.closed, newest)

    def step(self, dimension: str, key: str, trigger: str = "event") -> datetime | None:
        """Step one key through its closed windows; return the last window stepped (None: nothing new)."""
        if dimension not in self.closed:
            return None
        with self.engine.begin() as conn:
            touched, last = step_key(conn, self.detection, self.settings.trend_series, dimension, key,
                                     self.closed[dimension])
        self.steps += 1
        self.alerts += len(touched)
        self.metrics.on_step(trigger, touched)
        return last

    def sweep(self, owned: set[int], since: dict[str, datetime] | None) -> int:
        """Step every owned key with closed windows not stepped yet (among the windows from since[dimension]
        on, when given); return how many keys were stepped."""
        with self.engine.connect() as conn:
            keys = pending_keys(conn, self.settings.trend_series, tuple(self.settings.spike_dimensions), self.closed,
                                since)
        mine = [(d, k) for d, k in keys if key_partition(f"{d}:{k}", self.partitions) in owned]
        for dimension, key in mine:
            self.step(dimension, key, trigger="sweep")
        return len(mine)

    def deliver(self) -> int:
        s = self.settings
        return deliver_due(self.engine, s.webhook_secret_list, s.webhook_timeout_s, s.webhook_max_attempts,
                           s.webhook_backoff_s, policy=s.webhook_policy, producer=self.producer,
                           on_attempt=self.metrics.on_attempt)


def build_app(settings: Settings, bootstrap: str, engine: Engine, metrics: DetectorMetrics | None = None,
              health: Health | None = None) -> faust.App:
    s = settings
    ensure_topics(bootstrap, [s.touched_topic] + ([s.alerts_topic] if s.alerts_topic else []), s.topic_partitions)
    producer = Producer(producer_config(bootstrap))
    detector = Detector(s, engine, producer, partition_count(producer, s.touched_topic), metrics or DetectorMetrics())
    health = health or Health()
    datadir = s.data_dir / "faust" / s.detector_app_id  # faust makes it even with memory tables
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        s.detector_app_id,
        env={},  # every option below comes from Settings; faust reads nothing from the environment
        datadir=str(datadir),
        broker=f"kafka://{bootstrap}",
        store="memory://",
        broker_session_timeout=s.detector_session_timeout_s,
        topic_partitions=detector.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )
    touched = app.topic(s.touched_topic, key_serializer="raw", value_serializer="json",
                        partitions=detector.partitions)
    # Per key, the last window the agent stepped (ISO time): lets it skip events of windows already stepped.
    table = app.Table("detector-last-stepped", default=lambda: None, partitions=detector.partitions, key_type=str)
    swept: dict[str, Any] = {"owned": set(), "closed": {}}  # what the last sweep saw

    @app.agent(touched)
    async def on_touched(stream: faust.StreamT[Any]) -> None:
        async for key_bytes, event in stream.items():
            if event.get("series") != s.trend_series or event.get("dimension") not in s.spike_dimensions:
                continue
            dimension, key = event["dimension"], event["key"]
            windows = [datetime.fromisoformat(w) for w in event.get("windows") or [event["window_start"]]]
            name = key_bytes.decode()
            await asyncio.to_thread(detector.refresh_watermark, s.detect_interval_s)
            closed, last = detector.closed.get(dimension), table[name]
            stepped_to = None if last is None else datetime.fromisoformat(last)
            if closed is not None and any(w < closed and (stepped_to is None or w > stepped_to) for w in windows):
                # a closed window of this key (late data, a replay, a slow partition): step it now
                try:
                    stepped = await asyncio.to_thread(detector.step, dimension, key)
                    if stepped is not None:
                        table[name] = stepped.isoformat()
                except Exception:  # noqa: BLE001 - Postgres away: the next sweep looks at every owned key
                    log.exception("stepping %s failed; the next sweep takes it", name)
                    detector.metrics.errors.labels(stage="step").inc()
                    swept["owned"] = set()

    @app.timer(interval=s.detect_interval_s)
    async def sweep() -> None:
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == s.touched_topic}
        health.beat(bool(owned))
        detector.metrics.owned_partitions.set(len(owned))
        detector.metrics.last_tick.set(time.time())
        try:
            await asyncio.to_thread(detector.refresh_watermark)
            if owned and (detector.closed != swept["closed"] or owned != swept["owned"]):
                # After a start or a rebalance every owned key is looked at; then the newly closed windows.
                since = swept["closed"] if owned == swept["owned"] else None
                started = time.monotonic()
                stepped = await asyncio.to_thread(detector.sweep, owned, since)
                detector.metrics.sweep_seconds.observe(time.monotonic() - started)
                log.info("detector sweep: %d keys stepped (partitions %s); since start: %d steps, %d alert events",
                         stepped, sorted(owned), detector.steps, detector.alerts,
                         extra={"keys_stepped": stepped, "partitions": sorted(owned)})
                swept.update(owned=owned, closed=dict(detector.closed))
            await asyncio.to_thread(detector.deliver)
        except Exception:  # noqa: BLE001 - Postgres or the broker away: the next tick tries again
            log.exception("detector sweep failed; retrying in %.1f s", s.detect_interval_s)
            detector.metrics.errors.labels(stage="sweep").inc()

    return app


def run(settings: Settings, bootstrap: str, engine: Engine) -> None:
    """Run the detector until SIGINT/SIGTERM, with its metrics and health on `detector_metrics_port`."""
    metrics = DetectorMetrics()
    health = Health(stale_after_s=max(60.0, 10 * settings.detect_interval_s))
    app = build_app(settings, bootstrap, engine, metrics, health)
    server = None
    if settings.detector_metrics_port >= 0:
        server = ObservabilityServer(metrics, health, port=settings.detector_metrics_port).start()
        log.info("detector metrics on :%d/metrics", server.port, extra={"port": server.port})
    try:
        # override_logging=False: faust and mode log through the handlers finsentry configured (text or JSON)
        # instead of replacing them with their own colored text handler. Without that step faust keeps its
        # terminal spinner, which writes cursor escapes to stdout: it goes too.
        worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False)
        worker.spinner = None
        worker.execute_from_commandline()
    finally:
        if server is not None:
            server.stop()
