"""One flood replayed through a live worker (issue 24), and what a webhook receiver got.

40 minutes of organic tweets (the labelled training tweets, 600 a minute from 3,000 authors) and, in minutes
25-27, a flood of 300 copies and near copies of one negative sentence from 2 accounts (100 a minute: exact
copies, retweet prefixes, trailing hashtags and cashtags, random suffixes). A `finsentry worker` (the
shipped model, its own topics and series, its detector) reads them; a receiver verifies each signed
webhook. Prints one JSON line: messages stored, the flood's stories, the alerts and what the receiver got.

Run from the repository root, with a broker and a database to use (a scratch database: it is migrated):
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/scratch \\
        .venv/bin/python docs/flood_replay.py
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from models.dataset import SENTIMENT_DIR, read_labelled_csv  # noqa: E402
from schemas.messages import RawMessage  # noqa: E402
from tests.integration.helpers import SECRET, Receiver, scalar, send, wait_for  # noqa: E402
from workers.ingest.kafka_io import ensure_topics  # noqa: E402
from workers.pipeline import stages  # noqa: E402
from workers.services.db import make_engine, migrate  # noqa: E402

FLOOD = "$XYZ is collapsing, accounting fraud everywhere, sell everything before it goes to zero"


def flood_text(rng: random.Random, account: str) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return FLOOD
    if kind == 1:
        return f"RT @{account}: {FLOOD}"
    if kind == 2:
        return f"{FLOOD} #sell ${rng.choice(['XYZ', 'ABC', 'QQQ'])}"
    return f"{FLOOD} {''.join(rng.choices('abcdefghijklmnopqrstuvwxyz0123456789', k=6))}"


def main() -> int:
    bootstrap, url = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"]
    run = uuid.uuid4().hex[:8]
    rng = random.Random(24)
    tweets = [ex.text for ex in read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment")]
    start = (datetime.now(timezone.utc) - timedelta(hours=2)).replace(second=0, microsecond=0)
    messages = []
    for minute in range(40):
        for i in range(600):
            messages.append({"id": f"o-{minute}-{i}", "source": "twitter", "text": rng.choice(tweets),
                             "author": f"user{rng.randrange(3000)}",
                             "published_at": (start + timedelta(minutes=minute, seconds=i / 10)).isoformat()})
        if 25 <= minute <= 27:
            for i in range(100):
                account = f"pump_bot_{i % 2 + 1}"
                messages.append({"id": f"f-{minute}-{i}", "source": "twitter", "text": flood_text(rng, account),
                                 "author": account,
                                 "published_at": (start + timedelta(minutes=minute, seconds=i * 0.6)).isoformat()})
    messages.sort(key=lambda m: m["published_at"])  # as a feed delivers them: in time order, flood interleaved
    raws = [RawMessage("social", json.dumps(m).encode(), "replay", 0, i) for i, m in enumerate(messages)]
    accepted, dead = stages.decode(raws, datetime.now(timezone.utc))  # a few training tweets are dead letters

    migrate(url)
    engine = make_engine(url)
    topics = {"FINSENTRY_SOCIAL_TOPIC": f"flood-social-{run}", "FINSENTRY_NEWS_TOPIC": f"flood-news-{run}",
              "FINSENTRY_DEAD_LETTER_TOPIC": f"flood-dead-{run}", "FINSENTRY_TOUCHED_TOPIC": f"flood-windows-{run}"}
    ensure_topics(bootstrap, list(topics.values()), 1)
    send(bootstrap, topics["FINSENTRY_SOCIAL_TOPIC"], messages)
    receiver = Receiver(statuses=[])
    series = f"flood-{run}"
    env = {**os.environ, **topics, "FINSENTRY_TREND_SERIES": series, "FINSENTRY_TOPIC_PARTITIONS": "1",
           "FINSENTRY_WEBHOOK_URLS": receiver.url, "FINSENTRY_WEBHOOK_SECRETS": SECRET,
           "FINSENTRY_WEBHOOK_ALLOW_HTTP": "true", "FINSENTRY_WEBHOOK_ALLOW_PRIVATE": "true",
           "FINSENTRY_ALLOWED_LATENESS_S": "60", "FINSENTRY_DETECT_INTERVAL_S": "0.5", "FINSENTRY_METRICS_PORT": "-1",
           "FINSENTRY_DATA_DIR": tempfile.mkdtemp(prefix="flood-")}
    stored = "SELECT count(*) FROM classified_messages m WHERE m.kafka_topic = :t"
    started = time.monotonic()
    log = open(Path(env["FINSENTRY_DATA_DIR"]) / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "finsentry.cli", "worker", "--group", f"flood-{run}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for(lambda: scalar(engine, stored, t=topics["FINSENTRY_SOCIAL_TOPIC"]) >= len(accepted), timeout_s=600,
                 what="every valid message stored")
        last_closed = start + timedelta(minutes=37)  # windows 38-39 stay open for the allowed lateness (60 s)
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM spike_state WHERE series = :s "
                                        "AND last_window_start >= :w", s=series, w=last_closed) > 0,
                 timeout_s=180, what="the detector's last window")
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
                                        "WHERE a.series = :s AND d.status <> 'delivered'", s=series) == 0,
                 timeout_s=60, what="every delivery done")
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        receiver.server.shutdown()
    with engine.connect() as conn:
        flood_stories = conn.execute(text(
            "SELECT story_id, count(*) FROM classified_messages WHERE kafka_topic = :t AND external_id LIKE 'f-%' "
            "GROUP BY story_id ORDER BY 2 DESC"), {"t": topics["FINSENTRY_SOCIAL_TOPIC"]}).all()
        alerts = conn.execute(text(
            "SELECT kind, dimension, key, severity, window_start, status FROM alerts WHERE series = :s ORDER BY id"),
            {"s": series}).all()
    received = [{"type": p["type"], "dimension": p.get("dimension"), "key": p.get("key"), "severity": p.get("severity"),
                 "story": p.get("story"), "accounts": p.get("accounts")} for _, p in receiver.received]
    print(json.dumps({
        "messages": len(messages), "stored": scalar(engine, stored, t=topics["FINSENTRY_SOCIAL_TOPIC"]),
        "dead_letters": len(dead), "flood_messages": 300,
        "seconds": round(time.monotonic() - started, 1),
        "flood_stories": [[int(s), int(n)] for s, n in flood_stories],
        "alerts": [{"kind": k, "dimension": d, "key": key, "severity": sev, "status": st,
                    "minute": int((w - start).total_seconds() // 60)} for k, d, key, sev, w, st in alerts],
        "webhooks": received, "webhook_ids": dict(Counter(i for i, _ in receiver.received)),
    }, default=str))
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
