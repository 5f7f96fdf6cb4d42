"""Privacy and secrets: masked personal data, text retention that keeps trends, secrets kept out of logs."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import make_url, text

from config.settings import Settings
from finsentry.cli import main
from tests.integration.helpers import (
    RunningWorker,
    scalar,
    send,
    setup_topics,
    wait_for,
)
from workers.lifecycle.retention import apply_retention
from workers.services.db import make_engine

pytestmark = pytest.mark.integration


def test_social_posts_are_stored_masked_and_old_text_is_dropped_while_trends_stay(
        broker, own_database_url, classifier, settings, unique):  # type: ignore[no-untyped-def]
    engine = make_engine(own_database_url)  # retention below runs a month ahead: on a database of its own
    setup_topics(broker.bootstrap, settings)
    now = datetime.now(timezone.utc)
    social = [
        {"id": f"{unique}-new", "source": "priv", "published_at": (now - timedelta(minutes=5)).isoformat(),
         "text": "$XYZ fraud? email whistle.blower@corp-mail.com or call +1 (555) 010-9999", "author": "@anon"},
        {"id": f"{unique}-old", "source": "priv", "published_at": (now - timedelta(days=45)).isoformat(),
         "text": "$XYZ old rumour, ring 555-010-1234", "author": "@old", "url": "https://t.example/1"},
    ]
    news = [{"id": f"{unique}-news", "source": "priv-news", "published_at": (now - timedelta(minutes=5)).isoformat(),
             "title": "XYZ investor relations: ir@xyz.example", "body": ""}]
    send(broker.bootstrap, settings.social_topic, social)
    send(broker.bootstrap, settings.news_topic, news)
    with RunningWorker(settings, classifier, engine, broker.bootstrap) as running:
        wait_for(lambda: running.worker.stats.stored == 3, what="3 messages stored")

    def stored(key: str) -> str | None:
        return scalar(engine, "SELECT text FROM message_texts WHERE message_key = :k", k=key)

    assert stored(f"priv:{unique}-new") == "$XYZ fraud? email [email] or call [phone]"
    assert stored(f"priv-news:{unique}-news") == "XYZ investor relations: ir@xyz.example"  # news is published text
    # Past the text horizon (30 days) on arrival: classified and counted, its text, link and author never stored.
    assert stored(f"priv:{unique}-old") is None
    assert scalar(engine, "SELECT sentiment FROM classified_messages WHERE message_key = :k", k=f"priv:{unique}-old")

    trend_sql = ("SELECT sum(n_messages) FROM trend_daily WHERE series = :s AND dimension = 'ticker' "
                 "AND key = 'XYZ'")
    assert scalar(engine, trend_sql, s=settings.trend_series) == 2
    # 40 days on, today's texts are past their horizon: their day is dropped; messages and trends stay.
    run = apply_retention(engine, settings.horizons, now + timedelta(days=40), days_ahead=-1)
    assert f"message_texts_p{now - timedelta(minutes=5):%Y%m%d}" in run.dropped
    assert not any(name.startswith("classified_messages") for name in run.dropped)
    assert stored(f"priv:{unique}-new") is None and stored(f"priv-news:{unique}-news") is None
    with engine.connect() as conn:
        new = conn.execute(text("SELECT sentiment, tickers FROM classified_messages WHERE message_key = :k"),
                           {"k": f"priv:{unique}-new"}).mappings().one()
    assert new["sentiment"] and new["tickers"] == ["XYZ"]
    assert scalar(engine, trend_sql, s=settings.trend_series) == 2  # the roll-ups are untouched
    engine.dispose()


def test_secrets_stay_out_of_logs_output_and_settings_repr(broker, database_url, tmp_path, monkeypatch, capsys,
                                                           caplog, unique):  # type: ignore[no-untyped-def]
    password, webhook_secret = f"pw-{unique}-s3cret", "whsec_c2VjcmV0LW5ldmVyLWxvZ2dlZA=="
    # The local server trusts 127.0.0.1, so a password in the URL is carried but never checked.
    url = make_url(database_url).set(password=password).render_as_string(hide_password=False)
    settings = Settings(DATABASE_URL=url, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, webhook_secrets=webhook_secret,
                        data_dir=tmp_path, metrics_port=-1, news_topic=f"news-{unique}",
                        social_topic=f"social-{unique}", dead_letter_topic=f"dlq-{unique}", device="cpu")
    assert password not in repr(settings) and webhook_secret not in repr(settings)
    assert password not in str(settings.model_dump()) and webhook_secret not in str(settings.model_dump())
    monkeypatch.setattr("finsentry.cli.get_settings", lambda: settings)
    caplog.set_level(logging.DEBUG)
    assert main(["-v", "worker", "--group", f"secrets-{unique}", "--max-seconds", "4"]) == 0
    out = capsys.readouterr()
    seen = caplog.text + out.out + out.err
    assert "consumed" in out.out  # the worker ran and reported
    assert password not in seen and webhook_secret not in seen
