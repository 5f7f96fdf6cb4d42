"""The migrations and the table definitions agree, and the analysts' views answer."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from schemas.tables import metadata

pytestmark = pytest.mark.integration


def test_migrated_database_matches_the_table_definitions(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


@pytest.mark.parametrize("view", ["topic_sentiment_minute", "topic_sentiment_hour", "ticker_sentiment_hour",
                                  "source_sentiment_hour", "open_alerts"])
def test_views_exist_and_answer(engine, view: str) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        conn.execute(text(f"SELECT * FROM {view} LIMIT 1")).all()
