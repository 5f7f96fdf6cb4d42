"""`finsentry scheduler`: APScheduler with its job store in Postgres, running re-fine-tuning periodically.

The job is stored by reference, so it survives restarts; coalesce and max_instances=1 keep one run at
a time in this process, and a Postgres advisory lock keeps one run at a time across processes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import func, select

from finsentry.db import make_engine
from models.training import TrainConfig
from workers.lifecycle import retrain_and_register

log = logging.getLogger(__name__)

RETRAIN_LOCK = 7_310_002
JOB_ID = "finsentry-retrain"


# Set by build_scheduler: the job store keeps only the job's reference and plain arguments, never
# the database URL (which may carry a password).
_DATABASE_URL: str | None = None


def retrain_job(models_root: str, default_dir: str, epochs: float,
                max_examples_per_task: int | None) -> dict[str, Any] | None:
    """One scheduled run; skipped when another process holds the retraining lock."""
    if _DATABASE_URL is None:
        raise RuntimeError("retrain_job runs inside `finsentry scheduler` (build_scheduler sets the database)")
    engine = make_engine(_DATABASE_URL)
    try:
        with engine.connect() as lock_conn:
            if not lock_conn.execute(select(func.pg_try_advisory_lock(RETRAIN_LOCK))).scalar():
                log.info("another re-fine-tuning run holds the lock; skipping")
                return None
            try:
                config = TrainConfig(epochs=epochs, max_examples_per_task=max_examples_per_task)
                return retrain_and_register(engine, Path(models_root), Path(default_dir), config)
            finally:
                lock_conn.execute(select(func.pg_advisory_unlock(RETRAIN_LOCK)))
    finally:
        engine.dispose()


def build_scheduler(
    database_url: str, interval_minutes: int, job_kwargs: dict[str, Any], blocking: bool = True
) -> BaseScheduler:
    from finsentry.db import sqlalchemy_url

    global _DATABASE_URL
    _DATABASE_URL = database_url
    kind = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = kind(
        jobstores={"default": SQLAlchemyJobStore(url=sqlalchemy_url(database_url), tablename="apscheduler_jobs")},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
    )
    scheduler.add_job(retrain_job, "interval", minutes=interval_minutes, id=JOB_ID, kwargs=job_kwargs,
                      replace_existing=True)
    return scheduler
