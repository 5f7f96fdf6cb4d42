"""Migration 0006 on a database at 0005 that holds rows: messages (with and without text), trends of two
series over hours and days, the analyst role's grants. Nothing is lost, the views answer the same, the
roll-ups equal their minutes, the analyst reads the views and not the texts, and a replay of a migrated
message is still recognised."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import ProgrammingError

from tests.conftest import LOCAL_POSTGRES
from tests.integration.helpers import SINK_BASE, columns_for
from workers.ingest.sink import write_batch
from workers.services.db import ROOT, make_engine, sqlalchemy_url

pytestmark = pytest.mark.integration

VIEWS = ["topic_sentiment_minute", "topic_sentiment_hour", "ticker_sentiment_hour", "source_sentiment_hour",
         "topic_sentiment_day", "ticker_sentiment_day", "source_sentiment_day", "open_alerts"]
MESSAGE_COLUMNS = ("message_key, kind, source, external_id, published_at, window_start, language, topic, topic_prob, "
                   "sentiment, p_negative, p_neutral, p_positive, sentiment_score, tickers, model_version, "
                   "kafka_topic, kafka_partition, kafka_offset, classified_at")


@pytest.fixture
def at_0005() -> Iterator[tuple[str, Config]]:
    """A fresh database migrated to 0005 only, dropped afterwards."""
    server = make_url(sqlalchemy_url(os.environ.get("DATABASE_URL", LOCAL_POSTGRES)))
    name = f"finsentry_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    try:
        command.upgrade(config, "0005")
        yield url, config
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill_0005(engine: Engine, unique: str) -> None:
    """Rows as 0005's worker and retention left them: 7 messages over 3 days (one text already deleted,
    one news article with a link), minute windows of two series, an alert."""
    with engine.begin() as conn:
        conn.execute(text(f"""
            INSERT INTO classified_messages ({MESSAGE_COLUMNS}, text, url, author)
            SELECT 'sink-test:{unique}-' || i, CASE WHEN i = 3 THEN 'news' ELSE 'social' END, 'sink-test',
                   '{unique}-' || i, ts, date_bin('1 minute', ts, timestamptz 'epoch'), 'en',
                   (ARRAY['Macro', 'Earnings'])[1 + i % 2], 0.9, (ARRAY['negative', 'neutral', 'positive'])[1 + i % 3],
                   0.2, 0.5, 0.3, 0.1, CASE WHEN i % 2 = 0 THEN ARRAY['AAPL'] ELSE '{{}}' END, 'fs-000000000000',
                   'finsentry.social', i % 4, 100 + i, ts + interval '1 second',
                   CASE WHEN i = 5 THEN NULL ELSE 'text ' || i || ' call [phone]' END,
                   CASE WHEN i = 3 THEN 'https://news.example/' || i END,
                   CASE WHEN i NOT IN (3, 5) THEN '@user' || i END
            FROM generate_series(0, 6) AS i,
                 LATERAL (SELECT CAST(:base AS timestamptz) + i * interval '11 hours' + i * interval '7 seconds') AS t(ts)
            """), {"base": SINK_BASE})
        conn.execute(text("""
            INSERT INTO trend_windows (series, dimension, key, window_start, window_seconds, n_messages, n_negative,
                                       n_neutral, n_positive, sum_score)
            SELECT s, d, k, timestamptz '2026-01-04 20:00+00' + m * interval '7 minutes', 60, 10 + m % 5, m % 3, 5,
                   5 + m % 5 - m % 3, 0.25 * m
            FROM unnest(ARRAY['live', 'demo-x']) AS s, unnest(ARRAY['topic', 'ticker', 'source']) AS d,
                 unnest(ARRAY['Macro', 'AAPL']) AS k, generate_series(0, 400) AS m
            """))
        conn.execute(text("""
            INSERT INTO alerts (series, dimension, key, window_start, status, severity, observed_share,
                                baseline_share, baseline_std, volume, payload)
            VALUES ('live', 'topic', 'Macro', timestamptz '2026-01-05 09:00+00', 'open', 'high', 0.8, 0.1, 0.05, 40,
                    '{}')"""))


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything 0006 must keep, in a form comparable across the two schemas."""
    with engine.connect() as conn:
        out: dict[str, Any] = {view: sorted(tuple(str(v) if isinstance(v, list) else
                                                  round(float(v), 9) if isinstance(v, (float, int)) or
                                                  type(v).__name__ == "Decimal" else v for v in row)
                                            for row in conn.execute(text(f"SELECT * FROM {view}")))
                               for view in VIEWS}
        out["messages"] = sorted(tuple(row) for row in conn.execute(text(f"SELECT {MESSAGE_COLUMNS} FROM "
                                                                         "classified_messages")))
        out["minutes"] = sorted(tuple(row) for row in conn.execute(text("SELECT * FROM trend_windows")))
    return out


