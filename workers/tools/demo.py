"""`finsentry demo`: the whole path on embedded defaults, with real labelled texts.

About 2,000 real tweets are replayed over 30 simulated minutes of event time, plus a burst of real
bearish tweets that the model puts in one topic, three minutes long. The worker classifies them,
trends roll up in Postgres, the faust detector (its own process, as `finsentry worker` starts it) opens
an alert on the burst, a local receiver gets the signed webhook, and the alerts topic gets the event.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from sqlalchemy import Engine, func, select

from config.settings import Settings
from models.classifier import Classifier
from models.dataset import SENTIMENT_DIR, TOPIC_DIR, read_labelled_csv
from schemas.tables import alert_deliveries, alerts, classified_messages, trend_windows
from workers.alerting.receiver import WebhookReceiver
from workers.ingest.kafka_io import client_config, ensure_topics
from workers.ingest.processes import start_detector, stop_child
from workers.ingest.worker import Worker
from workers.services.db import make_engine, migrate
from workers.services.embedded import services
from workers.tools.replay import produce


@dataclass(frozen=True)
class DemoPlan:
    run_id: str
    burst_topic: str
    messages: list[tuple[str, dict[str, Any]]]  # (kind, message)
    start: datetime
    end: datetime
    burst_start: datetime

    @property
    def series(self) -> str:
        """Each run writes its own trend series, so runs never share windows or detector state."""
        return f"demo-{self.run_id}"


def plan_stream(
    classifier: Classifier, now: datetime, n_baseline: int = 2000, minutes: int = 30,
    burst_at_minute: int = 14, burst_minutes: int = 3, burst_per_minute: int = 30, seed: int = 7,
) -> DemoPlan:
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    sentiment = read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment")
    topic = read_labelled_csv(TOPIC_DIR / "train.csv", "topic")
    bearish = [ex.text for ex in sentiment if ex.label == 0]
    scores = classifier.score(bearish)
    negative = scores.sentiment_probs.argmax(axis=1) == classifier.sentiments.index("negative")
    topics = [classifier.topics[i] for i in scores.topic_index]
    burst_topic = Counter(t for t, neg in zip(topics, negative) if neg).most_common(1)[0][0]
    burst_pool = [text for text, t, neg in zip(bearish, topics, negative) if neg and t == burst_topic]
    rng.shuffle(burst_pool)
    burst_texts = burst_pool[: burst_minutes * burst_per_minute]
    used = set(burst_texts)
    pool = [ex.text for ex in topic + sentiment if ex.text not in used]
    baseline = rng.sample(pool, n_baseline)

    start = (now - timedelta(minutes=minutes + 1)).replace(second=0, microsecond=0)
    span = minutes * 60
    burst_start = start + timedelta(minutes=burst_at_minute)
    messages: list[tuple[str, dict[str, Any]]] = []
    for number, text in enumerate(baseline):
        at = start + timedelta(seconds=rng.uniform(0, span))
        messages.append(_message(run_id, number, text, at, rng))
    for number, text in enumerate(burst_texts, start=len(baseline)):
        at = burst_start + timedelta(seconds=rng.uniform(0, burst_minutes * 60))
        messages.append(_message(run_id, number, text, at, rng))
    messages.sort(key=lambda km: str(km[1]["published_at"]))
    return DemoPlan(run_id, burst_topic, messages, start, start + timedelta(seconds=span), burst_start)


def _message(run_id: str, number: int, text: str, at: datetime, rng: random.Random) -> tuple[str, dict[str, Any]]:
    message_id = f"{run_id}-{number}"
    if rng.random() < 0.5:
        return "news", {"id": message_id, "source": "demo-newswire", "published_at": at.isoformat(),
                        "title": text, "url": f"https://news.example.com/{message_id}"}
    return "social", {"id": message_id, "source": "demo-social", "published_at": at.isoformat(),
                      "text": text, "author": f"trader{rng.randint(1, 500)}"}


def run_demo(settings: Settings, classifier: Classifier, timeout_s: float = 420.0) -> dict[str, Any]:
    started = time.monotonic()
    with services(settings) as (bootstrap, database_url):
        migrate(database_url)
        engine = make_engine(database_url)
        print(f"model {classifier.version} on {classifier.device} ({classifier.precision})")
        with WebhookReceiver(settings.webhook_secret_list) as receiver:
            plan = plan_stream(classifier, datetime.now(timezone.utc))
            demo_settings = settings.model_copy(update={
                "webhook_urls": receiver.url, "consumer_group": f"finsentry-demo-{plan.run_id}",
                "trend_series": plan.series,
                # Topics of its own: a worker already running on the shared local stack never sees the demo.
                "news_topic": f"finsentry-demo-{plan.run_id}.news", "social_topic": f"finsentry-demo-{plan.run_id}.social",
                "dead_letter_topic": f"finsentry-demo-{plan.run_id}.dead-letter",
                "touched_topic": f"finsentry-demo-{plan.run_id}.windows",
                "alerts_topic": f"finsentry-demo-{plan.run_id}.alerts",
                "detector_app_id": f"finsentry-demo-{plan.run_id}-detector",
                # The demo's stream is thin (about 5 messages a minute in the burst topic before the
                # burst), so the detector reads smaller windows and warms up sooner than in production.
                "spike_min_volume": 4, "spike_warmup_windows": 5, "spike_dimensions": ["topic"],
                "detect_interval_s": 0.5,
                # The demo's receiver is a local http server: allowed here, refused by default.
                "webhook_allow_http": True, "webhook_allow_private": True,
                "detector_metrics_port": -1,  # a detector already running on this machine may hold the port
            })
            stop = threading.Event()
            worker = Worker(demo_settings, classifier, engine, bootstrap, stop=stop)
            thread = threading.Thread(target=worker.run, name="worker", daemon=True)
            ensure_topics(bootstrap, [*demo_settings.input_topics, demo_settings.dead_letter_topic],
                          settings.topic_partitions)
            detector = start_detector(demo_settings, bootstrap, database_url)
            thread.start()
            for kind, topic in (("news", demo_settings.news_topic), ("social", demo_settings.social_topic)):
                values = [json.dumps(m).encode() for k, m in plan.messages if k == kind]
                produce(bootstrap, topic, values, total=len(values))
            prefix = [f"demo-newswire:{plan.run_id}-%", f"demo-social:{plan.run_id}-%"]
            deadline = time.monotonic() + timeout_s
            _wait_until(lambda: _count_classified(engine, prefix) >= len(plan.messages), deadline)
            classified = _count_classified(engine, prefix)
            # Let the detector pass over the last closed windows, then drain the outbox.
            time.sleep(3 * demo_settings.detect_interval_s)
            _wait_until(lambda: _outbox_drained(engine, plan.series), min(deadline, time.monotonic() + 60))
            delivered = len(receiver.events)
            published = _count_records(bootstrap, demo_settings.alerts_topic, delivered)
            stop.set()
            thread.join(30)
            stop_child(detector)
            summary = _summarise(engine, plan, classified, classifier.version, started)
            summary["webhook_deliveries"] = delivered
            summary["alerts_topic_records"] = published
            _print_report(engine, plan, receiver)
        engine.dispose()
    return summary


def _count_records(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> int:
    """Records on the alerts topic, read from the start of every partition (until `expected` or the
    timeout). Partitions are assigned, not joined as a group: nothing to rebalance, nothing committed."""
    consumer = Consumer({**client_config(bootstrap), "group.id": f"{topic}-reader", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    count, deadline = 0, time.monotonic() + timeout_s
    try:
        while count < expected and time.monotonic() < deadline:
            count += sum(1 for m in consumer.consume(100, 0.5) if not m.error())
    finally:
        consumer.close()
    return count


def _wait_until(condition: Callable[[], bool], deadline: float) -> None:
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.25)


def _outbox_drained(engine: Engine, series: str) -> bool:
    """True once this run has an alert and none of its outbox rows is still pending."""
    with engine.connect() as conn:
        rows: list[str] = list(conn.execute(
            select(alert_deliveries.c.status).join(alerts, alerts.c.id == alert_deliveries.c.alert_id)
            .where(alerts.c.series == series)).scalars())
    return bool(rows) and "pending" not in rows


def _count_classified(engine: Engine, prefixes: list[str]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(classified_messages).where(
            classified_messages.c.message_key.like(prefixes[0])
            | classified_messages.c.message_key.like(prefixes[1]))).scalar_one())


def _summarise(engine: Engine, plan: DemoPlan, classified: int, version: str, started: float) -> dict[str, Any]:
    with engine.connect() as conn:
        trend_rows = conn.execute(select(func.count()).select_from(trend_windows).where(
            trend_windows.c.series == plan.series)).scalar_one()
        alert_count = conn.execute(select(func.count()).select_from(alerts).where(
            alerts.c.series == plan.series)).scalar_one()
    return {"messages": len(plan.messages), "classified": classified, "trend_rows": int(trend_rows),
            "alerts": int(alert_count), "webhook_deliveries": 0, "model_version": version,
            "seconds": round(time.monotonic() - started, 1)}


def _print_report(engine: Engine, plan: DemoPlan, receiver: WebhookReceiver) -> None:
    tw = trend_windows
    with engine.connect() as conn:
        totals = conn.execute(
            select(tw.c.key, func.sum(tw.c.n_messages), func.sum(tw.c.n_negative), func.sum(tw.c.sum_score))
            .where(tw.c.series == plan.series, tw.c.dimension == "topic")
            .group_by(tw.c.key).order_by(func.sum(tw.c.n_messages).desc())
        ).all()
        minutes = conn.execute(
            select(tw.c.window_start, tw.c.n_messages, tw.c.n_negative, tw.c.sum_score)
            .where(tw.c.series == plan.series, tw.c.dimension == "topic", tw.c.key == plan.burst_topic,
                   tw.c.window_start >= plan.burst_start - timedelta(minutes=6),
                   tw.c.window_start <= plan.burst_start + timedelta(minutes=8))
            .order_by(tw.c.window_start)
        ).all()
        opened = conn.execute(select(alerts).where(alerts.c.series == plan.series)).all()
    print("\nTrends by topic over the demo's 30 simulated minutes")
    print(f"{'topic':32} {'messages':>8} {'neg share':>9} {'mean score':>10}")
    for row in totals:
        n, neg, score = (float(v) for v in row[1:])
        print(f"{row[0]:32} {int(n):8d} {neg / n:9.2f} {score / n:10.2f}")
    print(f"\nPer minute, {plan.burst_topic} (burst injected from {plan.burst_start:%H:%M} UTC)")
    print(f"{'window':>6} {'messages':>8} {'neg share':>9} {'mean score':>10}")
    for row in minutes:
        n, neg, score = float(row.n_messages), float(row.n_negative), float(row.sum_score)
        print(f"{row.window_start:%H:%M} {int(n):8d} {neg / n:9.2f} {score / n:10.2f}")
    print("\nAlerts")
    for row in opened:
        print(f"#{row.id} {row.status:8} {row.dimension}={row.key} window {row.window_start:%H:%M} "
              f"negative share {row.observed_share:.2f} vs baseline {row.baseline_share:.2f} "
              f"(volume {row.volume}, severity {row.severity})")
    print(f"\nWebhooks received and verified: {len(receiver.events)} "
          f"({', '.join(sorted(e['type'] for e in receiver.events.values()))}); rejected {receiver.rejected}, "
          f"duplicates {receiver.duplicates}")
