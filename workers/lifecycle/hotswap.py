"""Hot swap: a running worker learns of a new champion, loads it beside the serving one, switches between batches.

The watcher thread LISTENs on the registry's channel and, as a fallback for a notification missed
while its connection was down, re-reads the registry every `poll_s`. It never trusts the payload:
on any wake-up it asks the registry which model should serve. Loading and a warm-up forward pass
happen in the watcher's thread, so the stream only pauses for the swap of one reference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import DBAPIError

from models.artifacts import ArtifactError, version_of
from workers.lifecycle import registry
from workers.pipeline.stages import Scorer
from workers.retry import backoff_s
from workers.services.db import sqlalchemy_url

log = logging.getLogger(__name__)


def libpq_url(database_url: str) -> str:
    return make_url(sqlalchemy_url(database_url)).set(drivername="postgresql").render_as_string(hide_password=False)


class ModelWatcher(threading.Thread):
    def __init__(self, database_url: str, engine: Engine, default_dir: Path, load: Callable[[Path], Scorer],
                 serving_version: str, stop: threading.Event, poll_s: float = 30.0):
        super().__init__(name="model-watcher", daemon=True)
        self.conninfo = libpq_url(database_url)
        self.engine = engine
        self.default_dir = default_dir
        self.load = load
        self.stop_event = stop
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._wanted = serving_version  # the version serving, or being loaded to serve
        self._default_version = version_of(default_dir)  # what serves when no champion is registered
        self._ready: Scorer | None = None
        self.listening = threading.Event()  # set once LISTEN is in place (tests wait on it)

    def take(self) -> Scorer | None:
        """The newly loaded champion, once; the worker calls this between batches."""
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def run(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {registry.CHANNEL}")
                    self.listening.set()
                    failures = 0
                    self.check()  # after LISTEN, so a promotion in between is not missed
                    last_check = time.monotonic()
                    while not self.stop_event.is_set():
                        notified = any(True for _ in conn.notifies(timeout=1.0, stop_after=1))
                        if notified or time.monotonic() - last_check >= self.poll_s:
                            self.check()
                            last_check = time.monotonic()
            except (psycopg.OperationalError, DBAPIError) as err:
                self.listening.clear()
                failures += 1
                wait = backoff_s(failures, 1.0, 30.0)
                log.warning("model watcher lost its database connection (%s); retrying in %.1f s", err, wait)
                self.stop_event.wait(wait)

    def check(self) -> None:
        """Load the registry's champion if it is not the one serving (or already loaded).

        Each poll is one small query; the weights are hashed only when the registered version differs.
        """
        registered = registry.champion_version(self.engine) or self._default_version
        with self._lock:
            if registered == self._wanted:
                return
        target, version = registry.serving(self.engine, self.default_dir)
        with self._lock:
            if version == self._wanted:  # the champion does not verify and the default is serving already
                return
        started = time.perf_counter()
        try:
            scorer = self.load(target)
            scorer.score_encoded(scorer.encode(["warm-up"]))  # first-call costs (allocation, quantisation kernels) happen here
        except (ArtifactError, OSError, RuntimeError, ValueError) as err:
            log.error("could not load champion %s from %s, keeping the serving model: %s", version, target, err)
            return
        with self._lock:
            self._ready, self._wanted = scorer, version
        log.info("loaded champion %s beside the serving model in %.2f s", version, time.perf_counter() - started)
