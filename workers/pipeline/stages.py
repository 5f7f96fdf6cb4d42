"""Pure batch-to-batch stages: decode -> encode -> score -> columns (-> trend deltas). No I/O here.

Bad records are values (DeadLetter), never exceptions, so nothing is acked without being accounted for.
After validation a batch travels as columns (`Columns`): no prediction object or row dict per message.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol

import numpy as np
from pydantic import ValidationError

from config.settings import Horizons
from models.text import extract_tickers
from models.tokenizing import Encoded
from schemas.messages import Accepted, DeadLetter, NewsArticle, RawMessage, SocialPost
from schemas.predictions import BatchScores
from workers.pipeline.privacy import mask_pii
from workers.pipeline.stories import author_key, story_id_of_words, story_ids

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EARLIEST = datetime(1980, 1, 1, tzinfo=timezone.utc)  # older publication times are input errors
_MICROSECOND = timedelta(microseconds=1)


class Scorer(Protocol):
    """What the pipeline needs of a classifier: tokenise (host) and score (device) as two steps."""

    version: str

    def encode(self, texts: list[str], words_to: Callable[[list[str]], Any] | None = None) -> Encoded: ...

    def score_encoded(self, encoded: Encoded) -> BatchScores: ...


def decode(
    raws: list[RawMessage], now: datetime, max_future_s: float = 300.0, horizons: Horizons = Horizons(),
) -> tuple[list[Accepted], list[DeadLetter]]:
    """Validate each record's JSON against its topic's schema; later duplicates of a key are dropped.

    A message published before the message horizon (`horizons.oldest_message(now)`) is a dead letter:
    its day may already be dropped, so a replay of it could no longer be recognised and would be counted
    twice. Retention drops a day only once it is older than that by a margin (`Horizons.DROP_MARGIN`)."""
    accepted: list[Accepted] = []
    dead: list[DeadLetter] = []
    seen: set[str] = set()
    latest = now + timedelta(seconds=max_future_s)
    oldest = horizons.oldest_message(now)
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
        if oldest is not None and message.published_at < oldest:
            dead.append(DeadLetter("validate", f"published_at {message.published_at.isoformat()} is older than the "
                                               f"message retention horizon ({horizons.messages_days} days): a replay "
                                               "of it could no longer be recognised, so it is not counted", raw))
            continue
        item = Accepted(raw, message)
        key = item.key
        if key in seen:
            continue
        seen.add(key)
        accepted.append(item)
    return accepted, dead


def _validation_reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "message"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)[:1000]


def encode(accepted: list[Accepted], scorer: Scorer) -> Encoded:
    """Tokenise the batch's texts (the host's share of inference), and take each one's story id from the
    words the tokenizer split it into."""
    return scorer.encode([a.message.text for a in accepted], story_id_of_words)


def score(accepted: list[Accepted], encoded: Encoded, scorer: Scorer) -> tuple[list[Accepted], BatchScores | None,
                                                                               list[DeadLetter]]:
    """Score the batch; when the model fails on it (out of memory, NaN output), split it and retry the
    halves, so that only a message that fails on its own becomes a dead letter. Returns the scored
    messages, their scores (None when there are none) and the dead letters."""
    if not accepted:
        return [], None, []
    try:
        scores = scorer.score_encoded(encoded)
        if not (np.isfinite(scores.topic_prob).all() and np.isfinite(scores.sentiment_probs).all()):
            raise FloatingPointError("the model returned non-finite scores")
        return accepted, scores, []
    except (RuntimeError, ValueError, FloatingPointError) as err:  # torch raises RuntimeError, OOM included
        if len(accepted) == 1:
            return [], None, [DeadLetter("classify", f"model failed on this message: {err.__class__.__name__}: "
                                                     f"{str(err)[:200]}", accepted[0].raw)]
        middle = len(accepted) // 2
        left, left_scores, left_dead = score(accepted[:middle], encoded.part(0, middle), scorer)
        right, right_scores, right_dead = score(accepted[middle:], encoded.part(middle, len(accepted)), scorer)
        parts = [p for p in (left_scores, right_scores) if p is not None]
        return left + right, concat_scores(parts) if parts else None, left_dead + right_dead


def classify(accepted: list[Accepted], scorer: Scorer) -> tuple[Columns, list[DeadLetter]]:
    """encode -> score -> columns in one call (backfill, bench); the worker runs the same steps on two
    threads so that tokenising the next batch overlaps the device's work on this one."""
    encoded = encode(accepted, scorer)
    scored, scores, dead = score(accepted, encoded, scorer)
    return to_columns(scored, scores, encoded), dead


