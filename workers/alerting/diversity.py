"""What a window's messages are worth to detection when a few accounts or one story could fill it.

`mix(groups, author_cap)` summarises one closed window of one key from its messages grouped by (story,
author): raw counts, distinct stories and authors, and the *effective* counts the sentiment CUSUM runs on:
each story counts once (negative when most of its messages are), and each author's stories count up to
`author_cap` a window (a feed without authors is not capped: its stories still count once).

Coordinated activity is its own signal, a state and a step like the sentiment detector: a window whose
excess (messages beyond its effective count) rises well above the key's usual excess, against the key's
usual volume, is coordinated; an episode opens on the first such window and resolves on the first that is
not. Organic traffic has an excess of its own (reposts, busy accounts), which is why the usual excess is
learned rather than assumed zero. The event reports the accounts and the story that made the excess.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class Group:
    """The messages of one (story, author) in a window; author None: the feed names none."""

    story: int
    author: int | None
    messages: int
    negatives: int


@dataclass(frozen=True)
class Mix:
    messages: int
    negatives: int
    stories: int
    authors: int
    effective: int  # stories counted once, each author's capped: what the sentiment CUSUM sees as volume
    effective_negatives: int
    top_story: int | None  # the story with the most messages, and how many
    top_story_messages: int
    top_authors: tuple[tuple[int, int], ...]  # (author, messages) of the busiest authors, most first

    @property
    def excess(self) -> int:
        """Messages beyond what counts: repeats of a story and an author's stories past the cap."""
        return self.messages - self.effective


def mix(groups: list[Group], author_cap: int, top: int = 5) -> Mix:
    """Summarise a window. Groups are taken in the order given (the caller orders them by first message), so
    the stories an author keeps under the cap are their first ones."""
    by_story: dict[int, list[Group]] = defaultdict(list)
    for g in groups:
        by_story[g.story].append(g)
    kept_per_author: Counter[int] = Counter()
    effective = effective_negatives = 0
    for story, members in by_story.items():
        author = members[0].author  # the story is its first poster's
        if author is not None:
            kept_per_author[author] += 1
            if kept_per_author[author] > author_cap:
                continue
        effective += 1
        messages = sum(g.messages for g in members)
        effective_negatives += 2 * sum(g.negatives for g in members) > messages
    story_messages = Counter({s: sum(g.messages for g in m) for s, m in by_story.items()})
    author_messages: Counter[int] = Counter()
    for g in groups:
        if g.author is not None:
            author_messages[g.author] += g.messages
    top_story = story_messages.most_common(1)
    return Mix(
        messages=sum(g.messages for g in groups), negatives=sum(g.negatives for g in groups),
        stories=len(by_story), authors=len(author_messages), effective=effective,
        effective_negatives=effective_negatives,
        top_story=top_story[0][0] if top_story else None, top_story_messages=top_story[0][1] if top_story else 0,
        top_authors=tuple(author_messages.most_common(top)),
    )


@dataclass(frozen=True)
class CoordinationParams:
    min_excess: int = 30  # a window's excess above the usual must be at least this many messages ...
    excess_ratio: float = 0.2  # ... and this share of the key's usual (effective) volume
    alpha: float = 0.1  # EWMA weight of a new window in the usual volume and excess
    warmup_windows: int = 5


@dataclass(frozen=True)
class CoordinationState:
    volume: float = 0.0  # EWMA of effective messages per window (windows without coordination)
    excess: float = 0.0  # EWMA of the excess per window (likewise)
    windows: int = 0
    open: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CoordinationState":
        return cls(**data)


@dataclass(frozen=True)
class CoordinationEvent:
    kind: Literal["opened", "resolved"]
    window_start: datetime
    messages: int
    effective: int
    excess: int
    usual_volume: float
    usual_excess: float
    severity: str
    top_story: int | None
    top_story_messages: int
    top_authors: tuple[tuple[int, int], ...]


def coordination_severity(lift: float, usual_volume: float) -> str:
    """How large the coordinated excess is against the key's usual volume."""
    size = lift / max(usual_volume, 1.0)
    return "high" if size >= 2.0 else "medium" if size >= 0.75 else "low"


def excess_lift(window: Mix, state: CoordinationState) -> float:
    """The window's excess above the key's usual excess."""
    return window.excess - state.excess


def is_coordinated(window: Mix, state: CoordinationState, params: CoordinationParams) -> bool:
    lift = excess_lift(window, state)
    return state.windows >= params.warmup_windows and lift >= params.min_excess \
        and lift >= params.excess_ratio * state.volume


def step_coordination(state: CoordinationState, window_start: datetime, window: Mix,
                      params: CoordinationParams) -> tuple[CoordinationState, CoordinationEvent | None]:
    def event(kind: Literal["opened", "resolved"]) -> CoordinationEvent:
        return CoordinationEvent(kind, window_start, window.messages, window.effective, window.excess, state.volume,
                                 state.excess, coordination_severity(excess_lift(window, state), state.volume),
                                 window.top_story, window.top_story_messages, window.top_authors)

    if is_coordinated(window, state, params):
        return (state, None) if state.open else (replace(state, open=True), event("opened"))
    learned = _learn(state, window, params.alpha)
    if state.open:
        return replace(learned, open=False), event("resolved")
    return learned, None


def _learn(state: CoordinationState, window: Mix, alpha: float) -> CoordinationState:
    if state.windows == 0:
        return replace(state, volume=float(window.effective), excess=float(window.excess), windows=1)
    return replace(state, volume=state.volume + alpha * (window.effective - state.volume),
                   excess=state.excess + alpha * (window.excess - state.excess), windows=state.windows + 1)
