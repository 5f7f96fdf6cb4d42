"""`finsentry worker --processes N`: N worker processes in one consumer group on one machine.

Each child is a plain `finsentry worker` with its own model copy (one GPU can be shared), its own
metrics port (the base port + its index) and the services the parent resolved, so that N children
share one embedded broker and database instead of starting N. A signal to the parent stops them all;
a child that dies stops the others; the parent returns the worst exit code.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from config.settings import Settings
from workers.retry import backoff_s

log = logging.getLogger(__name__)


def child_env(bootstrap: str, database_url: str, metrics_port: int, index: int) -> dict[str, str]:
    """The environment of child `index`: the resolved services and its own metrics port."""
    port = metrics_port + index if metrics_port > 0 else metrics_port  # 0: a free port each; -1: off
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url,
            "FINSENTRY_METRICS_PORT": str(port)}


def ready(port: int) -> bool:
    """Whether the worker whose metrics listen on `port` answers /readyz (model loaded, partitions held)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the parent dies, even by kill -9 (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_processes(argv: list[str], envs: list[dict[str, str]], stop: threading.Event,
                  grace_s: float = 30.0) -> int:
    """Run `finsentry <argv>` once per environment until all exit or `stop` is set; return the worst
    exit code (a signal counts as 128 + its number)."""
    children = [subprocess.Popen([sys.executable, "-m", "finsentry.cli", *argv], env=env, preexec_fn=die_with_parent)
                for env in envs]
    log.info("started %d worker processes: %s", len(children), [c.pid for c in children])
    try:
        while not stop.is_set() and all(c.poll() is None for c in children):
            time.sleep(0.2)
        failed = [c for c in children if c.poll() not in (None, 0)]
        if failed:
            log.error("worker process %d exited with %s; stopping the others", failed[0].pid, failed[0].returncode)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop in %.0f s; killing it", child.pid, grace_s)
                child.kill()
                child.wait()
    codes = [c.returncode if c.returncode >= 0 else 128 - c.returncode for c in children]
    return max(codes)


# What the detector reads of Settings: passed to its process, so that it decides as its caller would.
DETECTOR_SETTINGS = (
    "touched_topic", "alerts_topic", "detector_app_id", "detector_session_timeout_s", "topic_partitions",
    "trend_series", "window_seconds", "allowed_lateness_s", "watermark_idle_s", "detect_interval_s",
    "spike_min_volume", "spike_warmup_windows", "spike_alpha", "spike_ratio", "spike_threshold",
    "spike_cooldown_windows", "spike_overrides", "spike_dimensions", "webhook_urls", "webhook_routes",
    "webhook_allow_http", "webhook_allow_private", "webhook_timeout_s", "webhook_max_attempts", "webhook_backoff_s",
    "data_dir", "log_format", "detector_metrics_port",
)


def detector_env(settings: Settings, bootstrap: str, database_url: str) -> dict[str, str]:
    """The environment of a `finsentry detector` child that has these settings and services."""
    values = settings.model_dump(mode="json", include=set(DETECTOR_SETTINGS))
    env = child_env(bootstrap, database_url, -1, 0)
    env |= {f"FINSENTRY_{name.upper()}": v if isinstance(v, str) else json.dumps(v) for name, v in values.items()}
    env["FINSENTRY_WEBHOOK_SECRETS"] = settings.webhook_secrets.get_secret_value()
    return env


def start_detector(settings: Settings, bootstrap: str, database_url: str) -> subprocess.Popen[bytes]:
    """`finsentry detector` on the same services; it dies with this process."""
    child = subprocess.Popen([sys.executable, "-m", "finsentry.cli", "detector"],
                             env=detector_env(settings, bootstrap, database_url), preexec_fn=die_with_parent)
    log.info("started the detector: pid %d", child.pid)
    return child


class DetectorChild(threading.Thread):
    """A `finsentry detector` beside the worker(s), started again (with backoff) whenever it exits, until
    stop(); its state is in Postgres, so a restart only delays detection."""

    def __init__(self, settings: Settings, bootstrap: str, database_url: str):
        super().__init__(name="detector-child", daemon=True)
        self.settings, self.bootstrap, self.database_url = settings, bootstrap, database_url
        self.stopping = threading.Event()
        self.child = start_detector(settings, bootstrap, database_url)
        self.restarts = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            code = self.child.wait()
            if self.stopping.is_set():
                return
            self.restarts += 1
            wait = backoff_s(self.restarts, 1.0, 60.0)
            log.error("the detector exited with %s; starting it again in %.1f s", code, wait)
            if self.stopping.wait(wait):
                return
            self.child = start_detector(self.settings, self.bootstrap, self.database_url)

    def stop(self, grace_s: float = 20.0) -> None:
        self.stopping.set()
        stop_child(self.child, grace_s)
        self.join(grace_s)


def stop_child(child: subprocess.Popen[bytes], grace_s: float = 20.0) -> int:
    """SIGTERM, then SIGKILL after grace_s; return its exit code."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode
