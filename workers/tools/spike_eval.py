"""Measures the spike detector on real text: `finsentry evaluate-spikes`.

Real labelled tweets are classified by the model; each topic's stream is replayed window by window
by drawing its own classified texts (Poisson volume per window). Bursts that double the topic's
negative share, at the same volume, are injected at known windows. The detector is the production
`step`. Reported: recall of bursts detected within 2 windows (and at all), mean windows to alert,
and false alerts per 1,000 burst-free windows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.alerting.spikes import Point, SpikeParams, SpikeState, step

if TYPE_CHECKING:
    from workers.alerting.diversity import CoordinationParams

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class EvalConfig:
    volume: float = 100.0  # mean messages per topic per window ("normal volume")
    windows_per_topic: int = 2000
    burst_windows: int = 3
    burst_gap: int = 60  # windows between bursts
    first_burst: int = 40
    quiet_after_burst: int = 10  # windows after a burst that are neither burst nor burst-free
    min_pool: int = 40
    max_baseline: float = 0.45  # a share above this cannot double
    min_baseline: float = 0.05  # below this, "doubling" is a message or two: reported apart
    seed: int = 11


def topic_pools(topics: list[str], negative: list[bool], min_pool: int) -> dict[str, np.ndarray]:
    pools: dict[str, list[bool]] = defaultdict(list)
    for topic, neg in zip(topics, negative):
        pools[topic].append(neg)
    return {t: np.asarray(v, dtype=bool) for t, v in pools.items() if len(v) >= min_pool}


def evaluate(pools: dict[str, np.ndarray], params: SpikeParams, config: EvalConfig) -> dict[str, Any]:
    rng = np.random.default_rng(config.seed)
    bursts = detected_2 = detected_any = false_alerts = quiet_windows = 0
    delays: list[int] = []
    per_topic: dict[str, dict[str, Any]] = {}
    low_bursts = low_detected = 0
    for topic, pool in sorted(pools.items()):
        share = float(pool.mean())
        if share > config.max_baseline:
            per_topic[topic] = {"baseline_share": round(share, 3), "skipped": "share too high to double"}
            continue
        negatives_pool = pool.nonzero()[0]
        starts = list(range(config.first_burst, config.windows_per_topic - config.burst_windows, config.burst_gap))
        burst_of: dict[int, int] = {}
        for b, start in enumerate(starts):
            for offset in range(config.burst_windows):
                burst_of[start + offset] = b
        tail = {s + config.burst_windows + k for s in starts for k in range(config.quiet_after_burst)}
        first_alert: dict[int, int] = {}
        state = SpikeState()
        topic_false = topic_quiet = 0
        for w in range(config.windows_per_topic):
            n = int(rng.poisson(config.volume))
            if w in burst_of:
                k = int(rng.binomial(n, min(1.0, 2 * share))) if len(negatives_pool) else 0
            else:
                k = int(pool[rng.integers(0, len(pool), n)].sum()) if n else 0
            state, event = step(state, Point(T0 + timedelta(minutes=w), n, k), params)
            opened = event is not None and event.kind == "opened"
            if w in burst_of:
                if opened:
                    first_alert.setdefault(burst_of[w], w - starts[burst_of[w]])
            elif w not in tail:
                topic_quiet += 1
                topic_false += int(opened)
        topic_bursts = len(starts)
        topic_d2 = sum(1 for d in first_alert.values() if d < 2)
        if share < config.min_baseline:
            low_bursts += topic_bursts
            low_detected += topic_d2
            false_alerts += topic_false
            quiet_windows += topic_quiet
            per_topic[topic] = {"baseline_share": round(share, 3), "bursts": topic_bursts, "low_share": True,
                                "recall_within_2": round(topic_d2 / topic_bursts, 3), "false_alerts": topic_false}
            continue
        bursts += topic_bursts
        detected_2 += topic_d2
        detected_any += len(first_alert)
        delays += [d + 1 for d in first_alert.values()]
        false_alerts += topic_false
        quiet_windows += topic_quiet
        per_topic[topic] = {"baseline_share": round(share, 3), "bursts": topic_bursts,
                            "recall_within_2": round(topic_d2 / topic_bursts, 3), "false_alerts": topic_false}
    return {
        "volume_per_window": config.volume,
        "topics": sum(1 for v in per_topic.values() if "bursts" in v and "low_share" not in v),
        "bursts": bursts,
        "min_baseline_share": config.min_baseline,
        "recall_within_2_windows": round(detected_2 / bursts, 4) if bursts else 0.0,
        "recall_any_time_in_burst": round(detected_any / bursts, 4) if bursts else 0.0,
        "mean_windows_to_alert": round(float(np.mean(delays)), 3) if delays else None,
        "low_share_topics": sum(1 for v in per_topic.values() if v.get("low_share")),
        "low_share_recall_within_2_windows": round(low_detected / low_bursts, 4) if low_bursts else None,
        "recall_within_2_windows_all_topics": round((detected_2 + low_detected) / (bursts + low_bursts), 4)
        if bursts + low_bursts else 0.0,
        "burst_free_windows": quiet_windows,
        "false_alerts": false_alerts,
        "false_alerts_per_1000_windows": round(1000 * false_alerts / quiet_windows, 3) if quiet_windows else 0.0,
        "per_topic": per_topic,
    }


# --- Attacks: floods from a few accounts against the same detector -----------------------------------------


@dataclass(frozen=True)
class AttackConfig:
    volume: float = 200.0  # organic messages per topic per window
    windows_per_topic: int = 1500
    burst_windows: int = 3  # genuine bursts: the negative share doubles, many authors, distinct texts
    flood_windows: int = 3  # floods: a few accounts post one negative story (and its variants)
    period: int = 60  # windows between bursts; floods fall half-way between them
    first_burst: int = 40
    quiet_after: int = 10  # windows after a burst or flood that count as neither
    flood_rates: tuple[int, ...] = (50, 100, 200)  # flood messages per window, in turn
    authors: int = 20000  # organic authors per topic, with Zipf-like activity (exponent below)
    author_exponent: float = 0.8
    organic_repeat_share: float = 0.05  # organic reposts of a story already in the window, by other authors
    max_baseline: float = 0.45
    min_baseline: float = 0.05
    seed: int = 11


FLOOD_KINDS = ("exact", "suffix", "ticker", "retweet", "mixed")


def flood_text(base: str, kind: str, rng: np.random.Generator, i: int) -> str:
    """The i-th message of a flood of `base`: an exact copy, or a near copy as a bot would make it."""
    if kind == "mixed":
        kind = FLOOD_KINDS[1 + i % 3]
    if kind == "suffix":
        return f"{base} {''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz0123456789'), 6))}"
    if kind == "ticker":
        return f"${''.join(rng.choice(list('ABCDEFGHIJKLMNOPQRSTUVWXYZ'), 4))} {base}"
    if kind == "retweet":
        return f"RT @{''.join(rng.choice(list('abcdefghijklmnop'), 8))}: {base}"
    return base


def text_pools(topics: list[str], texts: list[str], negative: list[bool], min_pool: int) -> dict[str, list[tuple[str, bool]]]:
    """Each topic's classified texts with whether the model read them as negative."""
    pools: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for topic, text, neg in zip(topics, texts, negative):
        pools[topic].append((text, neg))
    return {t: v for t, v in pools.items() if len(v) >= min_pool}


