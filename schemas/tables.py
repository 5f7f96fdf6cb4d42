"""Postgres tables (SQLAlchemy 2 Core). Alembic migrations create them; nothing else does, but for the day
partitions of the two partitioned tables, which `workers.lifecycle.partitions` creates (ahead by the
scheduler, on demand by the sink) and drops (retention)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

# Stored messages and their texts are partitioned by day of publication (UTC), one partition per day
# (`day_partition`), so that retention drops whole days. The publication time is part of the primary
# key: it comes from the message, so a replay of a stored message finds its row.
DAY_PARTITIONED = ("classified_messages", "message_texts")
_DAY_PARTITION = re.compile(r"^(classified_messages|message_texts)_p(\d{8})$")


def day_partition(table: str, day: date) -> str:
    """The name of `table`'s partition for one UTC day: classified_messages_p20260105."""
    return f"{table}_p{day:%Y%m%d}"


def partition_day(name: str) -> tuple[str, date] | None:
    """(table, day) of a day partition's name; None for any other name."""
    found = _DAY_PARTITION.match(name)
    if found is None:
        return None
    return found.group(1), datetime.strptime(found.group(2), "%Y%m%d").date()


classified_messages = Table(
    "classified_messages",
    metadata,
    Column("message_key", Text, primary_key=True, comment="source:id, the idempotency key"),
    Column("kind", String(16), nullable=False),
    Column("source", Text, nullable=False),
    Column("external_id", Text, nullable=False),
    Column("published_at", DateTime(timezone=True), primary_key=True, comment="the partition key (a day each)"),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("language", String(16), nullable=False),
    Column("topic", Text, nullable=False),
    Column("topic_prob", Double, nullable=False),
    Column("sentiment", String(16), nullable=False),
    Column("p_negative", Double, nullable=False),
    Column("p_neutral", Double, nullable=False),
    Column("p_positive", Double, nullable=False),
    Column("sentiment_score", Double, nullable=False),
    Column("tickers", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("model_version", Text, nullable=False),
    Column("kafka_topic", Text, nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("story_id", BigInteger, comment="near-duplicate texts share one (workers/pipeline/stories.py)"),
    Column("author_key", BigInteger, comment="a hash of (source, author); NULL when the feed names none"),
    Column("series", Text, nullable=False, server_default=text("'live'"),
           comment="the trend series whose worker stored it (a demo's messages are not live ones)"),
    Column("classified_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_classified_messages_topic_window", "topic", "window_start"),
    Index("ix_classified_messages_window", "window_start"),
    Index("ix_classified_messages_model_version", "model_version", "classified_at"),
    postgresql_partition_by="RANGE (published_at)",
)

# What privacy retention removes, kept apart so that it is dropped by day sooner than the message.
# The analyst role cannot read it.
message_texts = Table(
    "message_texts",
    metadata,
    Column("message_key", Text, primary_key=True),
    Column("published_at", DateTime(timezone=True), primary_key=True),
    Column("text", Text, nullable=False, comment="social posts: e-mails and phone numbers masked"),
    Column("url", Text),
    Column("author", Text),
    postgresql_partition_by="RANGE (published_at)",
)

# The additive counts of a trend row. The sink adds each flush's deltas to every resolution (minute
# windows, hours, days) in one transaction, so each resolution counts a message exactly once; another
# additive count is one more name here, one more column in the three tables and its delta.
TREND_COUNTS = ("n_messages", "n_negative", "n_neutral", "n_positive", "sum_score")


def _trend_counts() -> list[Column[Any]]:
    return [Column(name, Double if name.startswith("sum_") else BigInteger, nullable=False) for name in TREND_COUNTS]


# One row per (series, dimension, key, window). Counts are added to, never overwritten, so several
# workers writing the same window add up; idempotency comes from classified_messages' primary key.
# Kept for FINSENTRY_MINUTE_TREND_RETENTION_DAYS; the detector reads these.
trend_windows = Table(
    "trend_windows",
    metadata,
    Column("series", Text, primary_key=True, server_default=text("'live'")),
    Column("dimension", String(16), primary_key=True, comment="topic, ticker or source"),
    Column("key", Text, primary_key=True),
    Column("window_start", DateTime(timezone=True), primary_key=True),
    Column("window_seconds", Integer, nullable=False),
    *_trend_counts(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_trend_windows_window", "window_start"),
)


def _rollup(name: str, period: str) -> Table:
    return Table(
        name,
        metadata,
        Column("series", Text, primary_key=True),
        Column("dimension", String(16), primary_key=True, comment="topic, ticker or source"),
        Column("key", Text, primary_key=True),
        Column("window_start", DateTime(timezone=True), primary_key=True, comment=f"the {period}'s start (UTC)"),
        *_trend_counts(),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        comment=f"trend_windows rolled up by {period}, kept for ever",
    )


trend_hourly = _rollup("trend_hourly", "hour")
trend_daily = _rollup("trend_daily", "day")
ROLLUPS = ((trend_hourly, 3600), (trend_daily, 86400))  # each with its period in seconds

# The detector's per-key state: EWMA baseline of negative share, and the open episode if any.
spike_state = Table(
    "spike_state",
    metadata,
    Column("series", Text, primary_key=True),
    Column("dimension", String(16), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("state", JSONB, nullable=False),
    Column("last_window_start", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Per series and input partition, the newest window a committed batch wrote: the detector's watermark.
ingest_progress = Table(
    "ingest_progress",
    metadata,
    Column("series", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("series", Text, nullable=False),
    Column("dimension", String(16), nullable=False),
    Column("key", Text, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False, comment="open or resolved"),
    Column("severity", String(16), nullable=False),
    Column("observed_share", Double, nullable=False),
    Column("baseline_share", Double, nullable=False),
    Column("baseline_std", Double, nullable=False),
    Column("volume", BigInteger, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_window_start", DateTime(timezone=True), comment="event time of the window that resolved it"),
    Column("kind", String(16), nullable=False, server_default=text("'sentiment'"),
           comment="sentiment (a negative spike) or coordinated (a burst of few stories or accounts)"),
    UniqueConstraint("series", "dimension", "key", "kind", "window_start", name="uq_alerts_key_kind_window"),
)

# Per closed window of a watched key, what its messages were worth to detection, written by the
# detector as it steps the window: distinct stories and authors, the effective counts the sentiment
# CUSUM ran on (a story once, an author's stories capped) and the excess beyond them. The trend tables
# keep every message; this says how many of them were independent. Kept as long as the minute windows.
window_diversity = Table(
    "window_diversity",
    metadata,
    Column("series", Text, primary_key=True),
    Column("dimension", String(16), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("window_start", DateTime(timezone=True), primary_key=True),
    Column("n_messages", BigInteger, nullable=False),
    Column("n_stories", BigInteger, nullable=False),
    Column("n_authors", BigInteger, nullable=False),
    Column("n_effective", BigInteger, nullable=False),
    Column("n_effective_negative", BigInteger, nullable=False),
    Column("excess", BigInteger, nullable=False, comment="messages beyond the effective count"),
    Column("coordinated", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_window_diversity_window", "window_start"),
)

# The outbox: one row per (alert event, receiver), written in the detector's transaction.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("alert_id", BigInteger, ForeignKey("alerts.id"), nullable=False),
    Column("event", String(32), nullable=False,
           comment="alert.opened, alert.resolved, coordinated.opened or coordinated.resolved"),
    Column("endpoint_url", Text, nullable=False),
    Column("webhook_id", Text, nullable=False),  # the alert event's id: the same for each of its receivers
    Column("payload", JSONB, nullable=False),
    Column("status", String(16), nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
    UniqueConstraint("webhook_id", "endpoint_url", name="uq_alert_deliveries_event_endpoint"),
)

# Which messages a backfill series has counted, so that re-running a backfill changes nothing.
backfill_seen = Table(
    "backfill_seen",
    metadata,
    Column("series", Text, primary_key=True),
    Column("message_key", Text, primary_key=True),
)

# Receivers that answered 410 Gone: nothing more is sent to them until an operator clears the row.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("url", Text, primary_key=True),
    Column("disabled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("reason", Text, nullable=False),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("delivery_id", BigInteger, ForeignKey("alert_deliveries.id"), nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status_code", Integer),
    Column("latency_ms", Double, nullable=False),
    Column("error", Text),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("version", Text, primary_key=True),
    Column("parent", Text),
    Column("path", Text, nullable=False),
    Column("data_hash", Text, nullable=False),
    Column("metrics", JSONB, nullable=False),
    Column("status", String(16), nullable=False, comment="champion, challenger, rejected, retired or rolled_back"),
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("promoted_at", DateTime(timezone=True)),
    Column("evaluation", JSONB, comment="champion's metrics on the same sets, held-back corrections"),
    Index("uq_model_versions_one_champion", text("(true)"), unique=True,
          postgresql_where=text("status = 'champion'")),
)

drift_checks = Table(
    "drift_checks",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("checked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("model_version", Text, nullable=False),
    Column("reference_n", Integer, nullable=False),
    Column("recent_n", Integer, nullable=False),
    Column("topic_js", Double, nullable=False, comment="Jensen-Shannon divergence (base 2) of topic shares"),
    Column("sentiment_js", Double, nullable=False),
    Column("confidence_drop", Double, nullable=False, comment="reference minus recent mean topic probability"),
    Column("drifted", Boolean, nullable=False),
    Column("triggered_training", Boolean, nullable=False),
)

labels = Table(
    "labels",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("task", String(16), nullable=False, comment="topic or sentiment"),
    Column("text", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("analyst", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("task", "text", name="uq_labels_task_text"),
)

# APScheduler's SQLAlchemyJobStore table, created here so that only migrations create tables.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    metadata,
    Column("id", String(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