def concat_scores(parts: list[BatchScores]) -> BatchScores:
    first = parts[0]
    if len(parts) == 1:
        return first
    return BatchScores(np.concatenate([p.topic_index for p in parts]), np.concatenate([p.topic_prob for p in parts]),
                       np.concatenate([p.sentiment_probs for p in parts]), first.topics, first.sentiments,
                       first.model_version)


@dataclass(frozen=True)
class Columns:
    """A classified batch as columns, in message order: what the sink copies into Postgres."""

    message_key: list[str]
    kind: list[str]
    source: list[str]
    external_id: list[str]
    published_us: list[int]  # publication time, microseconds since the Unix epoch (UTC)
    text: list[str]  # social posts with e-mails and phone numbers masked
    url: list[str | None]
    author: list[str | None]
    language: list[str]
    topic: list[str]
    topic_prob: np.ndarray
    sentiment: list[str]
    probs: np.ndarray  # (n, 3): negative, neutral, positive
    sentiment_score: np.ndarray  # P(positive) - P(negative)
    tickers: list[list[str]]
    model_version: str
    kafka_topic: list[str]
    kafka_partition: list[int]
    kafka_offset: list[int]
    story_id: list[int]  # near duplicates share one (stories.story_id)
    author_key: list[int | None]  # who posted, as a key (stories.author_key); None: the feed names no author

    def __len__(self) -> int:
        return len(self.message_key)


