"""The Postgres sink: one transaction per flush stores classified messages and adds to the trends.

How a flush is written (one transaction):
1. the shared lock of each (table, day) the rows go to is taken, and a day partition that does not
   exist yet is created (`partitions.lock_days`; the scheduler normally creates them ahead);
2. the rows go in by binary `COPY` (psycopg 3's copy protocol), in key order:
   - straight into `classified_messages` and their texts into `message_texts`. That is the common case,
     every message new, and it costs what a plain COPY costs;
   - when a key is already stored (a replay after a crash, a rebalance, a second writer), that COPY
     fails on the primary key and the transaction is rolled back; the rows are then copied into a
     staging table and inserted from there with `ON CONFLICT DO NOTHING RETURNING message_key`, which
     names the rows this transaction stored (and only their texts are stored). After such a flush the
     sink takes the staging path directly until a flush finds every message new again.
   A text is stored only while it is within the text horizon (`Horizons.oldest_text`), so a late
   message never recreates a text partition that retention dropped;
3. the trend deltas of the rows stored (`stages.trend_deltas`: topic, source and each ticker per
   window) are copied into a second staging table and added, by one statement, to the minute windows
   (`trend_windows`), the hourly and the daily roll-ups, and per input partition the newest window of the
   flush is recorded (`ingest_progress`: the detector closes a window only once every active partition
   has passed it). Every delta row is inserted or added to, so the deltas are the (dimension, key,
   window) rows the flush touched. A window older than the minute horizon is counted in the roll-ups
   only (retention has deleted, or is about to delete, its minute row).

Idempotency: classified_messages' primary key is (message key, publication time), both from the message,
and only rows this transaction inserted contribute to the deltas, so a replayed message changes no count
at any resolution, and several workers adding to the same window add up. A replay is recognised as long
as its day is stored: validation dead-letters messages older than the message horizon. Rows and windows
are written in key order, so concurrent writers take their locks in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any, NoReturn

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import PoolProxiedConnection

from config.settings import Horizons
from schemas.errors import RetryableError
from schemas.tables import ROLLUPS, TREND_COUNTS
from workers.lifecycle import partitions
from workers.pipeline import stages
from workers.pipeline.stages import EPOCH, Columns, Touched, Windowed
from workers.services.db import driver, pooled

STAGING = "finsentry_staging"
# classified_messages' columns as COPY sends them, and message_texts' (what privacy retention removes).
MESSAGE_COLUMNS = ("message_key", "kind", "source", "external_id", "published_at", "language", "topic", "topic_prob",
                   "sentiment", "p_negative", "p_neutral", "p_positive", "sentiment_score", "tickers",
                   "model_version", "kafka_topic", "kafka_partition", "kafka_offset", "story_id", "author_key",
                   "series", "window_start")
TEXT_COLUMNS = ("message_key", "published_at", "text", "url", "author")
_COLS = ", ".join(MESSAGE_COLUMNS)
_TEXT_COLS = ", ".join(TEXT_COLUMNS)
# Binary COPY (about twice the rows/s of text COPY here): how each column is sent. The timestamptz
# columns go as int8: Postgres' binary form of a timestamptz is exactly that, microseconds since
# 2000-01-01 UTC, and psycopg's datetime dumper costs 2.7 us a value here, against 0.3 us for the
# integer arithmetic (`sorted_records`).
COPY_TYPES = ("text", "text", "text", "text", "int8", "text", "text", "float8", "text", "float8", "float8", "float8",
              "float8", "text[]", "text", "text", "int4", "int8", "int8", "int8", "text", "int8")
TEXT_COPY_TYPES = ("text", "int8", "text", "text", "text")
_PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 UTC in Unix microseconds

# The staging table holds a message row followed by its text columns.
_CREATE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT {', '.join('m.' + c for c in MESSAGE_COLUMNS)}, t.text, t.url, t.author "
    "FROM classified_messages m, message_texts t WITH NO DATA"
)
_INSERT_STAGED = f"""
WITH stored AS (
    INSERT INTO classified_messages ({_COLS}) SELECT {_COLS} FROM {STAGING} ORDER BY message_key
    ON CONFLICT DO NOTHING RETURNING message_key, published_at
), texts AS (
    INSERT INTO message_texts ({_TEXT_COLS})
    SELECT {', '.join('s.' + c for c in TEXT_COLUMNS)} FROM {STAGING} s JOIN stored USING (message_key, published_at)
    WHERE s.published_at >= %(oldest_text)s ORDER BY s.message_key ON CONFLICT DO NOTHING
)
SELECT message_key FROM stored
"""
# A backfill records only which keys its series has counted; the live messages stay as they are.
_MARK_SEEN = (
    "INSERT INTO backfill_seen (series, message_key) SELECT %(series)s, k FROM unnest(%(keys)s::text[]) AS k "
    "ORDER BY k ON CONFLICT DO NOTHING RETURNING message_key"
)

# The deltas arrive by COPY into a staging table (a third of the time of array parameters here), the
# newest window per input partition as arrays; windows in epoch seconds.
DELTAS = "finsentry_trend_deltas"
_DELTA_COLUMNS = "dimension, key, window_epoch, n_messages, n_negative, n_neutral, n_positive, sum_score"
_DELTA_TYPES = ("text", "text", "int8", "int8", "int8", "int8", "int8", "float8")
_CREATE_DELTAS = (
    f"CREATE TEMP TABLE IF NOT EXISTS {DELTAS} (dimension text, key text, window_epoch int8, n_messages int8, "
    "n_negative int8, n_neutral int8, n_positive int8, sum_score float8) ON COMMIT DELETE ROWS"
)
_COUNTS = ", ".join(TREND_COUNTS)
_ADD_COUNTS = ", ".join(f"{c} = t.{c} + excluded.{c}" for c in TREND_COUNTS)


def _rollup_upsert(table: str, period_s: int) -> str:
    """Add the deltas, summed per period, to a roll-up table (a CTE of `_ADD_TRENDS`)."""
    period = f"window_epoch / {period_s} * {period_s}"
    return f"""{table}_added AS (
    INSERT INTO {table} AS t (series, dimension, key, window_start, {_COUNTS})
    SELECT %(series)s, dimension, key, to_timestamp({period}), {', '.join(f'sum({c})' for c in TREND_COUNTS)}
    FROM {DELTAS} GROUP BY dimension, key, {period} ORDER BY 2, 3, 4
    ON CONFLICT (series, dimension, key, window_start) DO UPDATE SET {_ADD_COUNTS}, updated_at = now()
)"""


# One statement (one round trip): the minute windows, the progress and the roll-ups. Postgres runs the
# WITH statements after the main one, in the same order for every writer, each in key order, so that
# concurrent writers take their row locks in one order.
_ADD_TRENDS = f"""
WITH progress AS (
    INSERT INTO ingest_progress AS p (series, topic, partition, window_start)
    SELECT %(series)s, t, n, to_timestamp(w)
    FROM unnest(%(p_topic)s::text[], %(p_partition)s::int4[], %(p_window)s::int8[]) AS u(t, n, w) ORDER BY t, n
    ON CONFLICT (series, topic, partition) DO UPDATE SET
        window_start = greatest(p.window_start, excluded.window_start), updated_at = now()
), {", ".join(_rollup_upsert(table.name, period) for table, period in ROLLUPS)}
INSERT INTO trend_windows AS t (series, dimension, key, window_start, window_seconds, {_COUNTS})
SELECT %(series)s, dimension, key, to_timestamp(window_epoch), %(window_seconds)s, {_COUNTS}
FROM {DELTAS} WHERE window_epoch >= %(oldest_minute)s ORDER BY dimension, key, window_epoch
ON CONFLICT (series, dimension, key, window_start) DO UPDATE SET {_ADD_COUNTS}, updated_at = now()
"""


# A partition assigned to a worker that has written nothing of it yet: its progress row holds the
# detector's watermark at the epoch (no real window is older: decode refuses times before 1980) until
# its first batch, or until it has been idle for FINSENTRY_WATERMARK_IDLE_S. Assignment also makes an
# existing row active again, so a partition that moved holds the watermark while its new owner catches
# up. A partition found empty (the consumer reached its end before any message) is released at once.
_REGISTER_PARTITIONS = """
INSERT INTO ingest_progress AS p (series, topic, partition, window_start)
SELECT %(series)s, t, n, timestamptz 'epoch' FROM unnest(%(topics)s::text[], %(partitions)s::int4[]) AS u(t, n)
ORDER BY t, n
ON CONFLICT (series, topic, partition) DO UPDATE SET updated_at = now()
"""
_RELEASE_EMPTY = """
UPDATE ingest_progress SET updated_at = timestamptz 'epoch'
WHERE series = %(series)s AND window_start = timestamptz 'epoch'
  AND (topic, partition) IN (SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int4[]))
