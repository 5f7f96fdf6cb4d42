"""Worker observability: Prometheus metrics, /healthz and /readyz, and JSON logs.

Metrics are fed from the worker's BatchReport hook and a lag probe, so the hot path does no extra
per-message work for them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from workers.ingest.worker import BatchReport

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    """The worker's Prometheus series, in a registry of its own."""

    def __init__(self, model_version: str, device: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("finsentry_messages_consumed", "Records consumed from Kafka", registry=r)
        self.classified = Counter("finsentry_messages_classified", "New messages stored", registry=r)
        self.duplicates = Counter("finsentry_messages_duplicate", "Records already stored (replays)", registry=r)
        self.dead_lettered = Counter("finsentry_messages_dead_lettered", "Records sent to the DLQ", registry=r)
        self.batch_size = Histogram("finsentry_batch_size", "Records per micro-batch", registry=r,
                                    buckets=(1, 8, 32, 128, 512, 1024, 2048, 4096, 8192))
        self.step_seconds = Histogram("finsentry_step_seconds", "Seconds per batch step", ["step"], registry=r,
                                      buckets=_SECONDS)
        self.inference_seconds = Histogram("finsentry_inference_seconds", "Model seconds per micro-batch",
                                           registry=r, buckets=_SECONDS)
        self.e2e_seconds = Histogram("finsentry_end_to_end_seconds", "Produce to offset commit, per record",
                                     registry=r, buckets=_SECONDS)
        self.lag = Gauge("finsentry_consumer_lag", "Records behind the fetch high watermark", registry=r)
        self.model = Gauge("finsentry_model_info", "The model serving", ["version", "device"], registry=r)
        self.gpu_memory = Gauge("finsentry_gpu_memory_bytes", "GPU memory allocated by torch", registry=r)
        self.last_batch = Gauge("finsentry_last_batch_timestamp", "Unix time of the last committed batch",
                                registry=r)
        self.model.labels(version=model_version, device=device).set(1)
        self._model_labels = (model_version, device)

    def on_batch(self, report: BatchReport) -> None:
        if report.model_version and report.model_version != self._model_labels[0]:  # a hot swap
            self.model.remove(*self._model_labels)
            self._model_labels = (report.model_version, self._model_labels[1])
            self.model.labels(*self._model_labels).set(1)
        self.consumed.inc(report.records)
        self.classified.inc(report.stored)
        self.duplicates.inc(report.records - report.dead_lettered - report.stored)
        self.dead_lettered.inc(report.dead_lettered)
        self.batch_size.observe(report.records)
        for step, seconds in report.seconds.items():
            self.step_seconds.labels(step=step).observe(seconds)
        self.inference_seconds.observe(report.seconds["inference"])
        for produced_ms in report.produced_at_ms:
            self.e2e_seconds.observe(max(0.0, report.committed_at - produced_ms / 1000))
        self.last_batch.set(report.committed_at)
        self._gpu_memory()

    def _gpu_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            self.gpu_memory.set(torch.cuda.memory_allocated())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """Liveness: the consume loop turned recently. Readiness: the model is loaded and partitions assigned."""

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self.last_loop = time.monotonic()
        self.ready = False

    def beat(self, assigned: bool) -> None:
        self.last_loop = time.monotonic()
        self.ready = assigned

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < self.stale_after_s


class ObservabilityServer:
    """Serves /metrics, /healthz and /readyz on host:port (port 0 picks a free one)."""

    def __init__(self, metrics: WorkerMetrics, health: Health, host: str = "0.0.0.0", port: int = 9108) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/metrics":
                    self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200 if health.alive else 503, b"ok" if health.alive else b"stalled")
                elif self.path == "/readyz":
                    self._send(200 if health.ready else 503, b"ready" if health.ready else b"not ready")
                else:
                    self._send(404, b"not found")

            def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> "ObservabilityServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={...}` fields are kept (message ids, model versions)."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
