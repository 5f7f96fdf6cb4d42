from datetime import datetime, timedelta, timezone

from workers.spikes import Point, SpikeParams, SpikeState, step

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
PARAMS = SpikeParams(min_volume=10, warmup_windows=5, cooldown_windows=3)


def run(shares: list[float], volume: int = 40) -> list[tuple[int, str]]:
    state = SpikeState()
    events = []
    for i, share in enumerate(shares):
        point = Point(T0 + timedelta(minutes=i), volume, round(share * volume))
        state, event = step(state, point, PARAMS)
        if event:
            events.append((i, event.kind))
    return events


def test_a_doubling_of_negative_share_opens_once_and_resolves() -> None:
    shares = [0.15, 0.2, 0.1, 0.15, 0.2, 0.15, 0.15, 0.6, 0.7, 0.65, 0.15, 0.2, 0.15]
    assert run(shares) == [(7, "opened"), (10, "resolved")]


def test_steady_noise_raises_nothing() -> None:
    shares = [0.15, 0.2, 0.1, 0.15, 0.25, 0.1, 0.2, 0.15, 0.1, 0.2] * 5
    assert run(shares) == []


def test_no_alert_during_warmup() -> None:
    assert run([0.1, 0.9, 0.9]) == []


def test_windows_under_minimum_volume_are_ignored() -> None:
    state = SpikeState(mean=0.1, var=0.001, windows=10)
    new_state, event = step(state, Point(T0, 5, 5), PARAMS)
    assert event is None and new_state == state


def test_cooldown_stops_an_immediate_reopen() -> None:
    shares = [0.1] * 6 + [0.8, 0.1, 0.8, 0.1, 0.1, 0.1, 0.1, 0.8]
    events = run(shares)
    assert events[0] == (6, "opened") and events[1] == (7, "resolved")
    assert (8, "opened") not in events
    assert events[-1] == (13, "opened")