"""


def register_partitions(engine: Engine, series: str, inputs: list[tuple[str, int]]) -> None:
    """Record that these input partitions are being read, before their first batch is written."""
    _progress_statement(engine, _REGISTER_PARTITIONS, series, inputs)


def release_empty_partitions(engine: Engine, series: str, inputs: list[tuple[str, int]]) -> None:
    """These registered partitions turned out empty: they hold the watermark back no longer."""
    _progress_statement(engine, _RELEASE_EMPTY, series, inputs)


def _progress_statement(engine: Engine, statement: str, series: str, inputs: list[tuple[str, int]]) -> None:
    with pooled(engine) as raw:
        raw.execute(statement, {"series": series, "topics": [t for t, _ in inputs],
                                "partitions": [p for _, p in inputs]})
        raw.commit()


@dataclass(frozen=True)
class Written:
    """What one flush did: messages stored, the trend windows it added to, and whether some of its
    messages had been stored before."""

    stored: int
    touched: list[Touched]
    seen_before: bool


class BatchingSink:
    """add() batches, then flush() writes them in one transaction and returns how many messages were
    new; a flush that raises keeps them, so the caller can flush again. `touched`: the trend windows
    the last flush added to."""

    def __init__(self) -> None:
        self._batches: list[Columns] = []
        self.touched: list[Touched] = []

    def add(self, columns: Columns) -> None:
        if len(columns):
            self._batches.append(columns)

    def flush(self) -> int:
        if not self._batches:
            return 0
        stored = self.write(self._batches)
        self._batches = []
        return stored

    def write(self, batches: list[Columns]) -> int:
        raise NotImplementedError


class PostgresSink(BatchingSink):
    """The sink in this process. It keeps one connection of the engine's pool for itself (a checkout
    per flush would cost a pre-ping round trip), and drops it on any error; a failing database raises
    RetryableError. close() gives the connection back."""

    def __init__(self, engine: Engine, window_seconds: int, series: str = "live", horizons: Horizons = Horizons()):
        super().__init__()
        self.engine = engine
        self.window_seconds = window_seconds
        self.series = series
        self.horizons = horizons
        self.replaying = False  # the last flush met stored messages: expect more, skip the direct COPY
        self._held: PoolProxiedConnection | None = None

    def write(self, batches: list[Columns]) -> int:
        """One transaction for these batches (nothing kept on failure); returns how many were new."""
        try:
            written = write_on(self._connection(), batches, self.window_seconds, self.series,
                               direct=not self.replaying, horizons=self.horizons)
        except (DBAPIError, psycopg.Error) as err:
            self._failed(err)
        self.touched = written.touched
        self.replaying = written.seen_before
        return written.stored

    def connect(self) -> None:
        """Take and prepare the connection now rather than at the first flush."""
        try:
            self._connection()
        except (DBAPIError, psycopg.Error) as err:
            self._failed(err)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._held is None:
            self._held = self.engine.raw_connection()
            prepare_connection(driver(self._held))
        return driver(self._held)

    def _failed(self, err: DBAPIError | psycopg.Error) -> NoReturn:
        self._drop()
        if not _retryable(err):
            raise err
        raise RetryableError(f"database write failed: {err.__class__.__name__}: {err}") from err

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def _drop(self) -> None:
        """Forget the connection after an error: the next flush starts on a fresh one."""
        if self._held is not None:
            self._held.invalidate()
            self._held = None


def _retryable(err: DBAPIError | psycopg.Error) -> bool:
    """Connection-level errors (the server is unreachable, shutting down or starting up, often with no
    SQLSTATE) are always retried; other errors only when transient. The COPY runs on the driver's own
    connection, so psycopg's errors arrive unwrapped."""
    if isinstance(err, DBAPIError):
        if isinstance(err, OperationalError) or err.connection_invalidated:
            return True
        err_orig: Any = err.orig
    else:
        if isinstance(err, psycopg.OperationalError):
            return True
        err_orig = err
    # serialization failure, deadlock, connection errors, admin shutdown, cannot connect now
    code = getattr(err_orig, "sqlstate", None) or ""
    return code in {"40001", "40P01", "57P01", "57P02", "57P03"} or code.startswith("08")