def to_columns(accepted: list[Accepted], scores: BatchScores | None, encoded: Encoded | None = None) -> Columns:
    """Messages and their scores -> columns. Labels come from the scores (the model that made them). The
    story ids are those the tokenizer's pass made (`encode`) when `encoded` is these messages' texts (a
    batch that lost a message to a model failure is not), else they are read from the texts."""
    messages = [a.message for a in accepted]
    raws = [a.raw for a in accepted]
    if scores is None:  # nothing was scored
        scores = BatchScores(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 3), np.float32),
                             ("",), ("negative", "neutral", "positive"), "")
    order = [scores.sentiments.index(name) for name in ("negative", "neutral", "positive")]
    probs = np.round(scores.sentiment_probs[:, order].astype(np.float64), 6)
    texts = [m.text for m in messages]
    if encoded is not None and encoded.from_words is not None and encoded.texts == texts:
        stories = encoded.from_words
    else:  # a batch split by a model failure, or a served tokenizer unlike the shipped one
        stories = story_ids(texts)
    return Columns(
        message_key=[f"{m.source}:{m.id}" for m in messages],
        kind=[r.kind for r in raws],
        source=[m.source for m in messages],
        external_id=[m.id for m in messages],
        published_us=[(m.published_at - EPOCH) // _MICROSECOND for m in messages],
        text=[mask_pii(t) if r.kind == "social" else t for t, r in zip(texts, raws)],
        url=[m.url for m in messages],
        author=[m.author for m in messages],
        language=[m.language for m in messages],
        topic=np.asarray(scores.topics, dtype=object)[scores.topic_index].tolist(),
        topic_prob=np.round(scores.topic_prob.astype(np.float64), 6),
        sentiment=np.asarray(("negative", "neutral", "positive"), dtype=object)[probs.argmax(axis=1)].tolist(),
        probs=probs,
        sentiment_score=np.round(probs[:, 2] - probs[:, 0], 6),
        tickers=[extract_tickers(t) for t in texts],
        model_version=scores.model_version,
        kafka_topic=[r.topic for r in raws],
        kafka_partition=[r.partition for r in raws],
        kafka_offset=[r.offset for r in raws],
        story_id=stories,
        author_key=[author_key(m.author, m.source) for m in messages],
    )


def utc_from_micros(micros: int) -> datetime:
    """A `Columns.published_us` value as a UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


def window_start(ts: datetime, window_seconds: int) -> datetime:
    seconds = int((ts - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=seconds - seconds % window_seconds)


@dataclass
class TrendDelta:
    n_messages: int = 0
    n_negative: int = 0
    n_neutral: int = 0
    n_positive: int = 0
    sum_score: float = 0.0


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str, datetime], TrendDelta]:
    """Per (dimension, key, window) count deltas: topic, each ticker, source. Each row needs topic,
    source, tickers, sentiment, sentiment_score and window_start.

    The reference definition of a trend delta, on plain data: `trend_deltas` computes the same on a
    batch's columns, and tests check the two against each other."""
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


@dataclass(frozen=True)
class Windowed:
    """A batch's columns with each message's window start in epoch seconds (windows are aligned to the
    epoch, as `window_start` and Postgres' `date_bin(..., timestamptz 'epoch')`), and which of its
    messages count (None: all): for a sink, the ones it stored."""

    columns: Columns
    windows: list[int]
    rows: list[int] | None = None

    @classmethod
    def of(cls, columns: Columns, window_seconds: int, rows: list[int] | None = None) -> "Windowed":
        step = window_seconds * 1_000_000
        return cls(columns, [us // step * window_seconds for us in columns.published_us], rows)

    def indices(self) -> range | list[int]:
        return range(len(self.columns)) if self.rows is None else self.rows

    def narrowed(self, rows: list[int]) -> "Windowed":
        return Windowed(self.columns, self.windows, rows)


@dataclass(frozen=True)
class TrendDeltas:
    """Per (dimension, key, window) count deltas as columns, sorted by (dimension, key, window):
    what the sink adds to trend_windows. `window` is the window start in epoch seconds."""

    dimension: list[str]
    key: list[str]
    window: list[int]
    n_messages: list[int]
    n_negative: list[int]
    n_neutral: list[int]
    n_positive: list[int]
    sum_score: list[float]

    def __len__(self) -> int:
        return len(self.key)

    def as_dict(self) -> dict[tuple[str, str, datetime], TrendDelta]:
        """The same deltas in `aggregate`'s shape."""
        return {(d, k, EPOCH + timedelta(seconds=w)): TrendDelta(n, neg, neu, pos, s)
                for d, k, w, n, neg, neu, pos, s in zip(self.dimension, self.key, self.window, self.n_messages,
                                                        self.n_negative, self.n_neutral, self.n_positive,
                                                        self.sum_score, strict=True)}


_SENTIMENT_SLOT = {"negative": 1, "neutral": 2, "positive": 3}


def trend_deltas(parts: list[Windowed]) -> TrendDeltas:
    """`aggregate` over the counted messages of batches' columns."""
    acc: dict[tuple[str, str, int], list[Any]] = {}
    for part in parts:
        c, windows = part.columns, part.windows
        topic, source, tickers, sentiment, score = c.topic, c.source, c.tickers, c.sentiment, c.sentiment_score.tolist()
        for i in part.indices():
            w, slot, value = windows[i], _SENTIMENT_SLOT[sentiment[i]], score[i]
            keys = [("topic", topic[i], w), ("source", source[i], w)]
            if tickers[i]:
                keys += [("ticker", t, w) for t in tickers[i]]
            for key in keys:
                counts = acc.get(key)
                if counts is None:
                    counts = acc[key] = [0, 0, 0, 0, 0.0]
                counts[0] += 1
                counts[slot] += 1
                counts[4] += value
    ordered = sorted(acc)
    values = [acc[k] for k in ordered]
    return TrendDeltas([k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered],
                       [v[0] for v in values], [v[1] for v in values], [v[2] for v in values],
                       [v[3] for v in values], [v[4] for v in values])


def newest_windows(parts: list[Windowed]) -> dict[tuple[str, int], int]:
    """The newest window per input (topic, partition) over all messages of the batches, counted or not:
    how far event time has got there."""
    newest: dict[tuple[str, int], int] = {}
    for part in parts:
        c = part.columns
        for topic, partition, w in zip(c.kafka_topic, c.kafka_partition, part.windows, strict=True):
            if w > newest.get((topic, partition), -1):
                newest[(topic, partition)] = w
    return newest


@dataclass(frozen=True)
class Touched:
    """A (dimension, key, window) a batch added to: what the workers tell the detector."""

    dimension: str
    key: str
    window_start: datetime
