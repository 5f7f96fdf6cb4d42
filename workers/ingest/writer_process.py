"""The worker's database writes, in a process of their own.

The worker's stages are threads of one Python process and share its GIL. A database writer among them
waits for the GIL after every round trip to Postgres (a COPY, a statement, a commit) and every time
its own Python work is interrupted: measured here, the sink alone stored 26,400 rows/s, 4,100 rows/s
beside two busy Python threads, and 26,400 rows/s beside a busy *process*. So the sink runs in a
child process with its own GIL: the worker's writer thread hands it each batch (pickled columns,
about 1.4 ms a batch of 2,048) and waits for the answer, which costs one wake-up.

The child is a plain `PostgresSink`: one transaction per batch, its connection held, its errors
classified the same way. It answers every request with what the sink did or the error it raised, so
the worker's retry and back-pressure rules apply unchanged. It ends when the worker closes the pipe
or dies (it then reads end-of-file); a child that dies is started again at the next attempt, and the
batch is retried: nothing is lost, and the sink's idempotency makes a repeated batch change nothing.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import pickle
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from config.settings import Horizons
from schemas.errors import FinsentryError, RetryableError
from workers.ingest.processes import die_with_parent
from workers.ingest.sink import BatchingSink, PostgresSink
from workers.pipeline.stages import Columns
from workers.services.db import make_engine

log = logging.getLogger(__name__)


class WriterError(FinsentryError):
    """The database refused a batch for a reason a retry will not change."""


class SinkProcess(BatchingSink):
    """`PostgresSink`, run in a child process."""

    def __init__(self, database_url: str, window_seconds: int, series: str, horizons: Horizons = Horizons()):
        super().__init__()
        self._args = (database_url, window_seconds, series, horizons)
        self._pipe: Connection | None = None
        self._process: BaseProcess | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads and a model
        ours, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(theirs, *self._args), name="finsentry-writer",
                                        daemon=True)
        self._process.start()
        theirs.close()
        self._pipe = ours
        # The child answers once it has imported what it needs and tried its connection, so that the
        # first batch does not wait for a process start (about a second here).
        if not ours.poll(60.0):
            raise RetryableError("the database writer process did not start within 60 s")
        ours.recv_bytes()

    def write(self, batches: list[Columns]) -> int:
        try:
            if self._pipe is None:
                self.start()
            assert self._pipe is not None
            self._pipe.send_bytes(pickle.dumps(batches, protocol=pickle.HIGHEST_PROTOCOL))
            kind, *answer = pickle.loads(self._pipe.recv_bytes())
        except (EOFError, OSError) as err:
            self.close(timeout_s=1.0)
            raise RetryableError(f"the database writer process ended ({err.__class__.__name__}); "
                                 "starting a new one") from err
        if kind == "retry":
            raise RetryableError(answer[0])
        if kind == "error":
            raise WriterError(answer[0])
        stored, self.touched = answer
        return int(stored)

    def close(self, timeout_s: float = 30.0) -> None:
        """Ask the child to stop (it finishes the batch in hand first), then wait for it."""
        if self._pipe is not None:
            try:
                self._pipe.send_bytes(b"")
            except OSError:
                pass
            self._pipe.close()
            self._pipe = None
        if self._process is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None


def _serve(pipe: Connection, database_url: str, window_seconds: int, series: str, horizons: Horizons) -> None:
    """The child: write each batch it is sent, answer, and end at an empty message or end-of-file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which then closes the pipe
    die_with_parent()
    engine = make_engine(database_url)
    sink = PostgresSink(engine, window_seconds, series, horizons)
    try:
        sink.connect()
    except Exception as err:  # noqa: BLE001 - the first write meets it again and answers with it
        log.warning("the writer process could not connect yet: %s", err)
    # As in the worker: what is loaded now lives as long as the process, and left out of full collections.
    gc.collect()
    gc.freeze()
    pipe.send_bytes(b"ready")
    try:
        while True:
            try:
                request = pipe.recv_bytes()
            except EOFError:
                return
            if not request:
                return
            answer: tuple[Any, ...]
            try:
                answer = ("ok", sink.write(pickle.loads(request)), sink.touched)
            except RetryableError as err:
                answer = ("retry", str(err))
            except Exception as err:  # noqa: BLE001 - handed to the worker, which stops on it
                answer = ("error", f"{err.__class__.__name__}: {err}")
            try:
                pipe.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                return  # the worker is gone
    finally:
        sink.close()
        engine.dispose()