def first_of_each_key(batches: list[Columns], window_seconds: int) -> list[Windowed]:
    """The batches with their windows, each key counted at its first occurrence in the flush only."""
    seen: set[str] = set()
    parts = []
    for columns in batches:
        keys = columns.message_key
        rows = None
        if seen.isdisjoint(keys) and len(set(keys)) == len(keys):
            seen.update(keys)
        else:
            rows = []
            for i, key in enumerate(keys):
                if key not in seen:
                    seen.add(key)
                    rows.append(i)
        parts.append(Windowed.of(columns, window_seconds, rows))
    return parts


def sorted_records(parts: list[Windowed], series: str = "live") -> list[tuple[Any, ...]]:
    """The counted rows of the parts, sorted by message key, each in `MESSAGE_COLUMNS` order followed by
    text, url and author (the staging table's order). The timestamps are integers in Postgres' own
    binary form (see COPY_TYPES)."""
    records: list[tuple[Any, ...]] = []
    for part in parts:
        c = part.columns
        rows = zip(c.message_key, c.kind, c.source, c.external_id, [us - _PG_EPOCH_US for us in c.published_us],
                   c.language, c.topic, c.topic_prob.tolist(), c.sentiment, c.probs[:, 0].tolist(),
                   c.probs[:, 1].tolist(), c.probs[:, 2].tolist(), c.sentiment_score.tolist(), c.tickers,
                   [c.model_version] * len(c), c.kafka_topic, c.kafka_partition, c.kafka_offset, c.story_id,
                   c.author_key, [series] * len(c), [w * 1_000_000 - _PG_EPOCH_US for w in part.windows], c.text,
                   c.url, c.author, strict=True)
        if part.rows is None:
            records += rows
        else:
            keep = set(part.rows)
            records += [r for i, r in enumerate(rows) if i in keep]
    records.sort(key=itemgetter(0))
    return records


