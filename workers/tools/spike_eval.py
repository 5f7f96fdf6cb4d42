"""Measures the spike detector on real text: `finsentry evaluate-spikes`.

Real labelled tweets are classified by the model; each topic's stream is replayed window by window
by drawing its own classified texts (Poisson volume per window). Bursts that double the topic's
negative share, at the same volume, are injected at known windows. The detector is the production
`step`. Reported: recall of bursts detected within 2 windows (and at all), mean windows to alert,
and false alerts per 1,000 burst-free windows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from workers.alerting.spikes import Point, SpikeParams, SpikeState, step

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
