"""Shared fixtures. Integration tests use the real broker (embedded Tansu) and a real Postgres
(DATABASE_URL, or the local server at 127.0.0.1:5432); a missing service fails the test, never skips it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from config.settings import DEFAULT_MODEL_DIR, Settings
from models.classifier import Classifier
from workers.services.db import make_engine, migrate, sqlalchemy_url
from workers.services.embedded import EmbeddedBroker

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fuzz run (marker `fuzz`) runs only when the -m expression names it (`pytest -m fuzz`): a plain
    `pytest`, or `-m "not faults"`, leaves it out."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    fuzz = [item for item in items if item.get_closest_marker("fuzz")]
    if fuzz:
        config.hook.pytest_deselected(items=fuzz)
        items[:] = [item for item in items if not item.get_closest_marker("fuzz")]


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    return Classifier(DEFAULT_MODEL_DIR, device="cpu", forward_batch_size=64)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database on the real server, migrated to head, dropped afterwards."""
    server = make_url(sqlalchemy_url(os.environ.get("DATABASE_URL", LOCAL_POSTGRES)))
    name = f"finsentry_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """One database for the session; tests keep apart by topic, group and trend series."""
    with scratch_database() as url:
        yield url


@pytest.fixture
def own_database_url() -> Iterator[str]:
    """A database of the test's own, for state that is global to a database (the model registry)."""
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topics, groups and series, so tests never share state (Tansu fault (a))."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(unique: str, tmp_path: Path) -> Settings:
    return Settings(
        news_topic=f"news-{unique}", social_topic=f"social-{unique}", dead_letter_topic=f"dlq-{unique}",
        consumer_group=f"group-{unique}", topic_partitions=2, trend_series=f"test-{unique}",
        touched_topic=f"windows-{unique}", alerts_topic=f"alerts-{unique}", detector_app_id=f"detector-{unique}",
        micro_batch_size=64, micro_batch_timeout_s=0.2, forward_batch_size=32, data_dir=tmp_path,
        device="cpu", detector_metrics_port=0,
    )
