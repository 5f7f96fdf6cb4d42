"""The Postgres sink: one transaction per flush stores classified messages and adds to trend windows.

How a flush is written (one transaction):
1. the rows go in by binary `COPY` (psycopg 3's copy protocol), in key order:
   - straight into `classified_messages`, as the transaction's first statement. That is the common
     case, every message new, and it costs what a plain COPY costs;
   - when a key is already stored (a replay after a crash, a rebalance, a second writer), that COPY
     fails on the primary key and the transaction is rolled back; the rows are then copied into a
     staging table and inserted from there with `ON CONFLICT DO NOTHING RETURNING message_key`, which
     names the rows this transaction stored. After such a flush the sink takes the staging path
     directly until a flush finds every message new again.
2. the trend deltas of the rows stored (`stages.trend_deltas`: topic, source and each ticker per
   window) are copied into a second staging table and added to `trend_windows` by one set-based
   upsert, which also records per input partition the newest window of the flush (`ingest_progress`:
   the detector closes a window only once every active partition has passed it). Every delta row is
   inserted or added to, so the deltas are the (dimension, key, window) rows the flush touched.

Idempotency: classified_messages' primary key is the message key, and only rows this transaction
inserted contribute to the deltas, so a replayed message changes no count, and several workers adding
to the same window add up. Rows and windows are written in key order, so concurrent writers take their
locks in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from operator import itemgetter
from typing import Any, NoReturn

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import PoolProxiedConnection

from schemas.errors import RetryableError
from workers.pipeline import stages
from workers.pipeline.stages import COLUMNS, EPOCH, Columns, Touched, Windowed

STAGING = "finsentry_staging"
_COPY_COLUMNS = (*COLUMNS, "window_start")
_COLS = ", ".join(_COPY_COLUMNS)
# Binary COPY (about twice the rows/s of text COPY here): how each of _COPY_COLUMNS is sent. The two
# timestamptz columns go as int8: Postgres' binary form of a timestamptz is exactly that, microseconds
# since 2000-01-01 UTC, and psycopg's datetime dumper costs 2.7 us a value here, against 0.3 us for the
# integer arithmetic (`sorted_records`).
COPY_TYPES = ("text", "text", "text", "text", "int8", "text", "text", "text", "text", "text", "float8", "text",
              "float8", "float8", "float8", "float8", "text[]", "text", "text", "int4", "int8", "int8")
_PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 UTC in Unix microseconds

_CREATE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT {_COLS} FROM classified_messages WITH NO DATA"
)
_INSERT_STAGED = (
    f"INSERT INTO classified_messages ({_COLS}) SELECT {_COLS} FROM {STAGING} ORDER BY message_key "
    "ON CONFLICT DO NOTHING RETURNING message_key"
)
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
_ADD_TRENDS = f"""
WITH progress AS (
    INSERT INTO ingest_progress AS p (series, topic, partition, window_start)
    SELECT %(series)s, t, n, to_timestamp(w)
    FROM unnest(%(p_topic)s::text[], %(p_partition)s::int4[], %(p_window)s::int8[]) AS u(t, n, w) ORDER BY t, n
    ON CONFLICT (series, topic, partition) DO UPDATE SET
        window_start = greatest(p.window_start, excluded.window_start), updated_at = now()
)
INSERT INTO trend_windows AS tw (series, dimension, key, window_start, window_seconds, n_messages,
                                 n_negative, n_neutral, n_positive, sum_score)
SELECT %(series)s, dimension, key, to_timestamp(window_epoch), %(window_seconds)s, n_messages, n_negative,
       n_neutral, n_positive, sum_score
FROM {DELTAS} ORDER BY dimension, key, window_epoch
ON CONFLICT (series, dimension, key, window_start) DO UPDATE SET
    n_messages = tw.n_messages + excluded.n_messages, n_negative = tw.n_negative + excluded.n_negative,
    n_neutral = tw.n_neutral + excluded.n_neutral, n_positive = tw.n_positive + excluded.n_positive,
    sum_score = tw.sum_score + excluded.sum_score, updated_at = now()
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


def register_partitions(engine: Engine, series: str, partitions: list[tuple[str, int]]) -> None:
    """Record that these input partitions are being read, before their first batch is written."""
    _progress_statement(engine, _REGISTER_PARTITIONS, series, partitions)


def release_empty_partitions(engine: Engine, series: str, partitions: list[tuple[str, int]]) -> None:
    """These registered partitions turned out empty: they hold the watermark back no longer."""
    _progress_statement(engine, _RELEASE_EMPTY, series, partitions)


def _progress_statement(engine: Engine, statement: str, series: str, partitions: list[tuple[str, int]]) -> None:
    with _pooled(engine) as raw:
        raw.execute(statement, {"series": series, "topics": [t for t, _ in partitions],
                                "partitions": [p for _, p in partitions]})
        raw.commit()


