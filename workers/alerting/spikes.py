"""Spike detection as a state and a step: `step(state, point, params) -> (state, event | None)`.

Per key (a topic or a ticker) the detector runs a binomial CUSUM on the negative count per window:
each window adds the log-likelihood ratio of "negative share = ratio x baseline" against "negative
share = baseline", floored at zero. An episode opens when the sum reaches `threshold` and resolves
when the evidence (capped at `threshold` while open) has drained back to zero (hysteresis); a cooldown
follows. The baseline is an EWMA of negatives and of volume per window (their ratio is the baseline
share), learned two windows late, so the first windows of a burst never leak into it; windows inside
an episode are never learned.
Windows under `min_volume` are skipped, and nothing alerts before `warmup_windows` have been learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class SpikeParams:
    alpha: float = 0.1  # EWMA weight of a new window in the baseline
    ratio: float = 2.0  # the shift the detector is tuned to find: baseline share x ratio
    threshold: float = 6.0  # CUSUM decision level, in log-likelihood units
    min_volume: int = 20
    warmup_windows: int = 10
    cooldown_windows: int = 5
    learn_delay: int = 2  # windows held back before they enter the baseline
    min_baseline: float = 0.02  # share floor, so a topic with no negatives yet can still alert


@dataclass(frozen=True)
class SpikeState:
    negatives: float = 0.0  # EWMA of negatives per window
    volume: float = 0.0  # EWMA of messages per window
    share_var: float = 0.0  # EWMA variance of the window share around the baseline
    windows: int = 0  # windows learned into the baseline
    cusum: float = 0.0
    open: bool = False
    cooldown: int = 0
    pending: tuple[tuple[int, int], ...] = ()  # (volume, negatives) of windows not learned yet

    @property
    def baseline(self) -> float:
        return self.negatives / self.volume if self.volume else 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SpikeState":
        return cls(**{**data, "pending": tuple(tuple(p) for p in data.get("pending", ()))})


@dataclass(frozen=True)
class Point:
    window_start: datetime
    volume: int
    negatives: int

    @property
    def share(self) -> float:
        return self.negatives / self.volume if self.volume else 0.0


@dataclass(frozen=True)
class SpikeEvent:
    kind: Literal["opened", "resolved"]
    window_start: datetime
    observed_share: float
    baseline_share: float
    baseline_std: float
    volume: int
    severity: str
    evidence: float


def severity(observed: float, baseline: float) -> str:
    lift = observed - baseline
    if lift >= 0.4 or observed >= 3 * max(baseline, 0.05):
        return "high"
    return "medium" if lift >= 0.15 else "low"


def log_likelihood_ratio(volume: int, negatives: int, baseline: float, params: SpikeParams) -> float:
    p0 = min(max(baseline, params.min_baseline), 0.9)
    p1 = min(params.ratio * p0, 0.97)
    return negatives * math.log(p1 / p0) + (volume - negatives) * math.log((1 - p1) / (1 - p0))


def _learn(state: SpikeState, volume: int, negatives: int, alpha: float) -> SpikeState:
    if state.windows == 0:
        return replace(state, negatives=float(negatives), volume=float(volume), share_var=0.0, windows=1)
    diff = negatives / volume - state.baseline
    return replace(
        state,
        negatives=state.negatives + alpha * (negatives - state.negatives),
        volume=state.volume + alpha * (volume - state.volume),
        share_var=(1 - alpha) * (state.share_var + alpha * diff * diff),
        windows=state.windows + 1,
    )


def step(state: SpikeState, point: Point, params: SpikeParams) -> tuple[SpikeState, SpikeEvent | None]:
    if point.volume < params.min_volume:
        return state, None
    baseline = state.baseline
    warm = state.windows >= params.warmup_windows
    evidence = max(0.0, state.cusum + log_likelihood_ratio(point.volume, point.negatives, baseline, params))

    def event(kind: Literal["opened", "resolved"]) -> SpikeEvent:
        return SpikeEvent(kind, point.window_start, point.share, baseline, math.sqrt(state.share_var),
                          point.volume, severity(point.share, baseline), evidence)

    if state.open:
        if evidence == 0.0:
            return replace(state, open=False, cusum=0.0, cooldown=params.cooldown_windows), event("resolved")
        # Capped at the threshold, so a strong burst does not hold the episode open long after it ends.
        return replace(state, cusum=min(evidence, params.threshold)), None
    if warm and state.cooldown == 0 and evidence >= params.threshold:
        # The windows still pending are part of the burst: they never enter the baseline.
        return replace(state, open=True, cusum=min(evidence, params.threshold), pending=()), event("opened")

    pending = (*state.pending, (point.volume, point.negatives))
    learned = state
    while len(pending) > params.learn_delay:
        (volume, negatives), pending = pending[0], pending[1:]
        learned = _learn(learned, volume, negatives, params.alpha)
    cusum = evidence if warm and state.cooldown == 0 else 0.0
    return replace(learned, pending=pending, cusum=cusum, cooldown=max(0, state.cooldown - 1)), None
