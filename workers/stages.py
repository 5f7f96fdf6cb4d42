"""Pure batch-to-batch stages: decode -> classify -> rows and trend deltas. No I/O here.

Bad records are values (DeadLetter), never exceptions, so nothing is acked without being accounted for.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from models.classifier import BatchScores
from schemas.messages import (
    Accepted,
    Classified,
    DeadLetter,
    NewsArticle,
    RawMessage,
    SocialPost,
)
from schemas.predictions import Prediction
from workers.privacy import mask_pii

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EARLIEST = datetime(1980, 1, 1, tzinfo=timezone.utc)  # older publication times are input errors


class Scorer(Protocol):
    """What the classify stage needs of a classifier."""

    version: str

    def score(self, texts: list[str]) -> BatchScores: ...

    def prediction(self, scores: BatchScores, row: int, text: str) -> Prediction: ...


def decode(
    raws: list[RawMessage], now: datetime, max_future_s: float = 300.0
) -> tuple[list[Accepted], list[DeadLetter]]:
    """Validate each record's JSON against its topic's schema; later duplicates of a key are dropped."""
    accepted: list[Accepted] = []
    dead: list[DeadLetter] = []
    seen: set[str] = set()
    latest = now + timedelta(seconds=max_future_s)
    for raw in raws:
        if raw.value is None:
            dead.append(DeadLetter("decode", "empty record (no value)", raw))
            continue
        model = NewsArticle if raw.kind == "news" else SocialPost
        try:
            message = model.model_validate_json(raw.value)
        except ValidationError as err:
            dead.append(DeadLetter("validate", _validation_reason(err), raw))
            continue
        if message.published_at < EARLIEST:
            dead.append(DeadLetter("validate", f"published_at {message.published_at.isoformat()} is before "
                                               f"{EARLIEST.year}: not a plausible publication time", raw))
            continue
        if message.published_at > latest:
            dead.append(DeadLetter("validate", f"published_at {message.published_at.isoformat()} is in the future", raw))
            continue
        item = Accepted(raw, message)
        if item.key in seen:
            continue
        seen.add(item.key)
        accepted.append(item)
    return accepted, dead


def _validation_reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "message"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)[:1000]


def classify(accepted: list[Accepted], scorer: Scorer) -> list[Classified]:
    """One scoring call for the whole batch; the scorer batches for the device itself."""
    texts = [a.message.text for a in accepted]
    scores = scorer.score(texts)
    if not (np.isfinite(scores.topic_prob).all() and np.isfinite(scores.sentiment_probs).all()):
        raise FloatingPointError("the model returned non-finite scores")
    return [Classified(a, scorer.prediction(scores, i, texts[i])) for i, a in enumerate(accepted)]


def classify_resilient(accepted: list[Accepted], scorer: Scorer) -> tuple[list[Classified], list[DeadLetter]]:
    """Classify; when the model fails on a batch (out of memory, NaN output), split it and retry the
    halves, so that only a message that fails on its own becomes a dead letter."""
    if not accepted:
        return [], []
    try:
        return classify(accepted, scorer), []
    except (RuntimeError, ValueError, FloatingPointError) as err:  # torch raises RuntimeError, OOM included
        if len(accepted) == 1:
            return [], [DeadLetter("classify", f"model failed on this message: {err.__class__.__name__}: "
                                               f"{str(err)[:200]}", accepted[0].raw)]
        middle = len(accepted) // 2
        left, left_dead = classify_resilient(accepted[:middle], scorer)
        right, right_dead = classify_resilient(accepted[middle:], scorer)
        return left + right, left_dead + right_dead


def window_start(ts: datetime, window_seconds: int) -> datetime:
    seconds = int((ts - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=seconds - seconds % window_seconds)


def to_row(item: Classified, window_seconds: int) -> dict[str, Any]:
    """The classified_messages row for one message."""
    m, p, raw = item.accepted.message, item.prediction, item.accepted.raw
    return {
        "message_key": item.accepted.key,
        "kind": raw.kind,
        "source": m.source,
        "external_id": m.id,
        "published_at": m.published_at,
        "window_start": window_start(m.published_at, window_seconds),
        "text": mask_pii(m.text) if raw.kind == "social" else m.text,
        "url": m.url,
        "author": m.author,
        "language": m.language,
        "topic": p.topic,
        "topic_prob": p.topic_prob,
        "sentiment": p.sentiment,
        "p_negative": p.sentiment_probs["negative"],
        "p_neutral": p.sentiment_probs["neutral"],
        "p_positive": p.sentiment_probs["positive"],
        "sentiment_score": p.sentiment_score,
        "tickers": p.tickers,
        "model_version": p.model_version,
        "kafka_topic": raw.topic,
        "kafka_partition": raw.partition,
        "kafka_offset": raw.offset,
    }


@dataclass
class TrendDelta:
    n_messages: int = 0
    n_negative: int = 0
    n_neutral: int = 0
    n_positive: int = 0
    sum_score: float = 0.0


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str, datetime], TrendDelta]:
    """Per (dimension, key, window) count deltas from classified rows: topic, each ticker, source."""
    deltas: dict[tuple[str, str, datetime], TrendDelta] = defaultdict(TrendDelta)
    for row in rows:
        keys = [("topic", row["topic"]), ("source", row["source"])]
        keys += [("ticker", t) for t in row["tickers"]]
        for dimension, key in keys:
            d = deltas[(dimension, key, row["window_start"])]
            d.n_messages += 1
            d.sum_score += row["sentiment_score"]
            if row["sentiment"] == "negative":
                d.n_negative += 1
            elif row["sentiment"] == "positive":
                d.n_positive += 1
            else:
                d.n_neutral += 1
    return dict(deltas)

