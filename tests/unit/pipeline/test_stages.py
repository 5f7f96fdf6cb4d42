import json
from datetime import datetime, timedelta, timezone

from config.settings import Horizons
from schemas.messages import RawMessage
from workers.pipeline.stages import (
    Windowed,
    aggregate,
    classify,
    decode,
    trend_deltas,
    utc_from_micros,
    window_start,
)
from workers.pipeline.stories import story_id

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def raw(value: object, kind: str = "social", offset: int = 0) -> RawMessage:
    data = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return RawMessage(kind, data, f"{kind}-topic", 0, offset)  # type: ignore[arg-type]


def post(i: int, text: str = "$AAPL shares slump after weak guidance", **extra: object) -> dict[str, object]:
    return {"id": str(i), "source": "x", "published_at": "2026-11-22T11:58:30+00:00", "text": text, **extra}


def test_valid_posts_and_articles_are_accepted() -> None:
    article = {"id": "a1", "source": "wire", "published_at": "2026-11-22T11:00:00Z", "title": "Fed holds rates"}
    accepted, dead = decode([raw(post(1)), raw(article, kind="news")], NOW)
    assert dead == []
    assert [a.key for a in accepted] == ["x:1", "wire:a1"]
    assert accepted[1].message.text == "Fed holds rates"


def test_bad_records_become_dead_letters_with_reasons() -> None:
    records = [
        raw(b"{not json"),
        raw(b"\xff\xfe\x00"),
        raw(None),
        raw({"id": "1", "source": "x", "published_at": "2026-11-22T11:00:00Z"}),  # no text
        raw(post(2, published_at="2026-11-22T11:00:00")),  # naive timestamp
        raw(post(3, text=123)),  # wrong type (strict: no coercion)
        raw(post(4, extra_field=1)),  # unknown field
        raw(post(5, published_at=(NOW + timedelta(days=2)).isoformat())),  # future
        raw(post(6, text="x" * 20_001)),  # too long
    ]
    accepted, dead = decode(records, NOW)
    assert accepted == []
    assert len(dead) == len(records)
    reasons = [d.reason for d in dead]
    assert "empty record" in reasons[2]
    assert "text" in reasons[3]
    assert "timezone" in reasons[4]
    assert "future" in reasons[7]
    assert all(d.raw is r for d, r in zip(dead, records))


def test_a_message_older_than_the_message_horizon_is_a_dead_letter_with_the_reason() -> None:
    horizons = Horizons(messages_days=10)
    oldest = NOW - timedelta(days=10)
    records = [raw(post(1, published_at=(oldest - timedelta(microseconds=1)).isoformat())),  # just too old
               raw(post(2, published_at=oldest.isoformat())),  # exactly the horizon: accepted
               raw(post(3, published_at=(NOW - timedelta(days=400)).isoformat()))]
    accepted, dead = decode(records, NOW, horizons=horizons)
    assert [a.key for a in accepted] == ["x:2"]
    assert [d.raw for d in dead] == [records[0], records[2]]
    assert all(d.stage == "validate" and "older than the message retention horizon (10 days)" in d.reason
               and "could no longer be recognised" in d.reason for d in dead)
    # Relative to the injected time, not the clock; with no horizon (0) nothing is too old.
    assert [a.key for a in decode(records[2:], NOW - timedelta(days=395), horizons=horizons)[0]] == ["x:3"]
    assert len(decode(records, NOW, horizons=Horizons())[0]) == 3


def test_duplicate_keys_in_one_batch_are_kept_once() -> None:
    accepted, dead = decode([raw(post(1), offset=0), raw(post(1), offset=1)], NOW)
    assert len(accepted) == 1 and dead == []


def test_window_start_floors_to_the_window() -> None:
    ts = datetime(2026, 11, 22, 11, 58, 30, tzinfo=timezone.utc)
    assert window_start(ts, 60) == datetime(2026, 11, 22, 11, 58, tzinfo=timezone.utc)
    assert window_start(ts, 3600) == datetime(2026, 11, 22, 11, 0, tzinfo=timezone.utc)


def test_classify_and_aggregate_count_each_dimension(classifier) -> None:  # type: ignore[no-untyped-def]
    accepted, _ = decode([raw(post(1)), raw(post(2, text="$MSFT and $AAPL rally on record earnings"))], NOW)
    columns, dead = classify(accepted, classifier)
    assert dead == [] and columns.message_key == ["x:1", "x:2"]
    assert columns.tickers == [["AAPL"], ["MSFT", "AAPL"]]
    assert columns.model_version == classifier.version and set(columns.topic) <= set(classifier.topics)
    # The columns agree with the per-message prediction the CLI gives.
    for i, prediction in enumerate(classifier.predict([a.message.text for a in accepted])):
        assert (columns.topic[i], columns.sentiment[i]) == (prediction.topic, prediction.sentiment)
        assert abs(columns.sentiment_score[i] - prediction.sentiment_score) < 1e-5
        assert abs(columns.probs[i].sum() - 1.0) < 1e-4
    deltas = trend_deltas([Windowed.of(columns, 60)]).as_dict()
    minute = datetime(2026, 11, 22, 11, 58, tzinfo=timezone.utc)
    assert deltas[("source", "x", minute)].n_messages == 2
    assert deltas[("ticker", "AAPL", minute)].n_messages == 2
    assert deltas[("ticker", "MSFT", minute)].n_messages == 1
    assert sum(d.n_messages for (dim, _, _), d in deltas.items() if dim == "topic") == 2
    for d in deltas.values():
        assert d.n_negative + d.n_neutral + d.n_positive == d.n_messages


