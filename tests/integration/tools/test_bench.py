"""The benchmark's code paths on tiny inputs (figures are reported by `finsentry bench`, never asserted)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from workers.tools.bench import BenchSizes, print_table, run_bench

pytestmark = pytest.mark.integration


def test_bench_runs_every_path_and_reports_all_figures(broker, engine, database_url, classifier, settings,
                                                        capsys):  # type: ignore[no-untyped-def]
    result = run_bench(settings, classifier, engine, broker.bootstrap, quick=True, database_url=database_url,
                       sizes=BenchSizes(limit_texts=64, pipeline_msgs=64, e2e_msgs=64, latency_seconds=1.0, naive_msgs=5,
                                        host_msgs=300))
    for key in ("limit_msgs_per_s", "pipeline_msgs_per_s", "e2e_msgs_per_s", "e2e_p50_latency_ms",
                "e2e_p99_latency_ms", "naive_msgs_per_s", "host_pipeline_msgs_per_s", "host_e2e_msgs_per_s",
                "host_e2e_2proc_msgs_per_s", "db_copy_rows_per_s", "sink_rows_per_s", "sink_alone_rows_per_s"):
        assert result[key] > 0, key
    assert result["host_pipeline_cpu_us_per_msg"] > 0 and result["host_e2e_cpu_us_per_msg"] > 0
    for path in ("e2e", "host_e2e"):
        assert set(result[f"{path}_step_seconds"]) == {"decode", "tokenise", "inference", "columns", "dead_letters",
                                                        "database"}
    assert result["e2e_p50_latency_ms"] <= result["e2e_p99_latency_ms"]
    assert result["messages"]["e2e"] == 64 and result["model_version"] == classifier.version
    runs = result["real_model_runs"]  # interleaved; each path reports its better run
    assert len(runs) == 2 and all(r["e2e"] > 0 for r in runs)
    for path, key in (("limit", "limit_msgs_per_s"), ("pipeline", "pipeline_msgs_per_s"), ("e2e", "e2e_msgs_per_s")):
        assert result[key] == max(r[path] for r in runs), path
    # The run left nothing behind in the database.
    with engine.connect() as conn:
        left = conn.execute(text("SELECT (SELECT count(*) FROM classified_messages WHERE external_id LIKE :p) + "
                                 "(SELECT count(*) FROM trend_windows WHERE series LIKE :p)"),
                            {"p": f"%{result['run_id']}%"}).scalar_one()
    assert left == 0
    print_table(result)
    assert "pipeline / limit" in capsys.readouterr().out
