"""The model lifecycle: scheduled re-fine-tuning, the promotion gate, the registry commands, drift and
a hot swap in a running worker, against the real Postgres and broker.

Each test owns its database: the registry's champion is global to a database.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import Engine, text

from config.settings import DEFAULT_MODEL_DIR, Settings
from finsentry.cli import main
from models.artifacts import TOKENIZER, load_network, save_artifact, verify_artifact
from models.classifier import Classifier
from models.network import TwoHeadClassifier
from tests.integration.helpers import day_partitions, posts, scalar, send, setup_topics, wait_for
from workers.ingest.worker import Worker
from workers.lifecycle import registry
from workers.lifecycle.hotswap import ModelWatcher
from workers.lifecycle.scheduler import DRIFT_JOB_ID, JOB_ID, RETENTION_JOB_ID, build_scheduler
from workers.services.db import make_engine, sqlalchemy_url

pytestmark = pytest.mark.integration


@pytest.fixture
def own_engine(own_database_url: str) -> Any:
    eng = make_engine(own_database_url)
    yield eng
    eng.dispose()


def derived_model(out: Path, change: Callable[[TwoHeadClassifier], None]) -> str:
    """A copy of the shipped model with its weights changed, saved as a new content-addressed version."""
    network, meta, _ = load_network(DEFAULT_MODEL_DIR)
    with torch.no_grad():
        change(network)
    return save_artifact(out, network, meta, DEFAULT_MODEL_DIR / TOKENIZER, "# test model {version}\n")


def rotate_labels(network: TwoHeadClassifier) -> None:
    """Every prediction moves to the next class: a champion that is wrong on every class."""
    for head in (network.topic_head, network.sentiment_head):
        head.weight.copy_(head.weight.roll(1, dims=0))
        head.bias.copy_(head.bias.roll(1, dims=0))


def register_champion(engine: Engine, version: str, path: Path) -> None:
    with engine.begin() as conn:
        registry.register(conn, version=version, parent=None, path=str(path), data_hash="test", metrics={},
                          evaluation=None, status="champion", reason="registered by the test")


def lifecycle_settings(tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path, "retrain_epochs": 1.0, "retrain_max_examples_per_task": 16,
                              "retrain_interval_minutes": 600, "drift_check_minutes": 600}
    return Settings(**{**values, **changes})


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT version, status FROM model_versions")).all())  # type: ignore[arg-type]


def test_scheduled_run_promotes_and_running_workers_hear_of_it(own_database_url, own_engine, tmp_path, capsys,
                                                                 monkeypatch):  # type: ignore[no-untyped-def]
    broken = derived_model(tmp_path / "broken", rotate_labels)
    register_champion(own_engine, broken, tmp_path / "broken")
    loaded: list[str] = []

    def load(path: Path) -> Classifier:
        loaded.append(path.name)
        return Classifier(path, device="cpu")

    stop = threading.Event()
    # poll_s of an hour: only the NOTIFY of the promotion can wake this watcher in time.
    watcher = ModelWatcher(own_database_url, own_engine, DEFAULT_MODEL_DIR, load, broken, stop, poll_s=3600)
    watcher.start()
    # The challenger warm-starts from the shipped model; the champion is the broken one.
    settings = lifecycle_settings(tmp_path, retrain_init=str(DEFAULT_MODEL_DIR))
    scheduler = build_scheduler(own_database_url, settings, blocking=False)
    scheduler.start()
    try:
        assert watcher.listening.wait(10)
        scheduler.modify_job(JOB_ID, next_run_time=datetime.now(timezone.utc))
        wait_for(lambda: len(statuses(own_engine)) == 2, timeout_s=240, what="a registered challenger")
        wait_for(lambda: loaded != [], timeout_s=60, what="the watcher to load the new champion")
        swapped_in = None
        deadline = time.monotonic() + 60
        while swapped_in is None and time.monotonic() < deadline:
            swapped_in = watcher.take()
            time.sleep(0.1)
    finally:
        scheduler.shutdown(wait=True)
        stop.set()
        watcher.join(10)

    with own_engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM model_versions WHERE version <> :b"), {"b": broken}).mappings().one()
    assert row["status"] == "champion", row["reason"]
    assert row["parent"] == broken
    assert "no class's recall and F1 both fell" in row["reason"]
    assert statuses(own_engine)[broken] == "retired"
    assert row["evaluation"]["frozen_set"]["champion"] == broken
    assert verify_artifact(Path(row["path"])) == row["version"]
    assert swapped_in is not None and swapped_in.version == row["version"]
    assert watcher.take() is None  # offered once

    # The registry commands: list shows both; rollback brings the broken one back; promote undoes that.
    monkeypatch.setenv("DATABASE_URL", own_database_url)
    monkeypatch.setenv("FINSENTRY_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("finsentry.cli.get_settings", lambda: Settings())  # read this test's environment
    assert main(["model", "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(item["version"], item["status"]) for item in listed] == [(broken, "retired"), (row["version"], "champion")]
    assert main(["model", "rollback"]) == 0
    assert statuses(own_engine) == {broken: "champion", row["version"]: "rolled_back"}
    assert main(["model", "promote", row["version"]]) == 0
    assert statuses(own_engine) == {broken: "retired", row["version"]: "champion"}
    assert main(["model", "promote", "fs-000000000000"]) == 1
    assert "no registered model version" in capsys.readouterr().err


def _insert_predictions(engine: Engine, version: str, n: int, topic: str, prob: float, minutes_ago: int,
                        prefix: str) -> None:
    """Classified rows as the worker writes them, `minutes_ago` old, all with one topic and confidence."""
    published = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)  # drift orders by classification time only
    day_partitions(engine, published)
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO classified_messages (message_key, kind, source, external_id, published_at, window_start,
                language, topic, topic_prob, sentiment, p_negative, p_neutral, p_positive,
                sentiment_score, tickers, model_version, kafka_topic, kafka_partition, kafka_offset, classified_at)
            SELECT 'drift:' || :prefix || i, 'social', 'drift', :prefix || i, :published, :published,
                'en', :topic, :prob, 'neutral', 0.1, 0.8, 0.1, 0.0, '{}', :version, 't', 0, i,
                now() - make_interval(mins => :ago) + i * interval '1 millisecond'
            FROM generate_series(1, :n) AS i"""),
            {"prefix": prefix, "topic": topic, "prob": prob, "version": version, "n": n, "ago": minutes_ago,
             "published": published})


