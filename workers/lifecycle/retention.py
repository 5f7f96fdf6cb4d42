"""Storage retention, run by the scheduler every hour (and by `finsentry retention`):

1. the day partitions of the next few days are created ahead, so that sinks rarely create one;
2. message partitions older than FINSENTRY_MESSAGE_RETENTION_DAYS and text partitions older than
   FINSENTRY_TEXT_RETENTION_DAYS are detached and dropped whole (constant time, no dead rows);
3. minute trend windows older than FINSENTRY_MINUTE_TREND_RETENTION_DAYS are deleted (the hourly and
   daily roll-ups keep their counts), and so are the detector's per-window diversity rows.

Classifications and trends outlive the texts; roll-ups outlive the minute windows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from config.settings import Horizons
from schemas.tables import day_partition
from workers.lifecycle import partitions
from workers.services.db import pooled

log = logging.getLogger(__name__)

DAYS_AHEAD = 3

_DELETE_MINUTES = """
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE window_start < %(before)s LIMIT %(batch)s))
"""
MINUTE_TABLES = ("trend_windows", "window_diversity")


@dataclass(frozen=True)
class RetentionRun:
    """What one run did: partitions created and dropped (names), minute windows deleted, the day
    partitions left for a later run because a lock was not granted in time, and the seconds spent
    dropping partitions and deleting minute windows."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    minute_windows_deleted: int = 0
    busy: list[str] = field(default_factory=list)
    drop_seconds: float = 0.0
    minute_seconds: float = 0.0


def apply_retention(engine: Engine, horizons: Horizons, now: datetime, days_ahead: int = DAYS_AHEAD,
                    minute_batch: int = 50_000) -> RetentionRun:
    """One retention run as of `now` (the scheduler passes the current time; tests and the growth bench
    pass their own)."""
    created: list[str] = []
    dropped: list[str] = []
    busy: list[str] = []
    with pooled(engine) as raw:
        if days_ahead >= 0:
            created = [day_partition(t, d) for t, d in partitions.create_ahead(raw, now.date(), days_ahead)]
        clock = time.perf_counter()
        for table, oldest in (("message_texts", horizons.oldest_text(now)),
                              ("classified_messages", horizons.oldest_message(now))):
            if oldest is None:
                continue
            for day in partitions.droppable(partitions.existing_days(raw, table), oldest):
                (dropped if partitions.drop_day(raw, table, day) else busy).append(day_partition(table, day))
        drop_seconds, clock = time.perf_counter() - clock, time.perf_counter()
        deleted = 0
        oldest_minute = horizons.oldest_minute_window(now)
        for table in MINUTE_TABLES if oldest_minute is not None else ():
            while True:
                done = raw.execute(_DELETE_MINUTES.format(table=table),
                                   {"before": oldest_minute, "batch": minute_batch}).rowcount
                raw.commit()
                deleted += done if table == "trend_windows" else 0
                if done < minute_batch:
                    break
        minute_seconds = time.perf_counter() - clock
    if dropped or deleted:
        log.info("retention: dropped %s; deleted %d minute windows", ", ".join(dropped) or "no partition", deleted)
    return RetentionRun(created, dropped, deleted, busy, drop_seconds, minute_seconds)