_N = len(MESSAGE_COLUMNS)
_PUBLISHED = MESSAGE_COLUMNS.index("published_at")


def split_records(records: list[tuple[Any, ...]], oldest_text: datetime | None) -> tuple[list[tuple[Any, ...]],
                                                                                        list[tuple[Any, ...]]]:
    """`sorted_records` as the rows of classified_messages and of message_texts; a text published before
    `oldest_text` is left out (past its retention)."""
    messages = [r[:_N] for r in records]
    floor = -(2**63) if oldest_text is None else _pg_us(oldest_text)
    texts = [(r[0], r[_PUBLISHED], *r[_N:]) for r in records if r[_PUBLISHED] >= floor]
    return messages, texts


def _pg_us(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1) - _PG_EPOCH_US


def copy_rows(cur: psycopg.Cursor[Any], table: str, records: list[tuple[Any, ...]], columns: tuple[str, ...] = MESSAGE_COLUMNS,
              types: tuple[str, ...] = COPY_TYPES) -> None:
    """Binary COPY of rows (`columns` order, sent as `types`) into `table`."""
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for record in records:
            copy.write_row(record)


def copy_texts(cur: psycopg.Cursor[Any], table: str, records: list[tuple[Any, ...]]) -> None:
    copy_rows(cur, table, records, TEXT_COLUMNS, TEXT_COPY_TYPES)


def write_batch(
    engine: Engine, batches: list[Columns], window_seconds: int, series: str = "live", store_messages: bool = True,
) -> int:
    """Store new messages and add their trend deltas in one transaction; return how many were new.
    With store_messages=False (a backfill) only the series' seen keys and its trends are written."""
    return write_batches(engine, batches, window_seconds, series, store_messages).stored


def write_batches(
    engine: Engine, batches: list[Columns], window_seconds: int, series: str = "live", store_messages: bool = True,
    direct: bool = True, horizons: Horizons = Horizons(), now: datetime | None = None,
) -> Written:
    """`write_batch` on a connection of the engine's pool, returning what `write_on` returns."""
    with pooled(engine) as raw:
        prepare_connection(raw)
        return write_on(raw, batches, window_seconds, series, store_messages, direct, horizons, now)


def prepare_connection(raw: psycopg.Connection[Any]) -> None:
    """The session's staging tables (temporary, emptied at each commit), made once per connection."""
    raw.execute(_CREATE_STAGING)
    raw.execute(_CREATE_DELTAS)
    raw.commit()


