"""Initial schema: classified messages, trend windows, spike state, alerts and their outbox,
model versions, analysts' labels, and the analysts' views.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
NOW = sa.text("now()")

_HOURLY = """
        SELECT date_trunc('hour', window_start) AS hour, key AS {name},
               sum(n_messages) AS n_messages, sum(n_negative) AS n_negative,
               sum(n_neutral) AS n_neutral, sum(n_positive) AS n_positive,
               sum(sum_score) / NULLIF(sum(n_messages), 0) AS mean_score,
               sum(n_negative)::double precision / NULLIF(sum(n_messages), 0) AS negative_share
        FROM trend_windows WHERE series = 'live' AND dimension = '{dimension}'
        GROUP BY 1, 2"""

VIEWS = {
    "topic_sentiment_minute": """
        SELECT window_start, key AS topic, n_messages, n_negative, n_neutral, n_positive,
               sum_score / NULLIF(n_messages, 0) AS mean_score,
               n_negative::double precision / NULLIF(n_messages, 0) AS negative_share
        FROM trend_windows WHERE series = 'live' AND dimension = 'topic'""",
    "topic_sentiment_hour": _HOURLY.format(name="topic", dimension="topic"),
    "ticker_sentiment_hour": _HOURLY.format(name="ticker", dimension="ticker"),
    "source_sentiment_hour": _HOURLY.format(name="source", dimension="source"),
    "open_alerts": """
        SELECT id, dimension, key, window_start, severity, observed_share, baseline_share, volume, opened_at
        FROM alerts WHERE status = 'open' AND series = 'live'""",
}


def upgrade() -> None:
    op.create_table(
        "classified_messages",
        sa.Column("message_key", sa.Text, primary_key=True, comment="source:id, the idempotency key"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("published_at", TZ, nullable=False),
        sa.Column("window_start", TZ, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("author", sa.Text),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("topic_prob", sa.Double, nullable=False),
        sa.Column("sentiment", sa.String(16), nullable=False),
        sa.Column("p_negative", sa.Double, nullable=False),
        sa.Column("p_neutral", sa.Double, nullable=False),
        sa.Column("p_positive", sa.Double, nullable=False),
        sa.Column("sentiment_score", sa.Double, nullable=False),
        sa.Column("tickers", postgresql.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("kafka_topic", sa.Text, nullable=False),
        sa.Column("kafka_partition", sa.Integer, nullable=False),
        sa.Column("kafka_offset", sa.BigInteger, nullable=False),
        sa.Column("classified_at", TZ, nullable=False, server_default=NOW),
    )
    op.create_index("ix_classified_messages_topic_window", "classified_messages", ["topic", "window_start"])
    op.create_index("ix_classified_messages_published_at", "classified_messages", ["published_at"])

    op.create_table(
        "trend_windows",
        sa.Column("series", sa.Text, primary_key=True, server_default=sa.text("'live'")),
        sa.Column("dimension", sa.String(16), primary_key=True, comment="topic, ticker or source"),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("window_start", TZ, primary_key=True),
        sa.Column("window_seconds", sa.Integer, nullable=False),
        sa.Column("n_messages", sa.BigInteger, nullable=False),
        sa.Column("n_negative", sa.BigInteger, nullable=False),
        sa.Column("n_neutral", sa.BigInteger, nullable=False),
        sa.Column("n_positive", sa.BigInteger, nullable=False),
        sa.Column("sum_score", sa.Double, nullable=False),
        sa.Column("updated_at", TZ, nullable=False, server_default=NOW),
    )
    op.create_index("ix_trend_windows_window", "trend_windows", ["window_start"])

    op.create_table(
        "spike_state",
        sa.Column("series", sa.Text, primary_key=True),
        sa.Column("dimension", sa.String(16), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("state", postgresql.JSONB, nullable=False),
        sa.Column("last_window_start", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False, server_default=NOW),
    )

    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("series", sa.Text, nullable=False),
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("window_start", TZ, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, comment="open or resolved"),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("observed_share", sa.Double, nullable=False),
        sa.Column("baseline_share", sa.Double, nullable=False),
        sa.Column("baseline_std", sa.Double, nullable=False),
        sa.Column("volume", sa.BigInteger, nullable=False),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("opened_at", TZ, nullable=False, server_default=NOW),
        sa.Column("resolved_at", TZ),
        sa.Column("resolved_window_start", TZ, comment="event time of the window that resolved it"),
        sa.UniqueConstraint("series", "dimension", "key", "window_start", name="uq_alerts_key_window"),
    )

    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.BigInteger, sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("event", sa.String(16), nullable=False, comment="alert.opened or alert.resolved"),
        sa.Column("endpoint_url", sa.Text, nullable=False),
        sa.Column("webhook_id", sa.Text, nullable=False, unique=True),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", TZ, nullable=False, server_default=NOW),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", TZ),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["status", "next_attempt_at"])

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.BigInteger, sa.ForeignKey("alert_deliveries.id"), nullable=False),
        sa.Column("attempted_at", TZ, nullable=False, server_default=NOW),
        sa.Column("status_code", sa.Integer),
        sa.Column("latency_ms", sa.Double, nullable=False),
        sa.Column("error", sa.Text),
    )

    op.create_table(
        "model_versions",
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("parent", sa.Text),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("data_hash", sa.Text, nullable=False),
        sa.Column("metrics", postgresql.JSONB, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, comment="champion, challenger, rejected or retired"),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
        sa.Column("promoted_at", TZ),
    )

    op.create_table(
        "labels",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(16), nullable=False, comment="topic or sentiment"),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("analyst", sa.Text),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
        sa.UniqueConstraint("task", "text", name="uq_labels_task_text"),
    )

    # APScheduler's job store (its SQLAlchemyJobStore would otherwise create it itself).
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.String(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25)),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"])

    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for table in (
        "apscheduler_jobs", "labels", "model_versions", "delivery_attempts", "alert_deliveries", "alerts",
        "spike_state", "trend_windows", "classified_messages",
    ):
        op.drop_table(table)
