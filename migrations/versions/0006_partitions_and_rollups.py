"""Months of operation: messages and texts partitioned by day, hourly and daily trend roll-ups.

- classified_messages is partitioned by RANGE (published_at), one partition per UTC day, with the
  primary key (message_key, published_at). Its text, url and author move to message_texts, partitioned
  the same way, so that both retention horizons drop whole partitions. Every row is copied; texts that
  retention had already deleted (NULL) have nothing to copy.
- trend_hourly and trend_daily hold the same additive counts as trend_windows per hour and per day
  (UTC); they are filled here from the existing minute windows, then kept by the sink, which adds each
  flush's deltas to all three. The analysts' hour and day views read them, so they outlive the minute
  windows' retention. The analyst role reads the roll-ups and the views, and still neither messages
  nor texts.

The copy holds the table's ACCESS EXCLUSIVE lock and takes about as long as writing the table once:
stop the workers first.

Downgrade: not provided. 0005's schema computes the hour and day views from the minute windows, so
once minute windows have been deleted it cannot hold what the roll-ups hold; it raises.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ROLE = "finsentry_analyst"
TZ = sa.DateTime(timezone=True)
COUNTS = ("n_messages", "n_negative", "n_neutral", "n_positive", "sum_score")
MESSAGE_COLUMNS = (
    "message_key", "kind", "source", "external_id", "published_at", "window_start", "language", "topic", "topic_prob",
    "sentiment", "p_negative", "p_neutral", "p_positive", "sentiment_score", "tickers", "model_version",
    "kafka_topic", "kafka_partition", "kafka_offset", "classified_at",
)

_VIEW = """
        SELECT window_start AS {period}, key AS {name}, n_messages, n_negative, n_neutral, n_positive,
               sum_score / NULLIF(n_messages, 0) AS mean_score,
               n_negative::double precision / NULLIF(n_messages, 0) AS negative_share
        FROM {table} WHERE series = 'live' AND dimension = '{dimension}'"""
VIEWS = {
    f"{dimension}_sentiment_{period}": _VIEW.format(period=period, name=dimension, dimension=dimension,
                                                    table=f"trend_{period}ly" if period == "hour" else "trend_daily")
    for dimension in ("topic", "ticker", "source") for period in ("hour", "day")
}


def _counts() -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.Double if name.startswith("sum_") else sa.BigInteger, nullable=False) for name in COUNTS]


def _partition(table: str, day: date) -> None:
    """The day partition, as workers.lifecycle.partitions names and bounds it (frozen here)."""
    op.execute(f"CREATE TABLE {table}_p{day:%Y%m%d} PARTITION OF {table} "
               f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') TO ('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')")


def upgrade() -> None:
    # The 0005 table steps aside, without its indexes (their names are reused).
    op.rename_table("classified_messages", "classified_messages_0005")
    for index in ("topic_window", "published_at", "model_version", "retention"):
        op.execute(f"DROP INDEX IF EXISTS ix_classified_messages_{index}")

    op.create_table(
        "classified_messages",
        sa.Column("message_key", sa.Text, nullable=False, comment="source:id, the idempotency key"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("published_at", TZ, nullable=False, comment="the partition key (a day each)"),
        sa.Column("window_start", TZ, nullable=False),
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
        sa.Column("classified_at", TZ, nullable=False, server_default=sa.text("now()")),
        postgresql_partition_by="RANGE (published_at)",
    )
    op.create_table(
        "message_texts",
        sa.Column("message_key", sa.Text, nullable=False),
        sa.Column("published_at", TZ, nullable=False),
        sa.Column("text", sa.Text, nullable=False, comment="social posts: e-mails and phone numbers masked"),
        sa.Column("url", sa.Text),
        sa.Column("author", sa.Text),
        postgresql_partition_by="RANGE (published_at)",
    )
    days = [row[0] for row in op.get_bind().execute(sa.text(
        "SELECT DISTINCT (published_at AT TIME ZONE 'UTC')::date FROM classified_messages_0005 ORDER BY 1"))]
    for day in days:
        _partition("classified_messages", day)
        _partition("message_texts", day)
    # Rows first, then the keys and indexes (built once per partition rather than row by row).
    columns = ", ".join(MESSAGE_COLUMNS)
    op.execute(f"INSERT INTO classified_messages ({columns}) SELECT {columns} FROM classified_messages_0005")
    op.execute("INSERT INTO message_texts (message_key, published_at, text, url, author) "
               "SELECT message_key, published_at, text, url, author FROM classified_messages_0005 "
               "WHERE text IS NOT NULL")
    op.drop_table("classified_messages_0005")
    op.create_primary_key("classified_messages_pkey", "classified_messages", ["message_key", "published_at"])
    op.create_index("ix_classified_messages_topic_window", "classified_messages", ["topic", "window_start"])
    op.create_index("ix_classified_messages_model_version", "classified_messages", ["model_version", "classified_at"])
    op.create_primary_key("message_texts_pkey", "message_texts", ["message_key", "published_at"])

    for table, period in (("trend_hourly", "hour"), ("trend_daily", "day")):
        op.create_table(
            table,
            sa.Column("series", sa.Text, primary_key=True),
            sa.Column("dimension", sa.String(16), primary_key=True, comment="topic, ticker or source"),
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("window_start", TZ, primary_key=True, comment=f"the {period}'s start (UTC)"),
            *_counts(),
            sa.Column("updated_at", TZ, nullable=False, server_default=sa.text("now()")),
            comment=f"trend_windows rolled up by {period}, kept for ever",
        )
        sums = ", ".join(f"sum({name})" for name in COUNTS)
        op.execute(f"INSERT INTO {table} (series, dimension, key, window_start, {', '.join(COUNTS)}) "
                   f"SELECT series, dimension, key, date_trunc('{period}', window_start AT TIME ZONE 'UTC') "
                   f"AT TIME ZONE 'UTC', {sums} FROM trend_windows GROUP BY 1, 2, 3, 4")

    for name, body in VIEWS.items():
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(f"CREATE VIEW {name} AS {body}")
    op.execute(f"GRANT SELECT ON trend_hourly, trend_daily, {', '.join(VIEWS)} TO {ROLE}")


def downgrade() -> None:
    raise NotImplementedError(
        "0006 cannot be undone faithfully: 0005 computes the hour and day views from minute windows, which "
        "are deleted after their retention period while the roll-ups keep their counts. Restore a backup "
        "taken before the upgrade instead.")
