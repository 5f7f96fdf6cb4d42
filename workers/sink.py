"""The Postgres sink: one transaction per batch stores classified messages and adds to trend windows.

Idempotency: classified_messages' primary key is the message key; only rows that this transaction
actually inserted contribute to the trend deltas, so a replayed message changes no count, and
several workers adding to the same window add up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.tables import backfill_seen, classified_messages, trend_windows
from workers.errors import RetryableError
from workers.stages import aggregate


class PostgresSink:
    """add() rows, then flush() them in one transaction; returns how many were new."""

    def __init__(self, engine: Engine, window_seconds: int, series: str = "live"):
        self.engine = engine
        self.window_seconds = window_seconds
        self.series = series
        self._rows: list[dict[str, Any]] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        self._rows.extend(rows)

    def flush(self) -> int:
        if not self._rows:
            return 0
        try:
            inserted = write_batch(self.engine, self._rows, self.window_seconds, self.series)
        except DBAPIError as err:
            # OperationalError: the server is unreachable, shutting down or starting up (often with no
            # SQLSTATE, at connect time). Other errors are retried only when transient.
            if not (isinstance(err, OperationalError) or err.connection_invalidated or _is_transient(err)):
                raise
            raise RetryableError(f"database write failed: {err.__class__.__name__}: {err.orig}") from err
        self._rows = []
        return inserted


def _is_transient(err: DBAPIError) -> bool:
    # serialization failure, deadlock, connection errors, admin shutdown, cannot connect now
    code = getattr(err.orig, "sqlstate", None) or ""
    return code in {"40001", "40P01", "57P01", "57P02", "57P03"} or code.startswith("08")


def write_batch(
    engine: Engine, rows: list[dict[str, Any]], window_seconds: int, series: str = "live",
    store_messages: bool = True,
) -> int:
    """Store new messages and add their trend deltas. A backfill (store_messages=False) records only
    which keys its series has counted, leaving the live classified messages as they are."""
    rows = sorted(rows, key=lambda r: r["message_key"])  # same lock order in every worker
    with engine.begin() as conn:
        if store_messages:
            result = conn.execute(
                insert(classified_messages).on_conflict_do_nothing().returning(classified_messages.c.message_key),
                rows,
            )
        else:
            result = conn.execute(
                insert(backfill_seen).on_conflict_do_nothing().returning(backfill_seen.c.message_key),
                [{"series": series, "message_key": r["message_key"]} for r in rows],
            )
        new_keys = {r[0] for r in result}
        fresh = [row for row in rows if row["message_key"] in new_keys]
        deltas = aggregate(fresh)
        if deltas:
            # A fixed order keeps concurrent workers from deadlocking on the same windows.
            values = [
                {"series": series, "dimension": dim, "key": key, "window_start": start,
                 "window_seconds": window_seconds, "n_messages": d.n_messages, "n_negative": d.n_negative,
                 "n_neutral": d.n_neutral, "n_positive": d.n_positive, "sum_score": d.sum_score}
                for (dim, key, start), d in sorted(deltas.items())
            ]
            stmt = insert(trend_windows)
            excluded = stmt.excluded
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["series", "dimension", "key", "window_start"],
                    set_={
                        "n_messages": trend_windows.c.n_messages + excluded.n_messages,
                        "n_negative": trend_windows.c.n_negative + excluded.n_negative,
                        "n_neutral": trend_windows.c.n_neutral + excluded.n_neutral,
                        "n_positive": trend_windows.c.n_positive + excluded.n_positive,
                        "sum_score": trend_windows.c.sum_score + excluded.sum_score,
                        "updated_at": func.now(),
                    },
                ),
                values,
            )
    return len(new_keys)
