"""The Postgres sink: one transaction per batch stores classified messages and adds to trend windows.

How a batch is written (one transaction):
1. `COPY` its columns into a session-local staging table (psycopg 3's copy protocol);
2. one statement inserts the staged rows into `classified_messages` with `ON CONFLICT DO NOTHING`,
   builds the trend deltas from the rows that statement actually inserted (topic, source and each
   ticker per window), and adds them to `trend_windows`.

The same statement records, per input partition, the newest window of the batch (`ingest_progress`): the
detector closes a window only once every active partition has passed it.

Idempotency: classified_messages' primary key is the message key; only rows this transaction inserted
contribute to the deltas, so a replayed message changes no count, and several workers adding to the
same window add up. Rows and windows are written in key order, so concurrent workers take their locks
in the same order.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.errors import RetryableError
from workers.pipeline.stages import COLUMNS, Columns, Touched

STAGING = "finsentry_staging"
_COLS = ", ".join(COLUMNS)
# Binary COPY (about twice the rows/s of text COPY here): the Postgres type of each of COLUMNS.
COPY_TYPES = ("text", "text", "text", "text", "timestamptz", "text", "text", "text", "text", "text", "float8", "text",
              "float8", "float8", "float8", "float8", "text[]", "text", "text", "int4", "int8")

_CREATE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT {_COLS} FROM classified_messages WITH NO DATA"
)

# Trend deltas from the CTE `fresh` (the rows this statement inserted), added to trend_windows; the
# statement returns how many rows were new and which (dimension, key, window) changed.
_ADD_TRENDS = """
keys AS (
    SELECT 'topic' AS dimension, topic AS key, window_start, sentiment, sentiment_score FROM fresh
    UNION ALL SELECT 'source', source, window_start, sentiment, sentiment_score FROM fresh
    UNION ALL SELECT 'ticker', t.ticker, window_start, sentiment, sentiment_score
              FROM fresh, unnest(tickers) AS t(ticker)
),
added AS (
    INSERT INTO trend_windows AS tw (series, dimension, key, window_start, window_seconds, n_messages,
                                     n_negative, n_neutral, n_positive, sum_score)
    SELECT %(series)s, dimension, key, window_start, %(window_seconds)s, count(*),
           count(*) FILTER (WHERE sentiment = 'negative'), count(*) FILTER (WHERE sentiment = 'neutral'),
           count(*) FILTER (WHERE sentiment = 'positive'), sum(sentiment_score)
    FROM keys GROUP BY dimension, key, window_start ORDER BY dimension, key, window_start
    ON CONFLICT (series, dimension, key, window_start) DO UPDATE SET
        n_messages = tw.n_messages + excluded.n_messages, n_negative = tw.n_negative + excluded.n_negative,
        n_neutral = tw.n_neutral + excluded.n_neutral, n_positive = tw.n_positive + excluded.n_positive,
        sum_score = tw.sum_score + excluded.sum_score, updated_at = now()
    RETURNING dimension, key, window_start
)
SELECT (SELECT count(*) FROM fresh), array_agg(dimension), array_agg(key), array_agg(window_start) FROM added
"""

_WINDOW = "date_bin(make_interval(secs => %(window_seconds)s), published_at, timestamptz 'epoch')"

# A key repeated within the batch is inserted once (the second conflicts with the first). `progress`
# records how far event time has got on each input partition of the batch (the detector's watermark).
_STORE_MESSAGES = f"""
WITH fresh AS (
    INSERT INTO classified_messages ({_COLS}, window_start)
    SELECT {_COLS}, {_WINDOW} FROM {STAGING} ORDER BY message_key
    ON CONFLICT DO NOTHING
    RETURNING topic, source, tickers, window_start, sentiment, sentiment_score
),
progress AS (
    INSERT INTO ingest_progress AS p (series, topic, partition, window_start)
    SELECT %(series)s, kafka_topic, kafka_partition, max({_WINDOW}) FROM {STAGING}
    GROUP BY kafka_topic, kafka_partition ORDER BY kafka_topic, kafka_partition
    ON CONFLICT (series, topic, partition) DO UPDATE SET
        window_start = greatest(p.window_start, excluded.window_start), updated_at = now()
),
{_ADD_TRENDS}"""

# A backfill records only which keys its series has counted; the live messages stay as they are.
_COUNT_ONLY = f"""
WITH src AS (SELECT DISTINCT ON (message_key) * FROM {STAGING} ORDER BY message_key),
seen AS (
    INSERT INTO backfill_seen (series, message_key) SELECT %(series)s, message_key FROM src
    ON CONFLICT DO NOTHING RETURNING message_key
),
fresh AS (
    SELECT topic, source, tickers, {_WINDOW} AS window_start, sentiment, sentiment_score
    FROM src JOIN seen USING (message_key)
),
{_ADD_TRENDS}"""


class PostgresSink:
    """add() batches, then flush() them in one transaction; returns how many messages were new.

    A failing database raises RetryableError and keeps the rows, so the caller can flush again."""

    def __init__(self, engine: Engine, window_seconds: int, series: str = "live"):
        self.engine = engine
        self.window_seconds = window_seconds
        self.series = series
        self._batches: list[Columns] = []
        self.touched: list[Touched] = []  # the trend windows the last flush added to

    def add(self, columns: Columns) -> None:
        if len(columns):
            self._batches.append(columns)

    def flush(self) -> int:
        if not self._batches:
            return 0
        try:
            inserted, self.touched = write_batches(self.engine, self._batches, self.window_seconds, self.series)
        except (DBAPIError, psycopg.Error) as err:
            if not _retryable(err):
                raise
            raise RetryableError(f"database write failed: {err.__class__.__name__}: {err}") from err
        self._batches = []
        return inserted


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


def copy_columns(cur: psycopg.Cursor[Any], table: str, batches: list[Columns]) -> None:
    """Binary COPY of the batches' rows into `table`'s COLUMNS."""
    with cur.copy(f"COPY {table} ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(COPY_TYPES)
        for columns in batches:
            for record in columns.records():
                copy.write_row(record)


def write_batch(
    engine: Engine, batches: list[Columns], window_seconds: int, series: str = "live", store_messages: bool = True,
) -> int:
    """Store new messages and add their trend deltas in one transaction; return how many were new.
    With store_messages=False (a backfill) only the series' seen keys and its trends are written."""
    return write_batches(engine, batches, window_seconds, series, store_messages)[0]


def write_batches(
    engine: Engine, batches: list[Columns], window_seconds: int, series: str = "live", store_messages: bool = True,
) -> tuple[int, list[Touched]]:
    """`write_batch`, also returning the trend windows it added to (none when every message was seen before)."""
    params: dict[str, Any] = {"series": series, "window_seconds": window_seconds}
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        with raw.cursor() as cur:
            cur.execute(_CREATE_STAGING)
            copy_columns(cur, STAGING, batches)
            cur.execute(_STORE_MESSAGES if store_messages else _COUNT_ONLY, params)
            row = cur.fetchone()
            assert row is not None
    inserted, dimensions, keys, windows = row
    return int(inserted), [Touched(d, k, w) for d, k, w in zip(dimensions or [], keys or [], windows or [], strict=True)]
