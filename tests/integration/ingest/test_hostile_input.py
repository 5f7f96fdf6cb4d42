"""The hostile corpus through Kafka: the worker dead-letters what it must, stores the rest, keeps going."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.integration.helpers import (
    RunningWorker,
    posts,
    read_topic,
    scalar,
    send,
    setup_topics,
    wait_for,
)
from tests.unit.pipeline.test_fuzz_decoder import corpus, raw
from workers.pipeline.stages import decode

pytestmark = pytest.mark.integration


def test_the_worker_survives_the_hostile_corpus(broker, engine, classifier, settings, unique):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    # The broker refuses records over 1 MB before any worker sees them; the 10 MB cases are covered
    # by the decoder's unit test, and a 900 kB record stands in for them here.
    source = f"hostile-{unique}"
    # The worker judges publication times by the wall clock, so the corpus and the expectation use it too.
    now = datetime.now(timezone.utc)
    items = [item for item in corpus(source, now) if not item[0].startswith("10 MB")]
    items.append(("900 kB text", json.dumps({"id": "big", "source": source, "text": "z" * 900_000,
                                             "published_at": "2026-11-22T11:00:00Z"}).encode(), "social"))
    accepted, dead = decode([raw(value, kind) for _, value, kind in items], now)
    social = [value or b"" for _, value, kind in items if kind == "social"]
    news = [value or b"" for _, value, kind in items if kind == "news"]
    send(broker.bootstrap, settings.social_topic, social)
    send(broker.bootstrap, settings.news_topic, news)
    after = posts(5, f"after-{unique}")  # ordinary messages behind the hostile ones
    send(broker.bootstrap, settings.social_topic, after)
    total = len(items) + len(after)
    with RunningWorker(settings, classifier, engine, broker.bootstrap) as running:
        wait_for(lambda: running.worker.stats.consumed >= total, timeout_s=90, what="every record consumed")
        assert running.thread.is_alive()
    letters = read_topic(broker.bootstrap, settings.dead_letter_topic, f"dlq-{unique}", expected=len(dead))
    assert len(letters) == len(dead)
    assert all(json.loads(m.value())["reason"] for m in letters)
    stored = int(scalar(engine, "SELECT count(*) FROM classified_messages WHERE source = :s OR external_id LIKE :q",
                        s=source, q=f"after-{unique}-%"))
    assert stored == len(accepted) + len(after)
    print(json.dumps({"hostile_records": len(items), "dead_lettered": len(letters), "stored": stored}))