def test_drift_brings_training_forward_and_the_gate_rejects_a_worse_challenger(own_database_url, own_engine,
                                                                                 tmp_path):  # type: ignore[no-untyped-def]
    serving = verify_artifact(DEFAULT_MODEL_DIR)  # no registered champion: the shipped model serves
    # Its first 100 messages: one topic, confident. Its last 100: another topic, unsure.
    _insert_predictions(own_engine, serving, 100, "Earnings", 0.9, minutes_ago=60, prefix="ref")
    _insert_predictions(own_engine, serving, 100, "Macro", 0.5, minutes_ago=1, prefix="new")
    # The challenger starts from MiniLM with 16 examples a task: it cannot match the shipped model.
    settings = lifecycle_settings(tmp_path, retrain_init="base", drift_window=100)
    scheduler = build_scheduler(own_database_url, settings, blocking=False)
    scheduler.start()
    try:
        scheduler.modify_job(DRIFT_JOB_ID, next_run_time=datetime.now(timezone.utc))
        wait_for(lambda: scalar(own_engine, "SELECT count(*) FROM drift_checks") == 1, timeout_s=30,
                 what="a drift check")
        wait_for(lambda: scalar(own_engine, "SELECT count(*) FROM model_versions") == 1, timeout_s=240,
                 what="the early training run to register a challenger")
    finally:
        scheduler.shutdown(wait=True)

    with own_engine.connect() as conn:
        check = conn.execute(text("SELECT * FROM drift_checks")).mappings().one()
        row = conn.execute(text("SELECT * FROM model_versions")).mappings().one()
    assert check["drifted"] and check["triggered_training"]
    assert check["topic_js"] == pytest.approx(1.0) and check["confidence_drop"] == pytest.approx(0.4)
    assert row["status"] == "rejected"
    assert "macro-F1 fell" in row["reason"] and "recall of" in row["reason"]
    # Both reports carry the digest of the texts they were scored on (the gate pairs them only if equal), and a
    # class's loss was weighed text by text (a sign test).
    frozen = row["evaluation"]["frozen_set"]
    for name, report in frozen["champion_metrics"].items():
        assert report["digest"] == frozen["challenger_metrics"][name]["digest"], name
    assert "texts lost" in row["reason"], row["reason"]
    assert row["parent"] == serving
    assert registry.serving(own_engine, DEFAULT_MODEL_DIR)[0] == DEFAULT_MODEL_DIR