class FailsOn:
    """Fault injection around the real classifier: fails any batch holding a poison text."""

    def __init__(self, classifier, poison: str, error: Exception) -> None:  # type: ignore[no-untyped-def]
        self.classifier, self.poison, self.error = classifier, poison, error
        self.version = classifier.version
        self.calls = 0

    def encode(self, texts, words_to=None):  # type: ignore[no-untyped-def]
        return self.classifier.encode(texts, words_to)

    def score_encoded(self, encoded):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.poison in encoded.texts:
            raise self.error
        return self.classifier.score_encoded(encoded)


def test_a_model_failure_splits_the_batch_and_dead_letters_only_the_poison(classifier) -> None:  # type: ignore[no-untyped-def]
    names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    records = [raw(post(i, text=f"Shares of {names[i]} rise on strong demand")) for i in range(8)]
    records[5] = raw(post(5, text="POISON"))
    accepted, _ = decode(records, NOW)
    scorer = FailsOn(classifier, "POISON", RuntimeError("CUDA out of memory"))
    columns, dead = classify(accepted, scorer)
    assert columns.message_key == [f"x:{i}" for i in range(8) if i != 5]
    assert len(columns.topic) == len(columns.sentiment_score) == 7
    # the story ids after the split are the texts' own (the fallback path), one story per text
    assert columns.story_id == [story_id(f"Shares of {names[i]} rise on strong demand") for i in range(8) if i != 5]
    assert len(set(columns.story_id)) == 7
    assert len(dead) == 1 and dead[0].raw is records[5] and "out of memory" in dead[0].reason
    assert scorer.calls <= 2 * 3 + 1  # halving: about log2(8) failing levels, not one call per message


def test_non_finite_scores_count_as_a_model_failure(classifier) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    class NaNOn(FailsOn):
        def score_encoded(self, encoded):  # type: ignore[no-untyped-def]
            scores = self.classifier.score_encoded(encoded)
            if self.poison in encoded.texts:
                scores.sentiment_probs[encoded.texts.index(self.poison)] = np.nan
            return scores

    accepted, _ = decode([raw(post(1)), raw(post(2, text="NAN"))], NOW)
    columns, dead = classify(accepted, NaNOn(classifier, "NAN", RuntimeError()))
    assert columns.message_key == ["x:1"] and dead[0].stage == "classify"


def test_the_zero_cost_model_tokenises_like_the_real_one(classifier) -> None:  # type: ignore[no-untyped-def]
    from config.settings import DEFAULT_MODEL_DIR
    from models.classifier import ZeroCostClassifier

    zero = ZeroCostClassifier(DEFAULT_MODEL_DIR)
    texts = ["$AAPL shares slump after weak guidance", "Fed holds rates", "a" * 5000]
    assert zero.encode(texts).ids == classifier.encode(texts).ids
    scores = zero.score(texts)
    assert scores.model_version == "zero-cost" and scores.topics == tuple(classifier.topics)
    assert np_allclose(scores.sentiment_probs.sum(axis=1), 1.0)


def np_allclose(values, target) -> bool:  # type: ignore[no-untyped-def]
    import numpy as np

    return bool(np.allclose(values, target, atol=1e-5))


def test_trend_deltas_equal_the_reference_over_parts_and_chosen_rows() -> None:
    """The sink's fast aggregation against `aggregate`, the plain definition: several batches, a subset
    of rows, publication times in other zones and on window edges, three window sizes."""
    from config.settings import DEFAULT_MODEL_DIR
    from models.classifier import ZeroCostClassifier

    zero = ZeroCostClassifier(DEFAULT_MODEL_DIR)  # varied topics and sentiments, no forward pass
    texts = ["$AAPL slumps", "Fed holds rates", "$TSLA and $AAPL rally", "Oil jumps", "Bank cuts dividend",
             "$NVDA record", "Markets flat", "$AAPL $aapl again"]
    stamps = ["2026-11-22T11:58:30+00:00", "2026-11-22T17:29:59.999999+05:30", "2026-11-22T01:00:00-11:00",
              "2026-11-22T12:00:00+00:00", "2026-11-22T11:59:59+00:00", "2026-11-21T23:59:59.5+00:00",
              "2026-11-22T11:00:00.000001+00:00", "2026-11-22T11:58:00+00:00"]
    posts = [raw(post(i, text=t, published_at=p), offset=i) for i, (t, p) in enumerate(zip(texts, stamps))]
    columns, dead = classify(decode(posts, NOW)[0], zero)
    assert dead == [] and len(columns) == len(texts) and len(set(columns.sentiment)) > 1

    def rows(indices: list[int], window_seconds: int) -> list[dict[str, object]]:
        return [{"topic": columns.topic[i], "source": columns.source[i], "tickers": columns.tickers[i],
                 "sentiment": columns.sentiment[i], "sentiment_score": float(columns.sentiment_score[i]),
                 "window_start": window_start(utc_from_micros(columns.published_us[i]), window_seconds)} for i in indices]

    for window_seconds in (60, 300, 3600):
        chosen = [1, 2, 5, 7]
        parts = [Windowed.of(columns, window_seconds), Windowed.of(columns, window_seconds, rows=chosen)]
        deltas = trend_deltas(parts)
        keys = list(zip(deltas.dimension, deltas.key, deltas.window))
        assert keys == sorted(keys)  # the sink's lock order
        expected = aggregate(rows(list(range(len(columns))) + chosen, window_seconds))
        got = deltas.as_dict()
        assert got.keys() == expected.keys()
        for key, d in expected.items():
            g = got[key]
            assert (g.n_messages, g.n_negative, g.n_neutral, g.n_positive) == \
                (d.n_messages, d.n_negative, d.n_neutral, d.n_positive)
            assert abs(g.sum_score - d.sum_score) < 1e-9
