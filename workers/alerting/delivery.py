"""Webhook delivery from the outbox (alert_deliveries), signed the Standard Webhooks way.

Headers: webhook-id, webhook-timestamp, webhook-signature = "v1," + base64(HMAC-SHA256(secret,
"{id}.{timestamp}.{body}")), where the secret is "whsec_" + base64 key. Each due row is claimed with
FOR UPDATE SKIP LOCKED, so two workers never send the same row at once; every attempt is recorded.
A receiver deduplicates on webhook-id, which stays the same across retries.

An outbox row whose endpoint is "kafka:<topic>" is published to that topic instead (finsentry.alerts):
the same payload plus "event_id" (the event's webhook-id), keyed "dimension:key", marked delivered once
the broker has acknowledged it. Consumers deduplicate on event_id (a crash between the broker's ack and
the row's update sends it again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert

from schemas.tables import alert_deliveries, delivery_attempts, webhook_endpoints
from workers.alerting.detector import KAFKA_PREFIX
from workers.alerting.targets import TargetPolicy, UnsafeTarget, check_url, opener
from workers.retry import backoff_s


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: list[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """One signature per current secret, space-separated: receivers accept any they know (rotation)."""
    return " ".join(sign(s, webhook_id, timestamp, body) for s in secrets)


def verify(secrets: list[str], headers: dict[str, str], body: bytes, tolerance_s: int = 300) -> bool:
    """Receiver side: true when any current secret signed this body recently."""
    try:
        timestamp = int(headers["webhook-timestamp"])
        webhook_id = headers["webhook-id"]
        offered = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = {sign(s, webhook_id, timestamp, body) for s in secrets}
    return any(hmac.compare_digest(o, e) for o in offered for e in expected)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: float
    error: str | None
    retry_after_s: float | None = None
    permanent: bool = False  # retrying cannot help (the target is refused)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, policy: TargetPolicy) -> Outcome:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    started = time.monotonic()
    try:
        check_url(url, policy)
        with opener(policy).open(request, timeout=timeout_s) as response:
            return Outcome(response.status, (time.monotonic() - started) * 1000, None)
    except urllib.error.HTTPError as err:
        retry_after = err.headers.get("Retry-After") if err.headers else None
        return Outcome(err.code, (time.monotonic() - started) * 1000, f"HTTP {err.code}",
                       float(retry_after) if retry_after and retry_after.isdigit() else None)
    except UnsafeTarget as err:
        return Outcome(None, (time.monotonic() - started) * 1000, f"refused target: {err}"[:500], permanent=True)
    except (urllib.error.URLError, OSError) as err:
        return Outcome(None, (time.monotonic() - started) * 1000, f"{err.__class__.__name__}: {err}"[:500])


MAX_WAIT_S = 3600.0  # between two attempts of one webhook


@dataclass(frozen=True)
class Attempt:
    """What became of one due delivery in a pass: for metrics."""

    channel: str  # "webhook", or "kafka" (the alerts topic)
    result: str  # "delivered", "retrying", "failed" (gave up, or the target is refused) or "disabled" (410 Gone)
    outcome: Outcome | None  # None: not sent, the endpoint was disabled before


def publish(producer: Producer, topic: str, event_id: str, payload: dict[str, Any], timeout_s: float) -> Outcome:
    """One alert event to a Kafka topic; success once the broker has acknowledged it."""
    value = json.dumps({"event_id": event_id, **payload}, sort_keys=True, separators=(",", ":")).encode()
    errors: list[str] = []
    started = time.monotonic()
    producer.produce(topic, value=value, key=f"{payload.get('dimension')}:{payload.get('key')}".encode(),
                     headers={"event-id": event_id}, on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
    if producer.flush(timeout_s) > 0 and not errors:
        errors.append(f"not acknowledged within {timeout_s} s")
    latency_ms = (time.monotonic() - started) * 1000
    return Outcome(None, latency_ms, errors[0][:500]) if errors else Outcome(200, latency_ms, None)


def deliver_due(
    engine: Engine, secrets: list[str], timeout_s: float, max_attempts: int, base_backoff_s: float,
    limit: int = 20, rng: random.Random | None = None, policy: TargetPolicy = TargetPolicy(),
    producer: Producer | None = None, on_attempt: Callable[[Attempt], None] | None = None,
) -> int:
    """Send every due delivery once; return how many were delivered. Without a producer, rows for Kafka
    topics are left for a deliverer that has one. `on_attempt` hears what became of each row."""
    rng = rng or random.Random()
    delivered = 0
    with engine.begin() as conn:
        due_rows = select(alert_deliveries).where(alert_deliveries.c.status == "pending",
                                                  alert_deliveries.c.next_attempt_at <= func.now())
        if producer is None:
            due_rows = due_rows.where(alert_deliveries.c.endpoint_url.not_like(f"{KAFKA_PREFIX}%"))
        due = conn.execute(due_rows.order_by(alert_deliveries.c.id).limit(limit).with_for_update(skip_locked=True)).all()
        gone: set[str] = set(conn.execute(select(webhook_endpoints.c.url)).scalars())
        for row in due:
            channel = "kafka" if row.endpoint_url.startswith(KAFKA_PREFIX) else "webhook"
            if row.endpoint_url in gone:
                conn.execute(alert_deliveries.update().where(alert_deliveries.c.id == row.id)
                             .values(status="disabled"))
                if on_attempt:
                    on_attempt(Attempt(channel, "disabled", None))
                continue
            if channel == "kafka":
                assert producer is not None
                outcome = publish(producer, row.endpoint_url.removeprefix(KAFKA_PREFIX), row.webhook_id, row.payload,
                                  timeout_s)
            else:
                body = json.dumps(row.payload, sort_keys=True, separators=(",", ":")).encode()
                timestamp = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "user-agent": "finsentry-webhooks/1",
                    "webhook-id": row.webhook_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": signature_header(secrets, row.webhook_id, timestamp, body),
                }
                outcome = post(row.endpoint_url, body, headers, timeout_s, policy)
            conn.execute(delivery_attempts.insert().values(
                delivery_id=row.id, status_code=outcome.status_code, latency_ms=outcome.latency_ms,
                error=outcome.error))
            attempts = row.attempts + 1
            values: dict[str, Any] = {"attempts": attempts, "last_status_code": outcome.status_code,
                                      "last_error": outcome.error}
            if outcome.status_code is not None and 200 <= outcome.status_code < 300:
                values.update(status="delivered", delivered_at=func.now())
                delivered += 1
            elif outcome.status_code == 410:
                # Gone: disable the endpoint itself, and everything still queued for it.
                values.update(status="disabled")
                gone.add(row.endpoint_url)
                conn.execute(insert(webhook_endpoints).values(url=row.endpoint_url, reason="HTTP 410 Gone")
                             .on_conflict_do_nothing())
                conn.execute(alert_deliveries.update()
                             .where(alert_deliveries.c.endpoint_url == row.endpoint_url,
                                    alert_deliveries.c.status == "pending")
                             .values(status="disabled"))
            elif outcome.permanent or attempts >= max_attempts:
                values.update(status="failed")
            else:
                wait = outcome.retry_after_s if outcome.retry_after_s is not None else backoff_s(
                    attempts, base_backoff_s, MAX_WAIT_S, rng)
                values.update(next_attempt_at=func.now() + timedelta(seconds=wait))
            conn.execute(alert_deliveries.update().where(alert_deliveries.c.id == row.id).values(**values))
            if on_attempt:
                on_attempt(Attempt(channel, str(values.get("status", "retrying")), outcome))
    return delivered