def evaluate_attacks(pools: dict[str, list[tuple[str, bool]]], params: SpikeParams,
                     coordination: "CoordinationParams", author_cap: int, config: AttackConfig,
                     detector: str = "diversity") -> dict[str, Any]:
    """Genuine bursts and floods injected into each topic's organic stream of real classified texts.

    Organic messages are distinct stories (a share of them reposts of a story already in the window) from a
    population of authors with Zipf-like activity, negative at the topic's share (the model's reading of its
    real texts), twice that share in a burst. A flood is one negative text of the topic posted by 1 to 5
    accounts at one of `flood_rates` a window, as exact copies or near copies (random suffix, swapped
    ticker, retweet prefix), through the production story ids. detector "diversity": the production
    detectors (the sentiment CUSUM on effective counts, and coordination); "raw": the sentiment CUSUM on
    raw counts and no coordination (the detector before).
    """
    from workers.alerting.diversity import CoordinationState, Group, mix, step_coordination
    from workers.pipeline.stories import story_id

    rng = np.random.default_rng(config.seed)
    cdf = np.cumsum(1.0 / np.arange(1, config.authors + 1) ** config.author_exponent)
    cdf /= cdf[-1]
    totals: Counter[str] = Counter()
    for topic, pool in sorted(pools.items()):
        share = float(np.mean([neg for _, neg in pool]))
        if not (config.min_baseline <= share <= config.max_baseline):
            continue
        negative_texts = [t for t, neg in pool if neg]
        burst_starts = list(range(config.first_burst, config.windows_per_topic - config.period, config.period))
        flood_starts = [s + config.period // 2 for s in burst_starts]
        bursts = {s + k: b for b, s in enumerate(burst_starts) for k in range(config.burst_windows)}
        floods = {s + k: f for f, s in enumerate(flood_starts) for k in range(config.flood_windows)}
        flood_span = {s + k: f for f, s in enumerate(flood_starts) for k in range(config.flood_windows + 2)}
        busy = {s + k for s in burst_starts for k in range(config.burst_windows + config.quiet_after)} | {
            s + k for s in flood_starts for k in range(config.flood_windows + config.quiet_after)}
        sentiment, coordinated = SpikeState(), CoordinationState()
        burst_delay: dict[int, int] = {}
        flood_alerted: set[int] = set()
        flood_flagged: set[int] = set()
        for w in range(config.windows_per_topic):
            n = int(rng.poisson(config.volume))
            authors = np.searchsorted(cdf, rng.random(n)).tolist()
            negative = (rng.random(n) < (min(1.0, 2 * share) if w in bursts else share)).tolist()
            fresh = rng.integers(1, 2**62, n).tolist()
            reposts = (rng.random(n) < config.organic_repeat_share).tolist()
            groups: dict[tuple[int, int | None], list[int]] = {}
            stories: list[int] = []
            for i in range(n):
                story = stories[int(rng.integers(len(stories)))] if reposts[i] and stories else fresh[i]
                stories.append(story)
                entry = groups.setdefault((story, authors[i]), [0, 0])
                entry[0] += 1
                entry[1] += negative[i]
            if w in floods:
                f = floods[w]
                base = negative_texts[f % len(negative_texts)]
                accounts = 1 + f % 5
                for i in range(config.flood_rates[f % len(config.flood_rates)]):
                    entry = groups.setdefault((story_id(flood_text(base, FLOOD_KINDS[f % len(FLOOD_KINDS)], rng, i)),
                                               -1 - i % accounts), [0, 0])
                    entry[0] += 1
                    entry[1] += 1
            window = mix([Group(s, a, m, k) for (s, a), (m, k) in groups.items()], author_cap)
            at = T0 + timedelta(minutes=w)
            point = Point(at, window.effective, window.effective_negatives) if detector == "diversity" \
                else Point(at, window.messages, window.negatives)
            sentiment, event = step(sentiment, point, params)
            opened = event is not None and event.kind == "opened"
            flagged = False
            if detector == "diversity":
                coordinated, c_event = step_coordination(coordinated, at, window, coordination)
                flagged = c_event is not None and c_event.kind == "opened"
            if w in bursts and opened:
                burst_delay.setdefault(bursts[w], w - burst_starts[bursts[w]])
            if w in flood_span and opened:
                flood_alerted.add(flood_span[w])
            if w in floods and (flagged or coordinated.open):
                flood_flagged.add(floods[w])
            if w not in busy:
                totals["quiet_windows"] += 1
                totals["false_alerts"] += int(opened)
                totals["false_coordinated"] += int(flagged)
        totals["topics"] += 1
        totals["bursts"] += len(burst_starts)
        totals["bursts_within_2"] += sum(1 for d in burst_delay.values() if d < 2)
        totals["floods"] += len(flood_starts)
        totals["flood_alerts"] += len(flood_alerted)
        totals["flood_flagged"] += len(flood_flagged)
    quiet = totals["quiet_windows"]
    return {
        "detector": detector, "volume_per_window": config.volume, "topics": totals["topics"],
        "bursts": totals["bursts"],
        "genuine_recall_2w": round(totals["bursts_within_2"] / totals["bursts"], 4) if totals["bursts"] else 0.0,
        "burst_free_windows": quiet,
        "false_alerts_per_1000": round(1000 * totals["false_alerts"] / quiet, 3) if quiet else 0.0,
        "false_coordinated_per_1000": round(1000 * totals["false_coordinated"] / quiet, 3) if quiet else 0.0,
        "floods": totals["floods"], "flood_alerts": totals["flood_alerts"], "flood_flagged": totals["flood_flagged"],
        "flood_rates": list(config.flood_rates), "flood_kinds": list(FLOOD_KINDS), "flood_accounts": "1-5",
    }
