"""`finsentry scheduler`: APScheduler with its job store in Postgres: re-fine-tuning, drift checks, retention
(day partitions created ahead, old ones dropped, old minute windows deleted).

Jobs are stored by reference with plain arguments, so they survive restarts. coalesce and
max_instances=1 keep one run at a time in a process, and a Postgres advisory lock keeps one run at a
time across processes; `finsentry train --now` takes the same lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, func, select

from config.settings import Horizons, Settings
from models.training import TrainConfig
from schemas.tables import apscheduler_jobs
from workers.lifecycle import drift, registry
from workers.lifecycle.retention import apply_retention
from workers.lifecycle.retrain import retrain_and_register
from workers.services.db import make_engine, sqlalchemy_url

log = logging.getLogger(__name__)

RETRAIN_LOCK = 7_310_002
JOB_ID = "finsentry-retrain"
DRIFT_JOB_ID = "finsentry-drift"
RETENTION_JOB_ID = "finsentry-retention"


class _Running:
    """Set by build_scheduler. The job store keeps only references and plain arguments, never the
    database URL (it may carry a password) nor the scheduler itself."""

    database_url: str | None = None
    scheduler: BaseScheduler | None = None


@contextmanager
def _engine() -> Iterator[Engine]:
    """An engine for one job run, disposed afterwards."""
    if _Running.database_url is None:
        raise RuntimeError("scheduled jobs run inside `finsentry scheduler` (build_scheduler sets the database)")
    engine = make_engine(_Running.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def retrain_locked(engine: Engine, models_root: Path, default_dir: Path, config: TrainConfig,
                   progress: bool = False) -> dict[str, Any] | None:
    """One re-fine-tuning run under the cross-process lock; None when another process holds it."""
    with engine.connect() as lock_conn:
        if not lock_conn.execute(select(func.pg_try_advisory_lock(RETRAIN_LOCK))).scalar():
            log.info("another re-fine-tuning run holds the lock; skipping")
            return None
        try:
            return retrain_and_register(engine, models_root, default_dir, config, progress=progress)
        finally:
            lock_conn.execute(select(func.pg_advisory_unlock(RETRAIN_LOCK)))
            lock_conn.commit()


def retrain_job(models_root: str, default_dir: str, epochs: float, max_examples_per_task: int | None,
                init: str = "champion") -> dict[str, Any] | None:
    config = TrainConfig(epochs=epochs, max_examples_per_task=max_examples_per_task,
                         init_dir=None if init == "base" else init)
    with _engine() as engine:
        return retrain_locked(engine, Path(models_root), Path(default_dir), config)


def drift_job(default_dir: str, window: int, max_js: float, max_confidence_drop: float) -> dict[str, Any] | None:
    """Check the serving champion for drift; on drift, bring the next re-fine-tuning run forward to now."""
    with _engine() as engine:
        _, version = registry.serving(engine, Path(default_dir))
        result = drift.check(engine, version, drift.DriftThresholds(window, max_js, max_confidence_drop))
        if result is None:
            return None
        triggered = False
        if result.drifted and _Running.scheduler is not None and _Running.scheduler.get_job(JOB_ID):
            _Running.scheduler.modify_job(JOB_ID, next_run_time=datetime.now(timezone.utc))
            triggered = True
        drift.record(engine, result, triggered)
    return {"drifted": result.drifted, "triggered_training": triggered, "topic_js": result.topic_js,
            "sentiment_js": result.sentiment_js, "confidence_drop": result.confidence_drop}


def retention_job(message_days: int, text_days: int, minute_days: int) -> dict[str, Any]:
    """Create the coming days' partitions, drop the expired ones, delete old minute windows."""
    with _engine() as engine:
        run = apply_retention(engine, Horizons(message_days, text_days, minute_days), datetime.now(timezone.utc))
    return {"created": run.created, "dropped": run.dropped, "minute_windows_deleted": run.minute_windows_deleted,
            "busy": run.busy}


def _stored_next_runs() -> dict[str, datetime | None]:
    """Next run times the job store holds, so that a restart keeps each job's schedule (None: paused)."""
    with _engine() as engine, engine.begin() as conn:
        rows = conn.execute(select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time)).all()
    return {row.id: None if row.next_run_time is None
            else datetime.fromtimestamp(row.next_run_time, timezone.utc) for row in rows}


def build_scheduler(database_url: str, settings: Settings, blocking: bool = True) -> BaseScheduler:
    kind = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = kind(
        jobstores={"default": SQLAlchemyJobStore(url=sqlalchemy_url(database_url), tablename="apscheduler_jobs")},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        timezone=timezone.utc,
    )
    _Running.database_url = database_url
    _Running.scheduler = scheduler
    stored = _stored_next_runs()

    def keep(job_id: str) -> dict[str, Any]:
        # The arguments come from today's settings; the next run time from the store, if it has one.
        return {"next_run_time": stored[job_id]} if job_id in stored else {}

    trigger = (CronTrigger.from_crontab(settings.retrain_cron, timezone=timezone.utc) if settings.retrain_cron
               else IntervalTrigger(minutes=settings.retrain_interval_minutes))
    scheduler.add_job(retrain_job, trigger, id=JOB_ID, replace_existing=True, **keep(JOB_ID), kwargs={
        "models_root": str(settings.data_dir / "models"), "default_dir": str(settings.model_dir),
        "epochs": settings.retrain_epochs, "max_examples_per_task": settings.retrain_max_examples_per_task,
        "init": settings.retrain_init})
    scheduler.add_job(drift_job, IntervalTrigger(minutes=settings.drift_check_minutes), id=DRIFT_JOB_ID,
                      replace_existing=True, **keep(DRIFT_JOB_ID), kwargs={
                          "default_dir": str(settings.model_dir), "window": settings.drift_window,
                          "max_js": settings.drift_max_js, "max_confidence_drop": settings.drift_max_confidence_drop})
    # Always scheduled: even with every horizon at 0 (keep), the coming days' partitions are created ahead.
    # A new scheduler's first run is at once, so that today's and the coming days' partitions exist.
    horizons = settings.horizons
    first = keep(RETENTION_JOB_ID) or {"next_run_time": datetime.now(timezone.utc)}
    scheduler.add_job(retention_job, IntervalTrigger(hours=1), id=RETENTION_JOB_ID, replace_existing=True, **first,
                      kwargs={"message_days": horizons.messages_days, "text_days": horizons.texts_days,
                              "minute_days": horizons.minute_windows_days})
    return scheduler
