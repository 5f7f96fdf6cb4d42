"""Daily roll-up views, a read-only role for analysts, disabled webhook endpoints, backfill bookkeeping.

The role `finsentry_analyst` (NOLOGIN; grant it to analysts' login roles) can read the trend table,
the alerts and the views, and nothing else: not the stored texts, deliveries, labels or models.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROLE = "finsentry_analyst"

_ROLLUP = """
        SELECT date_trunc('day', window_start) AS day, key AS {name},
               sum(n_messages) AS n_messages, sum(n_negative) AS n_negative,
               sum(n_neutral) AS n_neutral, sum(n_positive) AS n_positive,
               sum(sum_score) / NULLIF(sum(n_messages), 0) AS mean_score,
               sum(n_negative)::double precision / NULLIF(sum(n_messages), 0) AS negative_share
        FROM trend_windows WHERE series = 'live' AND dimension = '{dimension}'
        GROUP BY 1, 2"""

VIEWS = {
    "topic_sentiment_day": _ROLLUP.format(name="topic", dimension="topic"),
    "ticker_sentiment_day": _ROLLUP.format(name="ticker", dimension="ticker"),
    "source_sentiment_day": _ROLLUP.format(name="source", dimension="source"),
}

READABLE = [
    "trend_windows", "alerts", "topic_sentiment_minute", "topic_sentiment_hour", "ticker_sentiment_hour",
    "source_sentiment_hour", "open_alerts", *VIEWS,
]


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("url", sa.Text, primary_key=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "backfill_seen",
        sa.Column("series", sa.Text, primary_key=True),
        sa.Column("message_key", sa.Text, primary_key=True),
    )
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")
    # Roles belong to the whole server: create it once, grant on this database.
    op.execute(f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} NOLOGIN;
            END IF;
        END $$""")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT SELECT ON {', '.join(READABLE)} TO {ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON {', '.join(READABLE)} FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("webhook_endpoints")
    op.drop_table("backfill_seen")
