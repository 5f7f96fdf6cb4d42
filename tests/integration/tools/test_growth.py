"""`finsentry bench --growth` on tiny sizes: every figure is there and the run cleans up after itself
(figures are reported by the command, never asserted)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from workers.tools.growth import GrowthSizes, run_growth

pytestmark = pytest.mark.integration


def test_growth_bench_simulates_days_with_retention_and_reports_every_figure(broker, engine, database_url,
                                                                             settings):  # type: ignore[no-untyped-def]
    sizes = GrowthSizes(horizon_days=1, days=4, rows_per_day=3000, sink_msgs=300, e2e_msgs=300, keys_per_minute=30)
    result = run_growth(settings, database_url, broker.bootstrap, sizes, progress=False)
    assert result["partitioned"] is True
    assert result["rows_max"] == 3 * 3000 + 2 * 2 * 300  # days 0-2 before the first drop; the sink's two runs twice
    assert result["days_simulated"] == 4 and result["horizon_days"] == 1
    for key in ("sink_rows_per_s_empty", "sink_rows_per_s_full", "retention_seconds_per_day", "bytes_per_day",
                "bytes_after"):
        assert result[key] > 0, key
    dropped = [name for run in result["retention_runs"] for name in run["dropped"]]
    assert sorted(n[:-10] for n in dropped) == ["classified_messages"] * 2 + ["message_texts"] * 2
    assert result["retention_runs"][-1]["rows_after"] == 2 * 3000 + 2 * 300  # horizon + 1 days kept, the sink's in one
    assert set(result["cpu_s_per_1000_msgs"]) == {"worker", "writer", "postgres", "broker"}
    assert all(v is not None and v >= 0 for v in result["cpu_s_per_1000_msgs"].values())
    with engine.connect() as conn:  # the scratch database is gone
        assert conn.execute(text("SELECT count(*) FROM pg_database WHERE datname LIKE 'finsentry_growth_%'")).scalar() == 0
