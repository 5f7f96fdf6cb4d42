"""The command line on small inputs, in a subprocess, as a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path


def finsentry(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "finsentry.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_help_lists_every_command(tmp_path: Path) -> None:
    out = finsentry("--help", cwd=tmp_path).stdout
    for command in ("demo", "worker", "predict", "train", "migrate", "scheduler", "replay", "broker", "evaluate"):
        assert command in out


def test_predict_writes_one_line_per_row_in_order(tmp_path: Path) -> None:
    texts = ["$AAPL plunges after earnings miss", "Fed holds rates steady", "", "Gold climbs to record, $GLD up"]
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([[i, t] for i, t in enumerate(texts)])
    result = finsentry("predict", "--input", str(source), "--output", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == len(texts)
    for line in lines:
        assert set(line) >= {"sentiment", "sentiment_probs", "sentiment_score", "topic", "topic_prob", "tickers",
                             "model_version"}
        assert -1 <= line["sentiment_score"] <= 1
        assert abs(sum(line["sentiment_probs"].values()) - 1) < 1e-3
    assert lines[0]["tickers"] == ["AAPL"] and lines[3]["tickers"] == ["GLD"]


def test_predict_rejects_a_csv_without_text_column(tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("headline\nsomething\n")
    result = finsentry("predict", "--input", str(source), "--output", str(tmp_path / "o.jsonl"), cwd=tmp_path)
    assert result.returncode == 2
    assert "no 'text' column" in result.stderr


def test_evaluate_prints_one_json_line(tmp_path: Path) -> None:
    data = tmp_path / "sentiment"
    data.mkdir()
    (data / "labels.json").write_text('{"0": "Bearish", "1": "Bullish", "2": "Neutral"}')
    (data / "test.csv").write_text("text,label\nStocks crash as panic spreads,0\nShares soar on record profit,1\n"
                                   "Company to hold annual meeting on May 5,2\n")
    result = finsentry("evaluate", "--input", str(data / "test.csv"), "--task", "sentiment", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])["sentiment"]
    assert report["n"] == 3 and 0 <= report["accuracy"] <= 1 and 0 <= report["polarity_accuracy"] <= 1
    assert set(report["per_class"]) == {"negative", "neutral", "positive"}
    both = finsentry("evaluate", "--input", str(data / "test.csv"), "--dev-splits", cwd=tmp_path)
    assert both.returncode == 2 and "give one of --input" in both.stderr
