"""The migrations and the table definitions agree, and the analysts' views answer."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from schemas.tables import metadata, partition_day
from tests.integration.helpers import day_partitions

pytestmark = pytest.mark.integration


def test_migrated_database_matches_the_table_definitions(engine) -> None:  # type: ignore[no-untyped-def]
    def include_name(name: str | None, type_: str, parent_names: object) -> bool:  # as migrations/env.py
        return not (type_ == "table" and name is not None and partition_day(name) is not None)

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": include_name}), metadata)
    assert diff == []


@pytest.mark.parametrize("view", ["topic_sentiment_minute", "topic_sentiment_hour", "ticker_sentiment_hour",
                                  "source_sentiment_hour", "open_alerts"])
def test_views_exist_and_answer(engine, view: str) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        conn.execute(text(f"SELECT * FROM {view} LIMIT 1")).all()


@pytest.mark.parametrize("view", ["topic_sentiment_day", "ticker_sentiment_day", "source_sentiment_day"])
def test_daily_rollups_answer(engine, view: str) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        conn.execute(text(f"SELECT * FROM {view} LIMIT 1")).all()


def test_analyst_role_reads_trends_and_alerts_and_nothing_else(engine) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    from sqlalchemy.exc import ProgrammingError

    day_partitions(engine, datetime(2031, 7, 7, tzinfo=timezone.utc))  # a partition must be as hidden as its table
    with engine.connect() as conn:
        conn.execute(text("SET ROLE finsentry_analyst"))
        for readable in ("trend_windows", "trend_hourly", "trend_daily", "alerts", "topic_sentiment_minute",
                         "topic_sentiment_hour", "ticker_sentiment_hour", "source_sentiment_hour", "topic_sentiment_day",
                         "ticker_sentiment_day", "source_sentiment_day", "open_alerts"):
            conn.execute(text(f"SELECT count(*) FROM {readable}")).scalar()
        conn.rollback()
        for hidden in ("classified_messages", "message_texts", "classified_messages_p20310707",
                       "message_texts_p20310707", "alert_deliveries", "labels", "model_versions", "drift_checks",
                       "delivery_attempts", "apscheduler_jobs"):
            conn.execute(text("SET ROLE finsentry_analyst"))
            with pytest.raises(ProgrammingError, match="permission denied"):
                conn.execute(text(f"SELECT count(*) FROM {hidden}"))
            conn.rollback()
        conn.execute(text("SET ROLE finsentry_analyst"))
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("INSERT INTO alerts (series, dimension, key, window_start, status, severity, "
                              "observed_share, baseline_share, baseline_std, volume, payload) VALUES "
                              "('x', 'topic', 'x', now(), 'open', 'low', 0, 0, 0, 0, '{}')"))
        conn.rollback()


def _grafana_sql(sql: str) -> str:
    """Expand the Grafana macros the dashboard uses into plain SQL."""
    import re

    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 BETWEEN now() - interval '7 days' AND now()", sql)
    return sql.replace("($topic)", "(SELECT DISTINCT topic FROM topic_sentiment_hour)")


def test_dashboard_queries_run_against_the_schema_as_the_analyst_role(engine) -> None:  # type: ignore[no-untyped-def]
    import json
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[3] / "deploy/grafana/dashboards/finsentry.json").read_text())
    queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [a["rawQuery"] for a in dashboard["annotations"]["list"]]
    queries += [v["query"] for v in dashboard["templating"]["list"]]
    assert len(queries) >= 6
    with engine.connect() as conn:
        conn.execute(text("SET ROLE finsentry_analyst"))
        for sql in queries:
            conn.execute(text(_grafana_sql(sql))).all()
        conn.rollback()
