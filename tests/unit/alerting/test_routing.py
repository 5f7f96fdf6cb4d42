import pytest

from workers.alerting.detector import params_for
from workers.alerting.routing import Route, build_routes, recipients
from workers.alerting.spikes import SpikeParams


def test_routes_filter_by_topic_ticker_and_severity() -> None:
    routes = build_routes(["https://all.example/hook"], [
        {"url": "https://macro.example/hook", "topics": ["Macro"], "min_severity": "medium"},
        {"url": "https://apple.example/hook", "tickers": ["AAPL"]},
    ])
    assert recipients(routes, "topic", "Macro", "high") == ["https://all.example/hook", "https://macro.example/hook"]
    assert recipients(routes, "topic", "Macro", "low") == ["https://all.example/hook"]
    assert recipients(routes, "ticker", "AAPL", "low") == ["https://all.example/hook", "https://apple.example/hook"]
    assert recipients(routes, "topic", "Earnings", "high") == ["https://all.example/hook"]


def test_a_route_with_an_unknown_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="min_severity"):
        Route.parse({"url": "https://x.example", "min_severity": "urgent"})


def test_spike_parameters_can_be_overridden_per_dimension_and_key() -> None:
    overrides = {"ticker": {"min_volume": 5}, "topic:Macro": {"threshold": 9.0}}
    base = SpikeParams()
    assert params_for(base, overrides, "ticker", "AAPL").min_volume == 5
    assert params_for(base, overrides, "topic", "Macro").threshold == 9.0
    assert params_for(base, overrides, "topic", "Earnings") == base


def test_a_route_can_take_coordinated_activity_sentiment_spikes_or_both() -> None:
    routes = build_routes(["https://all.example/hook"], [
        {"url": "https://trust-and-safety.example/hook", "kinds": ["coordinated"]},
        {"url": "https://desk.example/hook", "topics": ["Macro"], "kinds": ["sentiment"]},
    ])
    assert recipients(routes, "topic", "Macro", "high", "sentiment") == ["https://all.example/hook",
                                                                           "https://desk.example/hook"]
    assert recipients(routes, "topic", "Macro", "high", "coordinated") == ["https://all.example/hook",
                                                                             "https://trust-and-safety.example/hook"]
    with pytest.raises(ValueError, match="kinds"):
        Route.parse({"url": "https://x.example", "kinds": ["rumour"]})
