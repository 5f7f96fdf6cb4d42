"""Drift: has the champion's view of the stream moved since it started serving?

The reference is the champion's first `window` classified messages, the recent sample its last
`window`. Two measures: the Jensen-Shannon divergence (base 2, 0..1) of the topic and of the sentiment
shares, and the fall in mean topic confidence, which is what unfamiliar vocabulary does to a model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from schemas.tables import drift_checks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftThresholds:
    window: int = 2000
    max_js: float = 0.05
    max_confidence_drop: float = 0.05


@dataclass(frozen=True)
class DriftResult:
    model_version: str
    reference_n: int
    recent_n: int
    topic_js: float
    sentiment_js: float
    confidence_drop: float
    drifted: bool


def js_divergence(p: dict[str, int], q: dict[str, int]) -> float:
    """Jensen-Shannon divergence, base 2, of two count tables over the union of their keys."""
    keys = set(p) | set(q)
    np_, nq = sum(p.values()), sum(q.values())
    if not np_ or not nq:
        return 0.0
    total = 0.0
    for key in keys:
        a, b = p.get(key, 0) / np_, q.get(key, 0) / nq
        m = (a + b) / 2
        if a:
            total += a * math.log2(a / m) / 2
        if b:
            total += b * math.log2(b / m) / 2
    return max(0.0, min(1.0, total))


_SAMPLE = """
    SELECT topic, sentiment, topic_prob FROM classified_messages
    WHERE model_version = :version ORDER BY classified_at {direction}, message_key LIMIT :n"""


def _sample(conn: Connection, version: str, n: int, direction: str) -> tuple[dict[str, int], dict[str, int], float, int]:
    rows = conn.execute(text(_SAMPLE.format(direction=direction)), {"version": version, "n": n}).all()
    topics: dict[str, int] = {}
    sentiments: dict[str, int] = {}
    for row in rows:
        topics[row.topic] = topics.get(row.topic, 0) + 1
        sentiments[row.sentiment] = sentiments.get(row.sentiment, 0) + 1
    confidence = sum(float(row.topic_prob) for row in rows) / len(rows) if rows else 0.0
    return topics, sentiments, confidence, len(rows)


def check(engine: Engine, version: str, thresholds: DriftThresholds) -> DriftResult | None:
    """Compare the version's first and last `window` messages; None until it has classified 2 windows."""
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM classified_messages WHERE model_version = :v"),
                             {"v": version}).scalar_one()
        if count < 2 * thresholds.window:
            log.info("drift check: %s has classified %d messages, needs %d", version, count, 2 * thresholds.window)
            return None
        ref_topics, ref_sent, ref_conf, ref_n = _sample(conn, version, thresholds.window, "ASC")
        new_topics, new_sent, new_conf, new_n = _sample(conn, version, thresholds.window, "DESC")
    topic_js, sentiment_js = js_divergence(ref_topics, new_topics), js_divergence(ref_sent, new_sent)
    drop = ref_conf - new_conf
    drifted = max(topic_js, sentiment_js) > thresholds.max_js or drop > thresholds.max_confidence_drop
    return DriftResult(version, ref_n, new_n, round(topic_js, 5), round(sentiment_js, 5), round(drop, 5), drifted)


def record(engine: Engine, result: DriftResult, triggered_training: bool) -> None:
    with engine.begin() as conn:
        conn.execute(drift_checks.insert().values(
            model_version=result.model_version, reference_n=result.reference_n, recent_n=result.recent_n,
            topic_js=result.topic_js, sentiment_js=result.sentiment_js, confidence_drop=result.confidence_drop,
            drifted=result.drifted, triggered_training=triggered_training))
    level = logging.WARNING if result.drifted else logging.INFO
    log.log(level, "drift check %s: topic JS %.4f, sentiment JS %.4f, confidence drop %.4f -> %s",
            result.model_version, result.topic_js, result.sentiment_js, result.confidence_drop,
            "drifted, training early" if triggered_training else ("drifted" if result.drifted else "stable"))
