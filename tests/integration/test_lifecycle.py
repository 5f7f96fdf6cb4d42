"""Re-fine-tuning: the scheduler's job store survives a restart, and a run registers a version."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from finsentry.settings import DEFAULT_MODEL_DIR
from models.artifacts import verify_artifact
from tests.integration.helpers import scalar, wait_for
from workers.scheduler import JOB_ID, build_scheduler

pytestmark = pytest.mark.integration


def test_scheduled_run_trains_evaluates_and_registers(database_url, engine, tmp_path):  # type: ignore[no-untyped-def]
    kwargs = {"models_root": str(tmp_path / "models"), "default_dir": str(DEFAULT_MODEL_DIR),
              "epochs": 1.0, "max_examples_per_task": 16}
    first = build_scheduler(database_url, 60, kwargs, blocking=False)
    first.start()
    assert scalar(engine, "SELECT count(*) FROM apscheduler_jobs WHERE id = :id", id=JOB_ID) == 1
    first.shutdown()

    # A restarted scheduler finds the stored job; run it now.
    second = build_scheduler(database_url, 60, kwargs, blocking=False)
    second.start()
    try:
        assert [job.id for job in second.get_jobs()] == [JOB_ID]
        second.modify_job(JOB_ID, next_run_time=datetime.now(timezone.utc))
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM model_versions") >= 1, timeout_s=240,
                 what="a registered model version")
    finally:
        second.shutdown(wait=True)

    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM model_versions")).mappings().one()
    # A 16-example, 1-epoch challenger cannot beat the shipped model: the gate rejects it.
    assert row["status"] == "rejected"
    assert "macro-F1" in row["reason"]
    assert set(row["metrics"]) == {"topic", "sentiment"}
    assert verify_artifact(tmp_path / "models" / row["version"]) == row["version"]
