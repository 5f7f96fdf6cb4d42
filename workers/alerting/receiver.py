"""A small webhook receiver: verifies Standard Webhooks signatures and deduplicates on webhook-id.

The demo runs one on 127.0.0.1 to show alerts arriving; it is also what a risk team's endpoint must do.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from workers.alerting.delivery import verify


class WebhookReceiver:
    def __init__(self, secrets: list[str], host: str = "127.0.0.1", port: int = 0):
        self.secrets = secrets
        self.events: dict[str, dict[str, Any]] = {}
        self.rejected = 0
        self.duplicates = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if not verify(receiver.secrets, headers, body):
                    with receiver._lock:
                        receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver._lock:
                    if headers["webhook-id"] in receiver.events:
                        receiver.duplicates += 1
                    else:
                        receiver.events[headers["webhook-id"]] = json.loads(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/hooks/finsentry"

    def __enter__(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
