"""Text retention: stored text, links and authors are deleted after the retention period, while the
classifications and the trends built from them stay."""

from __future__ import annotations

from sqlalchemy import Engine, text


def apply_retention(engine: Engine, days: int, batch: int = 10_000) -> int:
    """Delete the text, link and author of messages published more than `days` ago; return how many.

    Runs in batches so that no transaction holds many rows; classifications and trends are kept.
    """
    total = 0
    while True:
        with engine.begin() as conn:
            done = conn.execute(text("""
                UPDATE classified_messages SET text = NULL, url = NULL, author = NULL
                WHERE message_key IN (
                    SELECT message_key FROM classified_messages
                    WHERE published_at < now() - make_interval(days => :days) AND text IS NOT NULL
                    LIMIT :batch FOR UPDATE SKIP LOCKED)"""), {"days": days, "batch": batch}).rowcount
        total += done
        if done < batch:
            return total
