from datetime import datetime, timedelta, timezone

from workers.alerting.spikes import Point, SpikeParams, SpikeState, log_likelihood_ratio, step

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
PARAMS = SpikeParams(min_volume=20, warmup_windows=5, cooldown_windows=3, threshold=7.0)


def run(negatives: list[int], volume: int = 100) -> tuple[SpikeState, list[tuple[int, str]]]:
    state = SpikeState()
    events = []
    for i, k in enumerate(negatives):
        state, event = step(state, Point(T0 + timedelta(minutes=i), volume, k), PARAMS)
        if event:
            events.append((i, event.kind))
    return state, events


BASE = [15, 18, 12, 16, 14, 15, 17, 13, 16, 15]  # about 15% negative at 100 messages a window


def test_a_doubling_opens_once_within_two_windows_and_resolves_when_it_ends() -> None:
    _, events = run(BASE + [31, 33, 30] + [15, 14, 16, 15, 13])
    assert events[0] in {(10, "opened"), (11, "opened")}
    assert [kind for _, kind in events] == ["opened", "resolved"]
    assert events[1][0] >= 13


def test_steady_noise_raises_nothing() -> None:
    _, events = run(BASE * 20)
    assert events == []


def test_no_alert_before_the_baseline_has_warmed_up() -> None:
    _, events = run([15, 60, 60, 60])
    assert events == []


def test_burst_windows_do_not_enter_the_baseline() -> None:
    state, _ = run(BASE + [40, 40, 40, 40])
    assert abs(state.baseline - 0.15) < 0.02


def test_windows_under_minimum_volume_change_nothing() -> None:
    state, _ = run(BASE)
    same, event = step(state, Point(T0, 10, 10), PARAMS)
    assert event is None and same == state


def test_likelihood_ratio_favours_the_baseline_for_a_normal_window() -> None:
    assert log_likelihood_ratio(100, 15, 0.15, PARAMS) < 0 < log_likelihood_ratio(100, 30, 0.15, PARAMS)


def test_state_round_trips_through_json() -> None:
    import json
    from dataclasses import asdict

    state, _ = run(BASE + [30])
    assert SpikeState.from_json(json.loads(json.dumps(asdict(state)))) == state