@contextmanager
def _pooled(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection of the engine's pool for one piece of work; dropped if the work fails."""
    held = engine.raw_connection()
    try:
        yield _driver(held)
    except BaseException:
        held.invalidate()
        raise
    finally:
        held.close()


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

    def __init__(self, engine: Engine, window_seconds: int, series: str = "live"):
        super().__init__()
        self.engine = engine
        self.window_seconds = window_seconds
        self.series = series
        self.replaying = False  # the last flush met stored messages: expect more, skip the direct COPY
        self._held: PoolProxiedConnection | None = None

    def write(self, batches: list[Columns]) -> int:
        """One transaction for these batches (nothing kept on failure); returns how many were new."""
        try:
            written = write_on(self._connection(), batches, self.window_seconds, self.series,
                               direct=not self.replaying)
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
            prepare_connection(_driver(self._held))
        return _driver(self._held)

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


def _driver(held: PoolProxiedConnection) -> psycopg.Connection[Any]:
    raw = held.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


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


def sorted_records(parts: list[Windowed]) -> list[tuple[Any, ...]]:
    """The counted rows of the parts in `_COPY_COLUMNS` order, sorted by message key. The two timestamps
    are integers in Postgres' own binary form (see COPY_TYPES)."""
    records: list[tuple[Any, ...]] = []
    for part in parts:
        c = part.columns
        rows = zip(c.message_key, c.kind, c.source, c.external_id, [us - _PG_EPOCH_US for us in c.published_us],
                   c.text, c.url, c.author, c.language, c.topic, c.topic_prob.tolist(), c.sentiment,
                   c.probs[:, 0].tolist(), c.probs[:, 1].tolist(), c.probs[:, 2].tolist(), c.sentiment_score.tolist(),
                   c.tickers, [c.model_version] * len(c), c.kafka_topic, c.kafka_partition, c.kafka_offset,
                   [w * 1_000_000 - _PG_EPOCH_US for w in part.windows], strict=True)
        if part.rows is None:
            records += rows
        else:
            keep = set(part.rows)
            records += [r for i, r in enumerate(rows) if i in keep]
    records.sort(key=itemgetter(0))
    return records


def copy_rows(cur: psycopg.Cursor[Any], table: str, records: list[tuple[Any, ...]]) -> None:
    """Binary COPY of rows in `_COPY_COLUMNS` order into `table`."""
    with cur.copy(f"COPY {table} ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(COPY_TYPES)
        for record in records:
            copy.write_row(record)


def write_batch(
    engine: Engine, batches: list[Columns], window_seconds: int, series: str = "live", store_messages: bool = True,
) -> int:
    """Store new messages and add their trend deltas in one transaction; return how many were new.
    With store_messages=False (a backfill) only the series' seen keys and its trends are written."""
    return write_batches(engine, batches, window_seconds, series, store_messages).stored


def write_batches(
    engine: Engine, batches: list[Columns], window_seconds: int, series: str = "live", store_messages: bool = True,
    direct: bool = True,
) -> Written:
    """`write_batch` on a connection of the engine's pool, returning what `write_on` returns."""
    with _pooled(engine) as raw:
        prepare_connection(raw)
        return write_on(raw, batches, window_seconds, series, store_messages, direct)


def prepare_connection(raw: psycopg.Connection[Any]) -> None:
    """The session's staging tables (temporary, emptied at each commit), made once per connection."""
    raw.execute(_CREATE_STAGING)
    raw.execute(_CREATE_DELTAS)
    raw.commit()


def write_on(
    raw: psycopg.Connection[Any], batches: list[Columns], window_seconds: int, series: str = "live",
    store_messages: bool = True, direct: bool = True,
) -> Written:
    """One flush on a prepared connection; returns how many messages were new, the trend windows it added
    to (none when every message was seen before) and whether some messages were stored before. With
    direct=False the rows skip the direct COPY and go through the staging table."""
    parts = first_of_each_key(batches, window_seconds)
    with raw.cursor() as cur:
        stored = None
        if not store_messages:
            stored = _mark_seen(cur, parts, series)
        elif direct:
            try:  # the transaction's first statement: on a stored key, roll back and take the staging path
                copy_rows(cur, "classified_messages", sorted_records(parts))
                stored = parts
            except pg_errors.UniqueViolation:
                raw.rollback()
        if stored is None:
            stored = _insert_staged(cur, parts)
        touched = _add_trends(cur, stored, stages.newest_windows(parts) if store_messages else {}, series,
                              window_seconds)
    raw.commit()
    count = sum(len(p.indices()) for p in stored)
    return Written(count, touched, seen_before=count < sum(len(p.indices()) for p in parts))


def _insert_staged(cur: psycopg.Cursor[Any], parts: list[Windowed]) -> list[Windowed]:
    """COPY into the staging table, insert what is new; returns the parts narrowed to the rows inserted."""
    copy_rows(cur, STAGING, sorted_records(parts))
    cur.execute(_INSERT_STAGED)
    return _narrow(parts, {key for (key,) in cur.fetchall()})


def _mark_seen(cur: psycopg.Cursor[Any], parts: list[Windowed], series: str) -> list[Windowed]:
    keys = [p.columns.message_key[i] for p in parts for i in p.indices()]
    cur.execute(_MARK_SEEN, {"series": series, "keys": keys})
    return _narrow(parts, {key for (key,) in cur.fetchall()})


def _narrow(parts: list[Windowed], inserted: set[str]) -> list[Windowed]:
    return [p.narrowed([i for i in p.indices() if p.columns.message_key[i] in inserted]) for p in parts]


def _add_trends(cur: psycopg.Cursor[Any], stored: list[Windowed], newest: dict[tuple[str, int], int], series: str,
                window_seconds: int) -> list[Touched]:
    deltas = stages.trend_deltas(stored)
    if not len(deltas) and not newest:
        return []
    with cur.copy(f"COPY {DELTAS} ({_DELTA_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_DELTA_TYPES)
        for delta in zip(deltas.dimension, deltas.key, deltas.window, deltas.n_messages, deltas.n_negative,
                         deltas.n_neutral, deltas.n_positive, deltas.sum_score, strict=True):
            copy.write_row(delta)
    cur.execute(_ADD_TRENDS, {"series": series, "window_seconds": window_seconds, "p_topic": [t for t, _ in newest],
                              "p_partition": [p for _, p in newest], "p_window": list(newest.values())})
    # Every delta row is inserted or added to (the upsert has no condition): those are the windows touched.
    return [Touched(d, k, EPOCH + timedelta(seconds=w)) for d, k, w in zip(deltas.dimension, deltas.key, deltas.window,
                                                                           strict=True)]