def test_a_restarted_scheduler_keeps_its_jobs_and_their_times(own_database_url, own_engine, tmp_path):  # type: ignore[no-untyped-def]
    settings = lifecycle_settings(tmp_path)
    first = build_scheduler(own_database_url, settings, blocking=False)
    first.start()
    planned = first.get_job(JOB_ID).next_run_time
    # Retention runs at start: today's and the next 3 days' partitions of messages and texts.
    wait_for(lambda: scalar(own_engine, "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                        "WHERE c.relkind = 'r'") >= 8, timeout_s=30,
             what="the partitions made ahead")
    first.shutdown()
    assert scalar(own_engine, "SELECT count(*) FROM apscheduler_jobs") == 3  # retrain, drift, retention

    time.sleep(1.1)  # a scheduler that re-created its job would now plan it a second later
    second = build_scheduler(own_database_url, lifecycle_settings(tmp_path, retrain_epochs=2.0), blocking=False)
    second.start()
    try:
        assert sorted(job.id for job in second.get_jobs()) == sorted([JOB_ID, DRIFT_JOB_ID, RETENTION_JOB_ID])
        job = second.get_job(JOB_ID)
        assert job.next_run_time == planned
        assert job.kwargs["epochs"] == 2.0  # arguments follow today's settings
    finally:
        second.shutdown()


def test_a_swap_during_a_replay_loses_and_repeats_nothing(broker, own_database_url, own_engine, settings,
                                                          tmp_path):  # type: ignore[no-untyped-def]
    setup_topics(broker.bootstrap, settings)
    serving = Classifier(DEFAULT_MODEL_DIR, device="cpu", forward_batch_size=32)

    def nudge(network: TwoHeadClassifier) -> None:
        network.sentiment_head.bias.add_(0.01)

    second = derived_model(tmp_path / "second", nudge)
    with own_engine.begin() as conn:
        registry.register(conn, version=second, parent=serving.version, path=str(tmp_path / "second"),
                          data_hash="test", metrics={}, evaluation=None, status="challenger", reason="test")
    stop = threading.Event()
    watcher = ModelWatcher(own_database_url, own_engine, DEFAULT_MODEL_DIR,
                           lambda path: Classifier(path, device="cpu", forward_batch_size=32),
                           serving.version, stop, poll_s=3600)
    watcher.start()
    commits: list[float] = []
    worker = Worker(settings, serving, own_engine, broker.bootstrap, stop=stop, model_updates=watcher.take,
                    on_batch=lambda report: commits.append(report.committed_at))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    total = 900
    messages = posts(total, f"swap-{settings.trend_series}")
    try:
        assert watcher.listening.wait(10)
        send(broker.bootstrap, settings.social_topic, messages[:300])
        wait_for(lambda: worker.stats.stored >= 100, timeout_s=60, what="the first batches")
        registry.promote(own_engine, second)
        send(broker.bootstrap, settings.social_topic, messages[300:600])
        wait_for(lambda: worker.stats.swaps != [], timeout_s=60, what="the swap")
        send(broker.bootstrap, settings.social_topic, messages[600:])
        wait_for(lambda: worker.stats.stored >= total, timeout_s=120, what="every message stored")
    finally:
        stop.set()
        thread.join(30)
        watcher.join(10)

    with own_engine.connect() as conn:
        by_version = dict(conn.execute(text(
            "SELECT model_version, count(*) FROM classified_messages GROUP BY 1")).all())  # type: ignore[arg-type]
        counted = conn.execute(text(
            "SELECT sum(n_messages) FROM trend_windows WHERE series = :s AND dimension = 'topic'"),
            {"s": settings.trend_series}).scalar()
    assert sum(by_version.values()) == total and counted == total
    assert set(by_version) == {serving.version, second} and min(by_version.values()) > 0
    swap = worker.stats.swaps[0]
    assert (swap.old_version, swap.new_version, len(worker.stats.swaps)) == (serving.version, second, 1)
    # The stream's pause: the gap between the commits either side of the swap, beside the usual gap.
    before = max(t for t in commits if t <= swap.at)
    after = min(t for t in commits if t > swap.at)
    gaps = sorted(b - a for a, b in zip(commits, commits[1:]))
    print(json.dumps({"swap_loop_ms": round(swap.pause_ms, 3), "commit_gap_at_swap_ms": round((after - before) * 1000, 1),
                      "median_commit_gap_ms": round(gaps[len(gaps) // 2] * 1000, 1), "by_version": by_version}))


def test_label_imports_corrections_all_or_nothing_and_a_newer_label_replaces_the_older(
        own_database_url, own_engine, tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", own_database_url)
    monkeypatch.setattr("finsentry.cli.get_settings", lambda: Settings(data_dir=tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text("task,text,label\nsentiment,$ABC cuts guidance,negative\nsentiment,$ABC beats,bullish\n")
    assert main(["label", "--input", str(bad)]) == 2
    assert "line 3: 'bullish' is not a sentiment label" in capsys.readouterr().err
    assert scalar(own_engine, "SELECT count(*) FROM labels") == 0

    first = tmp_path / "first.csv"
    first.write_text("task,text,label\nsentiment,$ABC cuts guidance,neutral\ntopic,$ABC cuts guidance,Earnings\n")
    assert main(["label", "--input", str(first), "--analyst", "ana"]) == 0
    fix = tmp_path / "fix.csv"
    fix.write_text("task,text,label\nsentiment,$ABC cuts guidance,negative\n")
    assert main(["label", "--input", str(fix), "--analyst", "bo"]) == 0
    with own_engine.connect() as conn:
        rows = sorted(conn.execute(text("SELECT task, label, analyst FROM labels")).all())
    assert [tuple(r) for r in rows] == [("sentiment", "negative", "bo"), ("topic", "Earnings", "ana")]


def test_commands_refuse_a_database_that_is_not_migrated(database_url, tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    import uuid

    from sqlalchemy import create_engine, make_url

    name = f"finsentry_empty_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(sqlalchemy_url(database_url)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        empty = make_url(sqlalchemy_url(database_url)).set(database=name).render_as_string(hide_password=False)
        monkeypatch.setattr("finsentry.cli.get_settings", lambda: Settings(DATABASE_URL=empty, data_dir=tmp_path))
        assert main(["model", "list"]) == 2
        assert "run `finsentry migrate` first" in capsys.readouterr().err
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
