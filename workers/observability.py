"""What every long-running process serves and logs alike: /metrics, /healthz and /readyz, and JSON logs.

The worker (`workers/ingest/observability.py`) and the detector (`workers/alerting/observability.py`)
each keep their Prometheus series in a registry of their own and serve it with `ObservabilityServer`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # histogram buckets for durations


class Renders(Protocol):
    """A process's metrics: the Prometheus text of its registry."""

    def render(self) -> bytes: ...


class Health:
    """Liveness: the main loop turned recently. Readiness: the process holds work (partitions assigned)."""

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

    def __init__(self, metrics: Renders, health: Health, host: str = "0.0.0.0", port: int = 9108) -> None:
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


def configure_logging(level: int, log_format: str) -> None:
    """The root logger for a finsentry process: text, or one JSON object per line. Libraries that log
    (faust, mode, aiokafka, alembic) go through the root's handler; faust is told not to install its own
    (`faust_detector.run`), and Python's warnings are logged too, so that under `json` every line is JSON."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)
