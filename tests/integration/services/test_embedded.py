"""The zero-config defaults: an embedded Postgres in a data folder, and the embedded broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy import text

from config.settings import Settings
from workers.services.db import make_engine, migrate
from workers.services.embedded import EmbeddedBroker, embedded_postgres, services

pytestmark = pytest.mark.integration


def test_embedded_postgres_starts_migrates_and_keeps_data(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    with embedded_postgres(data) as url:
        migrate(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO labels (task, text, label) VALUES ('sentiment', 'x', 'negative')"))
        engine.dispose()
    with embedded_postgres(data) as url:  # restarted on the same folder
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM labels")).scalar() == 1
        engine.dispose()


def test_configured_servers_start_nothing(broker: EmbeddedBroker, database_url: str, tmp_path: Path) -> None:
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, DATABASE_URL=database_url, data_dir=tmp_path)
    with services(settings) as (bootstrap, url):
        assert bootstrap == broker.bootstrap and url == database_url
    assert not (tmp_path / "postgres").exists() and not (tmp_path / "broker.log").exists()


def test_embedded_broker_stops_on_exit() -> None:
    with EmbeddedBroker() as running:
        assert AdminClient({"bootstrap.servers": running.bootstrap}).list_topics(timeout=5).topics is not None
        process = running._process
    assert process is not None and process.poll() is not None