def test_0006_converts_a_database_with_rows_and_loses_nothing(at_0005, classifier, unique):  # type: ignore[no-untyped-def]
    url, config = at_0005
    engine = make_engine(url)
    fill_0005(engine, unique)
    with engine.connect() as conn:
        texts = sorted(tuple(r) for r in conn.execute(text(
            "SELECT message_key, published_at, text, url, author FROM classified_messages WHERE text IS NOT NULL")))
    before = snapshot(engine)
    assert len(before["messages"]) == 7 and len(texts) == 6 and len(before["minutes"]) == 2 * 3 * 2 * 401

    command.upgrade(config, "head")
    engine.dispose()
    engine = make_engine(url)
    after = snapshot(engine)
    assert after == before  # every message, every minute window, every view's answer
    with engine.connect() as conn:
        assert sorted(tuple(r) for r in conn.execute(text(
            "SELECT message_key, published_at, text, url, author FROM message_texts"))) == texts
        partitions = sorted(conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind = 'r'")).scalars())
        assert partitions == sorted(f"{t}_p2026010{d}" for t in ("classified_messages", "message_texts")
                                    for d in (5, 6, 7, 8))
        for period in ("hour", "day"):
            rolled = conn.execute(text(
                f"SELECT count(*) FROM trend_{'hourly' if period == 'hour' else 'daily'} r FULL JOIN ("
                f"SELECT series, dimension, key, date_trunc('{period}', window_start AT TIME ZONE 'UTC') "
                "AT TIME ZONE 'UTC' AS w, sum(n_messages) AS n, sum(sum_score) AS s FROM trend_windows GROUP BY 1, 2, 3, 4"
                ") m ON (m.series, m.dimension, m.key, m.w) = (r.series, r.dimension, r.key, r.window_start) "
                "WHERE m.n IS DISTINCT FROM r.n_messages OR abs(m.s - r.sum_score) > 1e-9 OR m.s IS NULL "
                "OR r.sum_score IS NULL")).scalar()
            assert rolled == 0, period

        # The analyst role (its 0002 grants, and 0006's) reads the views and roll-ups; never the texts.
        conn.execute(text("SET ROLE finsentry_analyst"))
        for readable in (*VIEWS, "trend_windows", "trend_hourly", "trend_daily", "alerts"):
            conn.execute(text(f"SELECT count(*) FROM {readable}")).scalar()
        conn.rollback()
        for hidden in ("message_texts", "message_texts_p20260105", "classified_messages",
                       "classified_messages_p20260105"):
            conn.execute(text("SET ROLE finsentry_analyst"))
            with pytest.raises(ProgrammingError, match="permission denied"):
                conn.execute(text(f"SELECT count(*) FROM {hidden}"))
            conn.rollback()

    # A replay of a migrated message is recognised (the key and the publication time found its row).
    replay = columns_for(classifier, unique, 2, step_s=11 * 3600 + 7)  # keys -0 and -1, published as above
    assert write_batch(engine, [replay], 60, f"after-{unique}") == 0
    fresh = columns_for(classifier, f"{unique}-new", 1, base=SINK_BASE + timedelta(days=30))
    assert write_batch(engine, [fresh], 60, f"after-{unique}") == 1
    engine.dispose()

    with pytest.raises(NotImplementedError, match="cannot be undone faithfully"):
        command.downgrade(config, "0005")
