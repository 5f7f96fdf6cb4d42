"""The whole path: messages in the broker -> worker -> trends and "window touched" events -> the faust
detector -> a signed webhook received once, and the same event on the alerts topic."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.faults import DetectorProcess
from tests.integration.helpers import (
    SECRET,
    Receiver,
    RunningWorker,
    read_topic,
    scalar,
    send,
    setup_topics,
    wait_for,
)
from workers.ingest.processes import detector_env

pytestmark = pytest.mark.integration

CALM = ["Company to report third quarter results on November 5", "Board declares regular quarterly dividend",
        "Company to present at the Goldman Sachs investor conference", "Firm names new chief financial officer"]
GRIM = ["Shares crash as the company warns it may file for bankruptcy",
        "Stock plunges after regulators open a massive fraud probe",
        "Company slashes guidance, shares tumble to a ten-year low"]
# A genuine burst is many stories: detection counts a story once per window (repeats of one are a flood).
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella"]
BURST = [f"{company} {grim[0].lower()}{grim[1:]}" for company in COMPANIES for grim in GRIM]


def test_a_negative_burst_reaches_the_receiver_once(broker, engine, classifier, settings, unique, tmp_path):  # type: ignore[no-untyped-def]
    receiver = Receiver(statuses=[])
    source = f"e2e-{unique}"
    s = settings.model_copy(update={
        "webhook_urls": receiver.url, "webhook_secrets": settings.webhook_secrets.__class__(SECRET),
        "spike_dimensions": ["source"], "spike_min_volume": 4, "spike_warmup_windows": 3,
        "allowed_lateness_s": 60, "detect_interval_s": 0.2, "webhook_allow_http": True, "webhook_allow_private": True,
    })
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=20)
    messages = []
    for minute in range(18):
        burst = minute in (12, 13)
        texts = BURST if burst else CALM + CALM[:2]
        for i, text in enumerate(texts):
            at = start + timedelta(minutes=minute, seconds=i)
            messages.append({"id": f"{minute}-{i}", "source": source, "text": text, "published_at": at.isoformat()})
    setup_topics(broker.bootstrap, s)
    send(broker.bootstrap, s.social_topic, messages)

    database_url = engine.url.render_as_string(hide_password=False)
    detector = DetectorProcess(detector_env(s, broker.bootstrap, database_url), tmp_path).start()
    try:
        with RunningWorker(s, classifier, engine, broker.bootstrap) as running:
            wait_for(lambda: running.worker.stats.consumed == len(messages), what="every message consumed")
            wait_for(lambda: len(receiver.received) >= 1, timeout_s=90, what="the alert webhook")
            records = read_topic(broker.bootstrap, s.alerts_topic, f"alerts-{unique}", expected=1, timeout_s=60)
    finally:
        detector.stop()

    assert scalar(engine, "SELECT sum(n_messages) FROM trend_windows WHERE series = :s AND dimension = 'source'",
                  s=s.trend_series) == len(messages)
    opened = [p for _, p in receiver.received if p["type"] == "alert.opened"]
    assert len(opened) == 1 and len({wid for wid, _ in receiver.received}) == len(receiver.received)
    alert = opened[0]
    assert alert["key"] == source and alert["dimension"] == "source"
    burst = {(start + timedelta(minutes=m)).isoformat() for m in (12, 13)}
    assert alert["window_start"] in burst  # within two windows of the burst's start
    assert alert["observed_negative_share"] > 0.8
    assert any(t["text"] in BURST for t in alert["top_negative"])
    receiver.server.shutdown()
    # The same event on the alerts topic: the webhook's payload plus event_id = its webhook-id.
    events = {(e := json.loads(m.value())).pop("event_id"): e for m in records}
    webhook_id = next(wid for wid, p in receiver.received if p["type"] == "alert.opened")
    assert events[webhook_id] == alert
