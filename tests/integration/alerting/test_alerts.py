"""Detection over real trend rows in Postgres, and signed delivery to a real HTTP receiver."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import text

from schemas.tables import trend_windows
from tests.integration.helpers import (
    SECRET,
    T0,
    Receiver,
    detect,
    insert_windows,
    scalar,
)
from workers.alerting.delivery import deliver_due
from workers.alerting.detector import run_detection
from workers.alerting.spikes import SpikeParams
from workers.alerting.targets import TargetPolicy

LOCAL = TargetPolicy(allow_http=True, allow_private=True)  # the test receivers listen on 127.0.0.1
pytestmark = pytest.mark.integration


def test_a_burst_raises_one_alert_delivered_once_despite_failures(engine, unique):  # type: ignore[no-untyped-def]
    series = f"alerts-{unique}"
    receiver = Receiver(statuses=[500, 429])  # two failures, then success
    shares = [0.15, 0.18, 0.12, 0.16, 0.14, 0.15, 0.17, 0.13, 0.16, 0.15, 0.7, 0.75, 0.15, 0.1, 0.15, 0.2, 0.15]
    insert_windows(engine, series, "Energy | Oil", shares)

    touched = detect(engine, series, [receiver.url])
    assert len(touched) == 2  # opened at window 10, resolved by window 13; the last 2 windows are still open
    assert detect(engine, series, [receiver.url]) == []  # a second pass finds nothing new

    with engine.connect() as conn:
        alert = conn.execute(text("SELECT * FROM alerts WHERE series = :s"), {"s": series}).mappings().one()
    assert alert["status"] == "resolved"
    assert alert["window_start"] == T0 + timedelta(minutes=10)
    assert alert["observed_share"] == pytest.approx(0.7)
    assert alert["baseline_share"] == pytest.approx(0.15, abs=0.02)

    for _ in range(4):  # retries: 500, then 429 (Retry-After 0), then success for both events
        deliver_due(engine, [SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0, policy=LOCAL)
    ids = [webhook_id for webhook_id, _ in receiver.received]
    payloads = {webhook_id: p for webhook_id, p in receiver.received}
    assert len(set(ids)) == 2  # one opened, one resolved
    assert sorted(p["type"] for p in payloads.values()) == ["alert.opened", "alert.resolved"]
    assert len(ids) == 4  # the opened event was retried twice with the same webhook-id
    statuses = scalar(engine, "SELECT string_agg(d.status, ',' ORDER BY d.id) FROM alert_deliveries d "
                              "JOIN alerts a ON a.id = d.alert_id WHERE a.series = :s", s=series)
    assert statuses == "delivered,delivered"
    attempts = scalar(engine, "SELECT count(*) FROM delivery_attempts t JOIN alert_deliveries d ON d.id = t.delivery_id "
                              "JOIN alerts a ON a.id = d.alert_id WHERE a.series = :s", s=series)
    assert attempts == 4
    opened = next(p for p in payloads.values() if p["type"] == "alert.opened")
    assert opened["key"] == "Energy | Oil" and opened["severity"] in {"medium", "high"}
    receiver.server.shutdown()


def test_a_gone_endpoint_is_disabled_for_later_alerts_too(engine, unique):  # type: ignore[no-untyped-def]
    series = f"gone-{unique}"
    receiver = Receiver(statuses=[410])
    insert_windows(engine, series, "Macro", [0.1] * 10 + [0.8] * 4)
    insert_windows(engine, series, "Politics", [0.1] * 10 + [0.8] * 4)
    assert len(detect(engine, series, [receiver.url])) == 2  # two alerts, one delivery each
    deliver_due(engine, [SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0, policy=LOCAL)
    deliver_due(engine, [SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0, policy=LOCAL)
    assert len(receiver.received) == 1  # the 410 disabled the endpoint: the second was never sent
    statuses = scalar(engine, "SELECT string_agg(DISTINCT d.status, ',') FROM alert_deliveries d "
                              "JOIN alerts a ON a.id = d.alert_id WHERE a.series = :s", s=series)
    assert statuses == "disabled"
    assert scalar(engine, "SELECT reason FROM webhook_endpoints WHERE url = :u", u=receiver.url) == "HTTP 410 Gone"

    # An alert raised after that is recorded, but not queued for the gone endpoint.
    insert_windows(engine, series, "Earnings", [0.1] * 10 + [0.8] * 4)
    assert len(detect(engine, series, [receiver.url])) == 1
    deliver_due(engine, [SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0, policy=LOCAL)
    assert len(receiver.received) == 1
    receiver.server.shutdown()


def test_concurrent_detection_passes_decide_once(engine, unique):  # type: ignore[no-untyped-def]
    series = f"race-{unique}"
    insert_windows(engine, series, "Politics", [0.1] * 10 + [0.9] * 4)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(detect(engine, series, []))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(scalar(engine, "SELECT count(*) FROM alerts WHERE series = :s", s=series)) == 1
    assert sum(len(r) for r in results) == 1


def test_tickers_with_enough_volume_are_watched_too(engine, unique):  # type: ignore[no-untyped-def]
    series = f"ticker-{unique}"
    rows = [{"series": series, "dimension": "ticker", "key": "TSLA", "window_start": T0 + timedelta(minutes=i),
             "window_seconds": 60, "n_messages": 50, "n_negative": k, "n_neutral": 50 - k, "n_positive": 0,
             "sum_score": -k} for i, k in enumerate([5, 6, 4, 5, 7, 5, 6, 4, 5, 6, 30, 32, 31, 5])]
    with engine.begin() as conn:
        conn.execute(trend_windows.insert(), rows)
    touched = run_detection(engine, SpikeParams(warmup_windows=5), allowed_lateness_s=60, window_seconds=60,
                            routes=[], series=series, dimensions=("topic", "ticker"))
    assert len(touched) == 1
    with engine.connect() as conn:
        alert = conn.execute(text("SELECT dimension, key, payload FROM alerts WHERE series = :s"),
                             {"s": series}).one()
    assert (alert.dimension, alert.key) == ("ticker", "TSLA")
    assert alert.payload["baseline_negative_share"] == pytest.approx(0.106, abs=0.02)


def test_rotated_secrets_both_verify(engine, unique):  # type: ignore[no-untyped-def]
    series = f"rotate-{unique}"
    new_secret = "whsec_" + "bmV3LXNlY3JldC1mb3Itcm90YXRpb24="
    receiver = Receiver(statuses=[])  # verifies with SECRET only (the old one)
    insert_windows(engine, series, "Earnings", [0.1] * 10 + [0.8] * 4)
    assert len(detect(engine, series, [receiver.url])) == 1
    deliver_due(engine, [new_secret, SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0, policy=LOCAL)
    assert len(receiver.received) == 1
    receiver.server.shutdown()


def test_refused_targets_get_nothing_and_redirects_are_not_followed(engine, unique):  # type: ignore[no-untyped-def]
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    inner = Receiver(statuses=[])  # stands for an internal service on 127.0.0.1

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.send_response(307)
            self.send_header("Location", inner.url)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    port = inner.server.server_address[1]
    targets = [inner.url, f"http://localhost:{port}/hook", f"http://127.0.0.1:{redirector.server_address[1]}/r"]
    series = f"ssrf-{unique}"

    def alert_for(topic: str, url: str) -> None:
        insert_windows(engine, f"{series}-{topic}", topic, [0.1] * 10 + [0.8] * 4)
        assert len(detect(engine, f"{series}-{topic}", [url])) == 1

    alert_for("Macro", targets[0])
    alert_for("Politics", targets[1])
    # http allowed, private addresses not: the literal loopback address and a name resolving to it fail.
    deliver_due(engine, [SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0,
                policy=TargetPolicy(allow_http=True))
    # Private allowed (development) for the redirector: its 307 is not followed to the internal service.
    alert_for("Earnings", targets[2])
    deliver_due(engine, [SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0, policy=LOCAL)
    assert inner.received == []
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT d.endpoint_url, d.status, d.last_status_code, d.last_error FROM alert_deliveries d "
            "JOIN alerts a ON a.id = d.alert_id WHERE a.series LIKE :s ORDER BY d.id"), {"s": f"{series}-%"}).all()
    by_url = {row.endpoint_url: row for row in rows}
    for refused in targets[:2]:
        assert by_url[refused].status == "failed" and "not a public address" in by_url[refused].last_error
    assert by_url[targets[2]].status == "pending" and by_url[targets[2]].last_status_code == 307
    inner.server.shutdown()
    redirector.shutdown()


def test_one_event_id_per_alert_event_for_every_receiver_and_the_alerts_topic(broker, engine, unique):  # type: ignore[no-untyped-def]
    from confluent_kafka import Producer

    from tests.integration.helpers import read_topic
    from workers.alerting.routing import build_routes
    from workers.ingest.kafka_io import ensure_topics, producer_config

    series, topic = f"events-{unique}", f"alerts-{unique}"
    first, second = Receiver(statuses=[]), Receiver(statuses=[])
    shares = [0.15, 0.18, 0.12, 0.16, 0.14, 0.15, 0.17, 0.13, 0.16, 0.15, 0.7, 0.75, 0.15, 0.1, 0.15, 0.2, 0.15]
    insert_windows(engine, series, "Macro", shares)
    touched = run_detection(engine, SpikeParams(warmup_windows=5), allowed_lateness_s=120, window_seconds=60,
                            routes=build_routes([first.url, second.url], []), series=series, alerts_topic=topic)
    assert len(touched) == 2  # opened, resolved
    ensure_topics(broker.bootstrap, [topic], 2)
    producer = Producer(producer_config(broker.bootstrap))
    assert deliver_due(engine, [SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0, policy=LOCAL) == 4
    assert scalar(engine, "SELECT count(*) FROM alert_deliveries WHERE endpoint_url = :u AND status = 'pending'",
                  u=f"kafka:{topic}") == 2  # without a producer, the topic's rows wait for a deliverer that has one
    assert deliver_due(engine, [SECRET], timeout_s=5, max_attempts=5, base_backoff_s=0.0, policy=LOCAL,
                       producer=producer) == 2
    records = read_topic(broker.bootstrap, topic, f"read-{unique}", expected=2)
    published = {(e := json.loads(m.value())).pop("event_id"): e for m in records}
    assert dict(first.received) == dict(second.received) == published  # same ids, same payloads
    assert {m.key().decode() for m in records} == {"topic:Macro"}
    first.server.shutdown()
    second.server.shutdown()


def test_a_window_is_closed_only_when_every_active_partition_has_passed_it(engine, unique):  # type: ignore[no-untyped-def]
    from workers.alerting.detector import closed_before
    from workers.ingest.sink import register_partitions

    series = f"watermark-{unique}"
    insert_windows(engine, series, "Macro", [0.1] * 30)  # trends up to T0 + 29 min
    progress = "INSERT INTO ingest_progress (series, topic, partition, window_start, updated_at) " \
               "VALUES (:s, 'social', :p, :w, now() - make_interval(secs => :age))"
    with engine.begin() as conn:
        assert closed_before(conn, series, "topic", 120, 120) == T0 + timedelta(minutes=27)  # no progress: newest
        conn.execute(text(progress), {"s": series, "p": 0, "w": T0 + timedelta(minutes=29), "age": 0})
        conn.execute(text(progress), {"s": series, "p": 1, "w": T0 + timedelta(minutes=12), "age": 5})
        assert closed_before(conn, series, "topic", 120, 120) == T0 + timedelta(minutes=10)  # partition 1 is behind
        conn.execute(text(progress), {"s": series, "p": 2, "w": T0 + timedelta(minutes=3), "age": 600})
        assert closed_before(conn, series, "topic", 120, 120) == T0 + timedelta(minutes=10)  # 2 is idle: ignored
        conn.execute(text("UPDATE ingest_progress SET updated_at = now() - interval '1 hour' WHERE series = :s"),
                     {"s": series})
        assert closed_before(conn, series, "topic", 120, 120) == T0 + timedelta(minutes=27)  # all idle: the newest
        # A partition just assigned to a worker that has written none of it yet holds every window back.
        register_partitions(engine, series, [("social", 3)])
        assert closed_before(conn, series, "topic", 120, 120) < T0
        conn.execute(text("UPDATE ingest_progress SET updated_at = now() - interval '1 hour' WHERE series = :s "
                          "AND partition = 3"), {"s": series})
        assert closed_before(conn, series, "topic", 120, 120) == T0 + timedelta(minutes=27)  # idle, so ignored


def test_stepping_a_key_again_or_at_once_changes_nothing(engine, unique):  # type: ignore[no-untyped-def]
    from workers.alerting.detector import Detection, step_key

    series = f"step-{unique}"
    insert_windows(engine, series, "Politics", [0.1] * 10 + [0.9] * 4)
    detection = Detection(SpikeParams(warmup_windows=5), 60, [])
    closed = T0 + timedelta(minutes=12)
    results: list[tuple[list[int], object]] = []

    def once() -> None:
        with engine.begin() as conn:
            results.append(step_key(conn, detection, series, "topic", "Politics", closed))

    threads = [threading.Thread(target=once) for _ in range(4)]  # four owners during a rebalance
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    once()  # a repeated "window touched" event
    assert sorted(len(ids) for ids, _ in results) == [0, 0, 0, 0, 1]
    assert [last for _, last in results].count(T0 + timedelta(minutes=11)) == 1  # one stepped windows 0-11
    assert scalar(engine, "SELECT count(*) FROM alerts WHERE series = :s", s=series) == 1
    assert scalar(engine, "SELECT last_window_start FROM spike_state WHERE series = :s", s=series) == \
        T0 + timedelta(minutes=11)
