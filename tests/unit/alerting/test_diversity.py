"""Effective counts (a story once, an author capped) and coordinated activity as a state and a step."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from workers.alerting.diversity import (
    CoordinationParams,
    CoordinationState,
    Group,
    mix,
    step_coordination,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def organic(n: int, negatives: int, first_author: int = 1000) -> list[Group]:
    return [Group(story=first_author + i, author=first_author + i, messages=1, negatives=int(i < negatives))
            for i in range(n)]


def test_a_story_counts_once_and_an_author_up_to_the_cap() -> None:
    flood = [Group(story=7, author=1, messages=60, negatives=60), Group(story=7, author=2, messages=40, negatives=40)]
    prolific = [Group(story=100 + i, author=3, messages=1, negatives=1) for i in range(10)]
    window = mix(organic(50, 10) + flood + prolific, author_cap=3)
    assert (window.messages, window.negatives) == (160, 120)  # raw counts stay
    assert window.stories == 50 + 1 + 10 and window.authors == 53
    assert window.effective == 50 + 1 + 3  # the flood is one story; author 3 counts three of ten
    assert window.effective_negatives == 10 + 1 + 3
    assert window.top_story == 7 and window.top_story_messages == 100
    assert window.top_authors[:2] == ((1, 60), (2, 40))


def test_a_feed_without_authors_is_not_capped_but_its_repeats_count_once() -> None:
    feed = [Group(story=i, author=None, messages=1, negatives=0) for i in range(20)]
    repeats = [Group(story=3, author=None, messages=4, negatives=4)]
    window = mix(feed + repeats, author_cap=3)
    assert window.effective == 20 and window.authors == 0
    assert window.effective_negatives == 1  # story 3: 4 negative of 5 messages


def run(windows: list[list[Group]], params: CoordinationParams = CoordinationParams()) -> list[tuple[int, str]]:
    state, events = CoordinationState(), []
    for w, groups in enumerate(windows):
        state, event = step_coordination(state, T0 + timedelta(minutes=w), mix(groups, 3), params)
        if event is not None:
            events.append((w, event.kind))
    return events


def test_a_flood_from_two_accounts_opens_a_coordinated_episode_that_resolves_after_it() -> None:
    quiet = [organic(200, 40, first_author=10_000 * w) for w in range(12)]
    flood = [Group(story=7, author=1, messages=50, negatives=50), Group(story=7, author=2, messages=50, negatives=50)]
    windows = quiet[:10] + [quiet[10] + flood, quiet[11] + flood] + [organic(200, 40, 999_000)]
    assert run(windows) == [(10, "opened"), (12, "resolved")]


def test_organic_traffic_and_a_genuine_burst_are_not_coordinated() -> None:
    quiet = [organic(200, 40, first_author=10_000 * w) for w in range(10)]
    burst = [organic(200, 120, first_author=500_000 + 10_000 * w) for w in range(3)]
    assert run(quiet + burst) == []


def test_nothing_is_coordinated_during_warm_up() -> None:
    flood = [Group(story=7, author=1, messages=300, negatives=300)]
    assert run([organic(200, 40, 10_000 * w) + flood for w in range(4)]) == []


def test_the_sentiment_cusum_sees_the_trend_counts_less_what_did_not_count() -> None:
    from workers.alerting.detector import effective_point
    from workers.alerting.spikes import Point

    stored = mix(organic(60, 12) + [Group(story=7, author=1, messages=100, negatives=100)], author_cap=3)
    point, window = effective_point(Point(T0, 160, 112), stored)
    assert (point.volume, point.negatives) == (61, 13)
    assert (window.messages, window.effective, window.excess) == (160, 61, 99)
    # trend rows with no stored messages (written by hand, or a backfill series) keep their counts
    point, window = effective_point(Point(T0, 100, 30), mix([], author_cap=3))
    assert (point.volume, point.negatives, window.excess) == (100, 30, 0)
