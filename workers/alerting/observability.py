"""The detector's Prometheus series; `workers/observability.py` serves them with /healthz and /readyz.

Fed by the detector as it works (`faust_detector.Detector`): a step, a sweep, a watermark read, a
delivery pass. Nothing here reads the database or the broker.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from workers.alerting.delivery import Attempt
from workers.alerting.detector import AlertEvent
from workers.observability import SECONDS


class DetectorMetrics:
    """The detector's series, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.keys_stepped = Counter("finsentry_detector_keys_stepped", "Keys stepped through their closed windows, "
                                    "by what triggered it (a window-touched event or a sweep)", ["trigger"], registry=r)
        self.sweep_seconds = Histogram("finsentry_detector_sweep_seconds", "Seconds per sweep of the owned keys whose "
                                       "windows closed", registry=r, buckets=SECONDS)
        self.watermark = Gauge("finsentry_detector_watermark_timestamp_seconds", "Unix time before which windows are "
                               "closed (the watermark), per dimension", ["dimension"], registry=r)
        self.watermark_lag = Gauge("finsentry_detector_watermark_lag_seconds", "Seconds from the watermark to the "
                                   "newest window written, per dimension", ["dimension"], registry=r)
        self.alerts = Counter("finsentry_detector_alerts", "Alert events recorded, opened or resolved", ["event"],
                              registry=r)
        self.deliveries = Counter("finsentry_detector_deliveries", "Due deliveries handled, by channel (webhook, "
                                  "kafka) and outcome (delivered, retrying, failed, disabled)", ["channel", "outcome"],
                                  registry=r)
        self.delivery_seconds = Histogram("finsentry_detector_delivery_seconds", "Seconds per delivery attempt: "
                                          "the webhook's HTTP round trip, or the alerts topic's acknowledgement",
                                          ["channel"], registry=r, buckets=SECONDS)
        self.errors = Counter("finsentry_detector_errors", "Steps and sweeps that failed (and are retried)", ["stage"],
                              registry=r)
        self.owned_partitions = Gauge("finsentry_detector_owned_partitions", "Partitions of the touched topic this "
                                      "detector owns", registry=r)
        self.last_tick = Gauge("finsentry_detector_last_tick_timestamp_seconds", "Unix time of the detector timer's "
                                "last tick", registry=r)
        # Every label value a rule or a dashboard reads exists from the start, at zero.
        for trigger in ("event", "sweep"):
            self.keys_stepped.labels(trigger=trigger)
        for event in ("opened", "resolved"):
            self.alerts.labels(event=event)
        for channel in ("webhook", "kafka"):
            for outcome in ("delivered", "retrying", "failed", "disabled"):
                self.deliveries.labels(channel=channel, outcome=outcome)
        for stage in ("step", "sweep"):
            self.errors.labels(stage=stage)

    def on_step(self, trigger: str, events: list[AlertEvent]) -> None:
        self.keys_stepped.labels(trigger=trigger).inc()
        for event in events:
            self.alerts.labels(event=event.kind).inc()

    def on_watermark(self, closed: dict[str, datetime], newest: dict[str, datetime]) -> None:
        for dimension, boundary in closed.items():
            self.watermark.labels(dimension=dimension).set(boundary.timestamp())
            if dimension in newest:
                self.watermark_lag.labels(dimension=dimension).set(
                    max(0.0, (newest[dimension] - boundary).total_seconds()))

    def on_attempt(self, attempt: Attempt) -> None:
        self.deliveries.labels(channel=attempt.channel, outcome=attempt.result).inc()
        if attempt.outcome is not None:
            self.delivery_seconds.labels(channel=attempt.channel).observe(attempt.outcome.latency_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
