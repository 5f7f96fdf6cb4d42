"""Stories, diversity and coordinated activity through the real sink, Postgres and detector.

Organic windows are distinct texts by distinct authors; a flood is one negative text, copied and
near-copied, from two accounts. Labels are set on the classified columns (the model's reading of these
made-up texts is not what is under test); everything else is the production path."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import Engine, text

from config.settings import DEFAULT_MODEL_DIR
from models.classifier import ZeroCostClassifier
from schemas.messages import RawMessage
from tests.integration.helpers import scalar
from workers.alerting.detector import run_detection
from workers.alerting.routing import build_routes
from workers.alerting.spikes import SpikeParams
from workers.ingest.sink import write_batches
from workers.pipeline import stages
from workers.pipeline.stories import story_id

pytestmark = pytest.mark.integration

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
NOW = BASE + timedelta(hours=2)  # the sink's and the decoder's clock: no test depends on today's date
TOPIC = "Stock Movement"
WORDS = ("shares market earnings guidance investors analysts rally slump demand supply margin revenue outlook "
         "quarter chips banks energy retail airline consumer pricing inventory orders deliveries cloud software "
         "lithium copper treasury yields merger lawsuit dividend buyback layoffs hiring factory exports").split()
FLOOD = "$XYZ is a total fraud, the auditors are hiding everything, sell before it goes to zero"


def organic_text(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, 9))


def batch(scorer: ZeroCostClassifier, prefix: str, posts: list[tuple[str, str, datetime, bool]]) -> stages.Columns:
    """Classified columns of (text, author, published_at, negative) posts, all on TOPIC."""
    raws = [RawMessage("social", json.dumps({"id": f"{prefix}-{i}", "source": "x", "text": t, "author": a,
                                             "published_at": at.isoformat()}).encode(), "t", 0, i)
            for i, (t, a, at, _) in enumerate(posts)]
    accepted, dead = stages.decode(raws, NOW)
    assert dead == []
    columns, failed = stages.classify(accepted, scorer)
    assert failed == []
    negative = np.asarray([neg for *_, neg in posts])
    probs = np.where(negative[:, None], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1])
    return replace(columns, topic=[TOPIC] * len(posts), sentiment=["negative" if n else "neutral" for n in negative],
                   probs=probs, sentiment_score=probs[:, 2] - probs[:, 0])


def stream(seed: int, windows: int, burst: set[int], flood: set[int]) -> list[tuple[str, str, datetime, bool]]:
    """60 organic posts a window (20% negative, 70% in a burst window), plus 100 flood posts in flood windows."""
    rng = random.Random(seed)
    posts = []
    for w in range(windows):
        start = BASE + timedelta(minutes=w)
        for i in range(60):
            negative = rng.random() < (0.7 if w in burst else 0.2)
            posts.append((organic_text(rng), f"user{seed}-{w}-{i}", start + timedelta(seconds=i), negative))
        if w in flood:
            for i in range(100):
                variant = [FLOOD, f"RT @bot{i % 2}: {FLOOD}", f"{FLOOD} #{rng.randrange(10**6)}",
                           FLOOD.replace("$XYZ", "$XYZW"), f"{FLOOD} zq{rng.randrange(10**4)}"][i % 5]
                posts.append((variant, f"bot{i % 2}", start + timedelta(seconds=i % 60, milliseconds=i), True))
    return posts


def run(engine: Engine, series: str, posts: list[tuple[str, str, datetime, bool]], prefix: str) -> list[int]:
    scorer = ZeroCostClassifier(DEFAULT_MODEL_DIR)
    write_batches(engine, [batch(scorer, prefix, posts)], 60, series, now=NOW)
    return run_detection(engine, SpikeParams(warmup_windows=5), allowed_lateness_s=0, window_seconds=60,
                         routes=build_routes([], []), series=series, idle_s=10**9)


def alerts_of(engine: Engine, series: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.kind, r.window_start.strftime("%H:%M")) for r in conn.execute(text(
            "SELECT kind, window_start FROM alerts WHERE series = :s ORDER BY id"), {"s": series})]


def test_a_flood_from_two_accounts_is_coordinated_activity_not_a_sentiment_alert(engine, unique):  # type: ignore[no-untyped-def]
    series = f"flood-{unique}"
    run(engine, series, stream(1, 14, burst=set(), flood={10, 11}), unique)
    assert alerts_of(engine, series) == [("coordinated", "09:10")]

    with engine.connect() as conn:
        alert = conn.execute(text("SELECT * FROM alerts WHERE series = :s"), {"s": series}).mappings().one()
        window = conn.execute(text("SELECT * FROM window_diversity WHERE series = :s AND window_start = :w"),
                              {"s": series, "w": BASE + timedelta(minutes=10)}).mappings().one()
    payload = alert["payload"]
    assert payload["type"] == "coordinated.opened" and payload["key"] == TOPIC
    assert payload["story"]["story_id"] == story_id(FLOOD) and payload["story"]["messages"] == 100
    assert payload["story"]["text"] is not None and "fraud" in payload["story"]["text"]
    assert {(a["author"], a["messages"]) for a in payload["accounts"][:2]} == {("bot0", 50), ("bot1", 50)}
    assert alert["status"] == "resolved"  # the flood stopped after window 11
    # The trend tables keep every message; the diversity row says how many counted.
    assert window["n_messages"] == 160 and window["n_stories"] == 61 and window["n_authors"] == 62
    assert window["n_effective"] == 61 and window["excess"] == 99 and window["coordinated"]
    assert scalar(engine, "SELECT n_messages FROM trend_windows WHERE series = :s AND dimension = 'topic' "
                          "AND window_start = :w", s=series, w=BASE + timedelta(minutes=10)) == 160


def test_a_genuine_burst_of_many_authors_still_alerts_and_is_not_coordinated(engine, unique):  # type: ignore[no-untyped-def]
    series = f"burst-{unique}"
    run(engine, series, stream(2, 14, burst={10, 11}, flood=set()), unique)
    assert alerts_of(engine, series) == [("sentiment", "09:10")]
    payload = json.loads(json.dumps(scalar(engine, "SELECT payload FROM alerts WHERE series = :s", s=series)))
    stories = [story_id(e["text"]) for e in payload["top_negative"]]
    assert len(stories) == 3 and len(set(stories)) == 3  # three exemplars, three stories


def test_a_replay_keeps_story_ids_and_counts(engine, unique):  # type: ignore[no-untyped-def]
    series = f"replay-{unique}"
    posts = stream(3, 12, burst=set(), flood={10})
    run(engine, series, posts, unique)
    before = stored_state(engine, series, unique)
    run(engine, series, posts, unique)  # the same messages again, and detection again
    assert stored_state(engine, series, unique) == before
    assert before["stories"] == {story_id(t) for t, *_ in posts}


def stored_state(engine: Engine, series: str, prefix: str) -> dict[str, object]:
    with engine.connect() as conn:
        return {
            "stories": set(conn.execute(text("SELECT story_id FROM classified_messages WHERE external_id LIKE :p"),
                                        {"p": f"{prefix}-%"}).scalars()),
            "trends": conn.execute(text("SELECT window_start, n_messages, n_negative FROM trend_windows "
                                        "WHERE series = :s ORDER BY 1, 2"), {"s": series}).all(),
            "diversity": conn.execute(text("SELECT * FROM window_diversity WHERE series = :s ORDER BY window_start"),
                                      {"s": series}).all(),
            "alerts": conn.execute(text("SELECT kind, window_start, status FROM alerts WHERE series = :s ORDER BY id"),
                                   {"s": series}).all(),
        }
