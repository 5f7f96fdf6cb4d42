"""The compose stack's Prometheus alert rules: valid (`promtool check`), firing on what they name
(`promtool test rules`), and written on series that finsentry exports.

promtool comes with Debian's `prometheus` package; .ci/run installs it. Missing, it fails these tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workers.alerting.observability import DetectorMetrics
from workers.ingest.observability import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `apt-get install prometheus` (Debian's package has it; .ci/run installs it)"
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_rules_and_the_config_that_loads_them_are_valid(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = run(promtool, "check", "config", "deploy/prometheus/prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout


def test_each_rule_fires_on_its_trouble_and_not_on_a_healthy_series(promtool: str) -> None:
    tested = run(promtool, "test", "rules", "tests/unit/prometheus/alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load((ROOT / "tests/unit/prometheus/alerts_test.yml").read_text())["tests"]
    named = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert named == rules, "every rule has a case in which it fires"
    assert {"FinsentryConsumerLagGrowing", "FinsentryDeadLetterRateHigh", "FinsentryDeliveriesFailing",
            "FinsentryWatermarkStalled"} <= rules


def test_the_rules_read_series_that_the_worker_and_the_detector_export() -> None:
    exported: set[str] = set()
    for metrics in (WorkerMetrics("fs-test", "cpu"), DetectorMetrics()):
        for family in metrics.registry.collect():
            exported |= {family.name} | {sample.name for sample in family.samples}  # a labelled gauge: no sample yet
    exprs = " ".join(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"])
    used = set(re.findall(r"\bfinsentry_[a-z_]+", exprs))
    assert len(used) >= 5 and used <= exported, sorted(used - exported)