def write_on(
    raw: psycopg.Connection[Any], batches: list[Columns], window_seconds: int, series: str = "live",
    store_messages: bool = True, direct: bool = True, horizons: Horizons = Horizons(), now: datetime | None = None,
) -> Written:
    """One flush on a prepared connection; returns how many messages were new, the trend windows it added
    to (none when every message was seen before) and whether some messages were stored before. With
    direct=False the rows skip the direct COPY and go through the staging table. `now` (default: the
    clock) places the text and minute-window horizons."""
    now = now or datetime.now(timezone.utc)
    oldest_text, oldest_minute = horizons.oldest_text(now), horizons.oldest_minute_window(now)
    parts = first_of_each_key(batches, window_seconds)
    with raw.cursor() as cur:
        stored = None
        if not store_messages:
            stored = _mark_seen(cur, parts, series)
        else:
            records = sorted_records(parts, series)
            days = _days(parts, oldest_text)
            if direct:
                try:  # on a stored key, roll back and take the staging path
                    partitions.lock_days(cur, days)
                    messages, texts = split_records(records, oldest_text)
                    copy_rows(cur, "classified_messages", messages)
                    copy_texts(cur, "message_texts", texts)
                    stored = parts
                except pg_errors.UniqueViolation:
                    raw.rollback()
            if stored is None:
                partitions.lock_days(cur, days)
                stored = _insert_staged(cur, parts, records, oldest_text)
        touched = _add_trends(cur, stored, stages.newest_windows(parts) if store_messages else {}, series,
                              window_seconds, oldest_minute)
    raw.commit()
    count = sum(len(p.indices()) for p in stored)
    return Written(count, touched, seen_before=count < sum(len(p.indices()) for p in parts))


def _days(parts: list[Windowed], oldest_text: datetime | None) -> set[tuple[str, int]]:
    """The (table, day) partitions a flush writes to: a day for each message, and for its text when the
    day is within the text horizon."""
    days = {partitions.day_of_us(us) for p in parts for us in p.columns.published_us}
    first_text_day = -1 if oldest_text is None else partitions.day_of_us((oldest_text - EPOCH) // timedelta(microseconds=1))
    return {("classified_messages", d) for d in days} | {("message_texts", d) for d in days if d >= first_text_day}


def _insert_staged(cur: psycopg.Cursor[Any], parts: list[Windowed], records: list[tuple[Any, ...]],
                   oldest_text: datetime | None) -> list[Windowed]:
    """COPY into the staging table, insert what is new (and the texts of what is new); returns the parts
    narrowed to the rows inserted."""
    copy_rows(cur, STAGING, records, (*MESSAGE_COLUMNS, "text", "url", "author"), (*COPY_TYPES, "text", "text", "text"))
    cur.execute(_INSERT_STAGED, {"oldest_text": oldest_text or EPOCH})
    return _narrow(parts, {key for (key,) in cur.fetchall()})


def _mark_seen(cur: psycopg.Cursor[Any], parts: list[Windowed], series: str) -> list[Windowed]:
    keys = [p.columns.message_key[i] for p in parts for i in p.indices()]
    cur.execute(_MARK_SEEN, {"series": series, "keys": keys})
    return _narrow(parts, {key for (key,) in cur.fetchall()})


def _narrow(parts: list[Windowed], inserted: set[str]) -> list[Windowed]:
    return [p.narrowed([i for i in p.indices() if p.columns.message_key[i] in inserted]) for p in parts]


def _add_trends(cur: psycopg.Cursor[Any], stored: list[Windowed], newest: dict[tuple[str, int], int], series: str,
                window_seconds: int, oldest_minute: datetime | None = None) -> list[Touched]:
    deltas = stages.trend_deltas(stored)
    if not len(deltas) and not newest:
        return []
    with cur.copy(f"COPY {DELTAS} ({_DELTA_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_DELTA_TYPES)
        for delta in zip(deltas.dimension, deltas.key, deltas.window, deltas.n_messages, deltas.n_negative,
                         deltas.n_neutral, deltas.n_positive, deltas.sum_score, strict=True):
            copy.write_row(delta)
    floor = 0 if oldest_minute is None else int((oldest_minute - EPOCH).total_seconds())
    cur.execute(_ADD_TRENDS, {"series": series, "window_seconds": window_seconds, "p_topic": [t for t, _ in newest],
                              "p_partition": [p for _, p in newest], "p_window": list(newest.values()),
                              "oldest_minute": floor})
    # Every delta row is inserted or added to (the upsert has no condition): those are the windows touched;
    # a window past the minute horizon went to the roll-ups only.
    return [Touched(d, k, EPOCH + timedelta(seconds=w)) for d, k, w in zip(deltas.dimension, deltas.key, deltas.window,
                                                                           strict=True) if w >= floor]
