"""Fault injectors for the fault tests: a TCP proxy that can cut a connection, worker processes to kill."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path


class TcpProxy:
    """127.0.0.1:port -> 127.0.0.1:target. `cut()` drops every connection and refuses new ones until
    `restore()`: to a client, the broker is unreachable."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()


class ChildProcess:
    """A `finsentry` command as a child process, configured by environment, logging to a file."""

    def __init__(self, env: dict[str, str], argv: list[str], log_dir: Path, name: str):
        self.env = {**os.environ, **env}
        self.argv = argv
        self.log_dir = log_dir
        self.name = name
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "ChildProcess":
        self.starts += 1
        log = open(self.log_dir / f"{self.name}-{self.starts}.log", "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "finsentry.cli", *self.argv],
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no offset commit, no leave-group."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def WorkerProcess(env: dict[str, str], group: str, log_dir: Path, name: str) -> ChildProcess:  # noqa: N802
    """`finsentry worker` in a consumer group, without the detector it would start (tests run their own)."""
    return ChildProcess(env, ["worker", "--group", group, "--no-detector"], log_dir, name)


def DetectorProcess(env: dict[str, str], log_dir: Path, name: str = "detector") -> ChildProcess:  # noqa: N802
    return ChildProcess(env, ["detector"], log_dir, name)
