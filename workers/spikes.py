"""Spike detection as a state and a step: `step(state, point, params) -> (state, event | None)`.

Per key, the baseline is an EWMA of the negative share (with an EWMA variance). A window opens an
episode when its negative share rises above the baseline by both `z` standard deviations and
`min_lift`; the episode resolves when the share falls back within one standard deviation
(hysteresis). The baseline does not learn from windows inside an episode, and a cooldown after
an episode stops one noisy recovery from reopening at once. Windows under `min_volume` are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal


@dataclass(frozen=True)
class SpikeParams:
    alpha: float = 0.2
    z: float = 3.0
    min_lift: float = 0.2
    min_volume: int = 8
    warmup_windows: int = 5
    cooldown_windows: int = 5
    std_floor: float = 0.03


@dataclass(frozen=True)
class SpikeState:
    mean: float = 0.0
    var: float = 0.0
    windows: int = 0
    open: bool = False
    cooldown: int = 0


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


def effective_std(state: SpikeState, volume: int, params: SpikeParams) -> float:
    """The larger of the learned spread, the binomial noise at this volume, and a floor."""
    binomial = math.sqrt(max(state.mean * (1 - state.mean), 0.0) / max(volume, 1))
    return max(math.sqrt(state.var), binomial, params.std_floor)


def severity(lift: float) -> str:
    return "high" if lift >= 0.4 else "medium" if lift >= 0.25 else "low"


def _learn(state: SpikeState, share: float, alpha: float) -> SpikeState:
    if state.windows == 0:
        return replace(state, mean=share, var=0.0, windows=1)
    diff = share - state.mean
    increment = alpha * diff
    return replace(
        state,
        mean=state.mean + increment,
        var=(1 - alpha) * (state.var + diff * increment),
        windows=state.windows + 1,
    )


def step(state: SpikeState, point: Point, params: SpikeParams) -> tuple[SpikeState, SpikeEvent | None]:
    if point.volume < params.min_volume:
        return state, None
    share = point.share
    std = effective_std(state, point.volume, params)
    lift = share - state.mean

    def event(kind: Literal["opened", "resolved"]) -> SpikeEvent:
        return SpikeEvent(kind, point.window_start, share, state.mean, std, point.volume, severity(lift))

    if state.open:
        if share <= state.mean + std:
            return replace(state, open=False, cooldown=params.cooldown_windows), event("resolved")
        return state, None
    if (
        state.windows >= params.warmup_windows
        and state.cooldown == 0
        and lift >= params.min_lift
        and lift >= params.z * std
    ):
        return replace(state, open=True), event("opened")
    learned = _learn(state, share, params.alpha)
    return replace(learned, cooldown=max(0, state.cooldown - 1)), None
