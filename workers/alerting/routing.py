"""Which receivers get an alert: every URL in `webhook_urls`, plus each route whose filters match."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.errors import UsageError
from workers.alerting.targets import TargetPolicy, check_url

SEVERITIES = ("low", "medium", "high")
KINDS = ("sentiment", "coordinated")  # a negative spike; a burst made of few stories or accounts


@dataclass(frozen=True)
class Route:
    url: str
    topics: frozenset[str] = field(default_factory=frozenset)  # with tickers: what this receiver wants;
    tickers: frozenset[str] = field(default_factory=frozenset)  # both empty: every alert
    min_severity: str = "low"
    kinds: frozenset[str] = frozenset(KINDS)  # which alerts: sentiment spikes, coordinated activity, or both

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> "Route":
        severity = raw.get("min_severity", "low")
        if severity not in SEVERITIES:
            raise UsageError(f"route {raw.get('url')!r}: min_severity must be one of {SEVERITIES}")
        kinds = frozenset(raw.get("kinds", KINDS))
        if not kinds or not kinds <= set(KINDS):
            raise UsageError(f"route {raw.get('url')!r}: kinds must be a non-empty subset of {KINDS}")
        return cls(raw["url"], frozenset(raw.get("topics", ())), frozenset(raw.get("tickers", ())), severity, kinds)

    def matches(self, dimension: str, key: str, severity: str, kind: str = "sentiment") -> bool:
        if kind not in self.kinds or SEVERITIES.index(severity) < SEVERITIES.index(self.min_severity):
            return False
        if not self.topics and not self.tickers:
            return True  # a route that names nothing gets everything
        if dimension == "topic":
            return key in self.topics
        return dimension == "ticker" and key in self.tickers


def recipients(routes: list[Route], dimension: str, key: str, severity: str, kind: str = "sentiment") -> list[str]:
    """Distinct URLs, in configuration order."""
    urls: dict[str, None] = {}
    for route in routes:
        if route.matches(dimension, key, severity, kind):
            urls.setdefault(route.url, None)
    return list(urls)


def build_routes(urls: list[str], routes: list[dict[str, Any]], policy: TargetPolicy | None = None) -> list[Route]:
    """Parse the receivers; with a policy, refuse unsafe URLs now (addresses are checked again on connect)."""
    built = [Route(u) for u in urls] + [Route.parse(r) for r in routes]
    if policy is not None:
        for route in built:
            check_url(route.url, policy)
    return built
