"""Day partitions of classified_messages and message_texts: created ahead and on demand, dropped whole.

Each table has one partition per UTC day of publication (`schemas.tables.day_partition`). The scheduler
creates them a few days ahead (`create_ahead`); a sink whose batch needs a day that has none creates it
in its own transaction (`lock_days`); retention detaches and drops the days past their horizon
(`drop_day`). There is no DEFAULT partition: a row with no partition is an error, never a silent catch-all.

Concurrency, with two transaction-level advisory locks per (table, day):
- the day lock: a writer takes it shared for every (table, day) it writes, before it checks that the
  partition exists, and keeps it until it commits; dropping the partition takes it exclusively. So a
  partition never disappears between a writer's check and its write;
- the create lock, taken exclusively to create the partition: two writers that both need a new day
  create it once (the second waits, then finds it), and neither waits for the other's day lock.
Creating a partition takes an ACCESS EXCLUSIVE lock on the parent for the rest of the transaction; the
scheduler's ahead creation keeps that off the sinks' path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg

from config.settings import Horizons
from schemas.tables import DAY_PARTITIONED, day_partition, partition_day

log = logging.getLogger(__name__)

DAY_LOCK = 7_310_023  # the advisory locks' first key, + the table's index in DAY_PARTITIONED; the second is the day
CREATE_LOCK = 7_310_033
EPOCH_DAY = date(1970, 1, 1)
_DAY_US = 86_400 * 1_000_000

_LOCK_AND_FIND_MISSING = """
SELECT t, d FROM unnest(%(tables)s::text[], %(keys)s::int4[], %(days)s::int4[]) AS u(t, k, d),
     LATERAL pg_advisory_xact_lock_shared(k, d) AS locked
WHERE to_regclass(t || '_p' || to_char(date '1970-01-01' + d, 'YYYYMMDD')) IS NULL
ORDER BY k, d
"""


def day_of_us(published_us: int) -> int:
    """The UTC day of a time in Unix microseconds, as days since 1970-01-01."""
    return published_us // _DAY_US


def to_date(day: int) -> date:
    return EPOCH_DAY + timedelta(days=day)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _lock_key(table: str, base: int = DAY_LOCK) -> int:
    return base + DAY_PARTITIONED.index(table)


def create_sql(table: str, day: date) -> str:
    """The statement that creates `table`'s partition for `day` (bounds in UTC, whatever the session's zone)."""
    return (f"CREATE TABLE IF NOT EXISTS {day_partition(table, day)} PARTITION OF {table} "
            f"FOR VALUES FROM ('{day_start(day).isoformat()}') TO ('{day_start(day + timedelta(days=1)).isoformat()}')")


def lock_days(cur: psycopg.Cursor[Any], wanted: Iterable[tuple[str, int]]) -> list[tuple[str, date]]:
    """In the caller's transaction: take the shared lock of each (table, day) to be written and create the
    partitions that are missing; returns those created."""
    pairs = sorted(set(wanted))
    if not pairs:
        return []
    cur.execute(_LOCK_AND_FIND_MISSING, {"tables": [t for t, _ in pairs], "keys": [_lock_key(t) for t, _ in pairs],
                                         "days": [d for _, d in pairs]})
    missing = [(str(t), int(d)) for t, d in cur.fetchall()]
    created = []
    for table, day in missing:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_lock_key(table, CREATE_LOCK), day))
        cur.execute(create_sql(table, to_date(day)))
        created.append((table, to_date(day)))
    if created:
        log.info("created day partitions %s", ", ".join(day_partition(t, d) for t, d in created))
    return created


def create_ahead(raw: psycopg.Connection[Any], today: date, days_ahead: int,
                 lock_timeout_s: float = 5.0) -> list[tuple[str, date]]:
    """The partitions of today .. today + days_ahead, each table and day in its own short transaction.
    Creating one waits for the parent's ACCESS EXCLUSIVE lock, and writers queue behind that wait: after
    `lock_timeout_s` it gives up (a long query holds the table) and the next run tries again."""
    created: list[tuple[str, date]] = []
    for offset in range(days_ahead + 1):
        day = (today - EPOCH_DAY).days + offset
        for table in DAY_PARTITIONED:
            try:
                with raw.cursor() as cur:
                    cur.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
                    made = lock_days(cur, [(table, day)])
                raw.commit()
                created += made
            except psycopg.errors.LockNotAvailable:
                raw.rollback()
                log.warning("retention: %s is busy; %s will be created at the next run", table,
                            day_partition(table, to_date(day)))
    return created


def existing_days(raw: psycopg.Connection[Any], table: str) -> list[date]:
    """The days that have a partition of `table`, oldest first."""
    rows = raw.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = %s::regclass", (table,)).fetchall()
    raw.commit()
    days = []
    for (name,) in rows:
        parsed = partition_day(str(name))
        if parsed is None:
            log.warning("%s is a partition of %s that finsentry did not name; retention leaves it", name, table)
            continue
        days.append(parsed[1])
    return sorted(days)


def droppable(days: Iterable[date], oldest_kept: datetime) -> list[date]:
    """The days wholly older than `oldest_kept` (the horizon's oldest accepted publication time) by at
    least `Horizons.DROP_MARGIN`: those no message that passed validation can still be written to."""
    cutoff = oldest_kept - Horizons.DROP_MARGIN
    return [d for d in days if day_start(d + timedelta(days=1)) <= cutoff]


def drop_day(raw: psycopg.Connection[Any], table: str, day: date, lock_timeout_s: float = 10.0) -> bool:
    """Detach and drop one day's partition in one transaction; False when a lock was not granted within
    the timeout (a long query holds the table: the next run tries again)."""
    name = day_partition(table, day)
    try:
        with raw.cursor() as cur:
            cur.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_lock_key(table), (day - EPOCH_DAY).days))
            cur.execute("SELECT to_regclass(%s)", (name,))
            row = cur.fetchone()
            if row is not None and row[0] is not None:  # None: another scheduler dropped it first
                cur.execute(f"ALTER TABLE {table} DETACH PARTITION {name}")
                cur.execute(f"DROP TABLE {name}")
        raw.commit()
    except psycopg.errors.LockNotAvailable:
        raw.rollback()
        log.warning("retention: %s is busy; it will be dropped at the next run", name)
        return False
    return True
