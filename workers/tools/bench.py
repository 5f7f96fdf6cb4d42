"""`finsentry bench`: the model's own limit and the worker's paths, measured in one run on this machine.

- limit: the forward pass alone, on pre-tokenised batches already on the device, at the best batch size.
- pipeline: the worker's stages in-process, raw message bytes to the columns the sink writes (no broker, no database).
- e2e: messages already in the broker, through the worker, until rows, trends and offsets are committed
  (timed from the first batch's arrival, so the one-off consumer-group join is left out).
- latency: produce-to-commit at a steady offered load of half the e2e rate.
- limit, pipeline and e2e run twice, interleaved, and each reports its better run (`real_model_runs`
  has both): one run's CPU inference speed varies by up to a fifth on the 2-core reference machine.
- naive: one message at a time: poll, validate, tokenise with the transformers tokenizer, forward, one
  INSERT and one offset commit per message.

The host figures repeat the paths with `ZeroCostClassifier` (the real tokeniser, no forward pass), so
what remains is the host's own work, which is what must keep up with a GPU:
- host_pipeline, host_e2e: as above; sink_rows_per_s is rows stored per second of the worker's
  database step in host_e2e;
- db_copy: a plain COPY of the same rows into scratch copies of classified_messages and message_texts
  (their indexes too), the database's own limit on this machine; sink_alone: the sink on those rows
  with nothing else running;
- host_pipeline_cpu_us_per_msg: this process's CPU per message in host_pipeline; host_e2e_cpu_us_per_msg:
  the whole machine's busy CPU (every process: worker, writer, Postgres, broker) per message in host_e2e
  after its first batch: what the work costs, beside how fast it went on cores the processes share;
- host_e2e_2proc: `finsentry worker --processes 2 --zero-cost-model`, from the messages' production to
  the last trend count in Postgres.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import psycopg
import torch
from confluent_kafka import Consumer
from sqlalchemy import Engine
from tqdm import tqdm

from config.settings import Settings
from models.classifier import Classifier, ZeroCostClassifier
from models.dataset import SENTIMENT_DIR, TOPIC_DIR, read_labelled_csv
from models.tokenizing import BatchTokenizer
from schemas.messages import Accepted, RawMessage, SocialPost
from schemas.predictions import BatchScores
from workers.ingest.kafka_io import consumer_config, ensure_topics
from workers.ingest.processes import child_env, ready, stop_child
from workers.ingest.sink import PostgresSink, copy_rows, copy_texts, first_of_each_key, sorted_records, split_records
from workers.ingest.worker import STEPS, BatchReport, Worker
from workers.pipeline import stages
from workers.services.embedded import free_ports
from workers.tools.replay import produce

REAL_MODEL_RUNS = 2


@dataclass(frozen=True)
class BenchSizes:
    limit_texts: int
    pipeline_msgs: int
    e2e_msgs: int
    latency_seconds: float
    naive_msgs: int
    host_msgs: int  # each zero-cost path

    @classmethod
    def for_device(cls, device: torch.device, quick: bool) -> "BenchSizes":
        if device.type == "cuda":
            return cls(65_536, 200_000, 500_000, 20.0, 500, 200_000) if not quick else \
                cls(16_384, 50_000, 100_000, 10.0, 200, 50_000)
        return cls(4_000, 4_000, 4_000, 20.0, 300, 50_000) if not quick else cls(1_500, 1_500, 1_500, 10.0, 100, 20_000)


def bench_texts(n: int, seed: int = 1) -> list[str]:
    """Real financial tweets and headlines from the labelled data, sampled with replacement."""
    pool = [ex.text for ex in read_labelled_csv(TOPIC_DIR / "train.csv", "topic")]
    pool += [ex.text for ex in read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment")]
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(n)]


def message_bytes(texts: list[str], prefix: str) -> list[bytes]:
    now = datetime.now(timezone.utc)
    return [json.dumps({"id": f"{prefix}-{i}", "source": "bench", "text": t,
                        "published_at": (now - timedelta(seconds=len(texts) - i)).isoformat()}).encode()
            for i, t in enumerate(texts)]


def measure_limit(classifier: Classifier, texts: list[str], batch_sizes: list[int]) -> tuple[float, int]:
    """Best msgs/s of the forward pass alone, over batch sizes; returns (rate, batch size)."""
    ids = classifier.tokenizer.encode(texts)
    ids.sort(key=len)
    best = (0.0, batch_sizes[0])
    for size in batch_sizes:
        batches = []
        for start in range(0, len(ids), size):
            input_ids, mask = BatchTokenizer.pad(ids[start : start + size])
            batches.append((torch.from_numpy(input_ids).to(classifier.device),
                            torch.from_numpy(mask).to(classifier.device)))
        with torch.inference_mode():
            classifier.network(*batches[0])  # warm-up
            _sync(classifier.device)
            started = time.perf_counter()
            for input_ids_t, mask_t in batches:
                classifier.network(input_ids_t, mask_t)
            _sync(classifier.device)
        rate = len(ids) / (time.perf_counter() - started)
        best = max(best, (rate, size))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_pipeline(scorer: stages.Scorer, values: list[bytes], micro_batch: int) -> tuple[float, dict[str, float],
                                                                                         list[stages.Columns]]:
    """msgs/s of decode -> tokenise -> score -> columns, in-process and one step after another; returns
    the rate, the seconds per step and the columns (what the database steps then write)."""
    raws = [RawMessage("social", v, "bench", 0, i) for i, v in enumerate(values)]
    seconds = dict.fromkeys(("decode", "tokenise", "inference", "columns"), 0.0)
    batches = []
    started = time.perf_counter()
    for start in range(0, len(raws), micro_batch):
        clock = [time.perf_counter()]
        accepted, _ = stages.decode(raws[start : start + micro_batch], datetime.now(timezone.utc))
        clock.append(time.perf_counter())
        encoded = stages.encode(accepted, scorer)
        clock.append(time.perf_counter())
        scored, scores, _ = stages.score(accepted, encoded, scorer)
        clock.append(time.perf_counter())
        batches.append(stages.to_columns(scored, scores, encoded))
        clock.append(time.perf_counter())
        for i, name in enumerate(seconds):
            seconds[name] += clock[i + 1] - clock[i]
    return len(raws) / (time.perf_counter() - started), seconds, batches


def measure_db_copy(engine: Engine, batches: list[stages.Columns], window_seconds: int) -> float:
    """rows/s of a plain binary COPY of the same rows into scratch copies of classified_messages and
    message_texts (logged tables with all their indexes, not partitioned), built as the sink builds them:
    the database's own limit here."""
    rows = sum(len(b) for b in batches)
    messages, texts = split_records(sorted_records(first_of_each_key(batches, window_seconds)), None)
    scratch = f"bench_copy_{uuid.uuid4().hex[:8]}"
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.commit()
        try:
            with raw.cursor() as cur:
                cur.execute(f"CREATE TABLE {scratch} (LIKE classified_messages INCLUDING ALL)")
                cur.execute(f"CREATE TABLE {scratch}_texts (LIKE message_texts INCLUDING ALL)")
                raw.commit()
                started = time.perf_counter()
                copy_rows(cur, scratch, messages)  # two COPYs, one commit: the floor
                copy_texts(cur, f"{scratch}_texts", texts)
                raw.commit()
                seconds = time.perf_counter() - started
        finally:
            raw.rollback()
            raw.execute(f"DROP TABLE IF EXISTS {scratch}, {scratch}_texts")
            raw.commit()
    return rows / seconds


def measure_sink_alone(engine: Engine, batches: list[stages.Columns], window_seconds: int, series: str) -> float:
    """rows/s of the worker's sink on the same rows with nothing else running (in the e2e run the
    database step shares the machine's cores with the other two stages)."""
    sink = PostgresSink(engine, window_seconds, series)
    sink.connect()
    started = time.perf_counter()
    stored = sum(sink.write([batch]) for batch in batches)
    seconds = time.perf_counter() - started
    sink.close()
    return stored / seconds


class _Collector:
    def __init__(self) -> None:
        self.reports: list[BatchReport] = []
        self.lock = threading.Lock()

    def __call__(self, report: BatchReport) -> None:
        with self.lock:
            self.reports.append(report)

    def records(self) -> int:
        with self.lock:
            return sum(r.records for r in self.reports)


def measure_e2e(
    settings: Settings, scorer: stages.Scorer, engine: Engine, bootstrap: str, values: list[bytes],
    latency_seconds: float, run_id: str,
) -> dict[str, Any]:
    """Messages already in the broker, through the worker, until every batch is durable; then, when
    latency_seconds > 0, produce-to-durable latency at a steady offered load of half that rate."""
    topic = f"bench-{run_id}"
    s = settings.model_copy(update={"social_topic": topic, "news_topic": f"bench-news-{run_id}",
                                    "dead_letter_topic": f"bench-dlq-{run_id}", "trend_series": f"bench-{run_id}",
                                    "touched_topic": f"bench-windows-{run_id}"})
    ensure_topics(bootstrap, [*s.input_topics, s.dead_letter_topic], s.topic_partitions)
    produce(bootstrap, topic, values, total=len(values))
    collector = _Collector()
    stop = threading.Event()
    worker = Worker(s, scorer, engine, bootstrap, group_id=f"bench-{run_id}", stop=stop, on_batch=collector)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    result: dict[str, Any] = {}
    try:
        # The whole machine's CPU (worker, its writer, Postgres, broker) from the first durable batch on: what
        # the messages cost, beside how fast they went (on 2 shared cores the stages overlap as they can).
        _wait(lambda: collector.records() > 0, 600, interval_s=0.005)
        busy_before, records_before = machine_busy_seconds(), collector.records()
        _wait(lambda: collector.records() >= len(values), 600)
        busy_after = machine_busy_seconds()
        if busy_before is not None and busy_after is not None and len(values) > records_before:
            result["e2e_cpu_us_per_msg"] = (busy_after - busy_before) / (len(values) - records_before) * 1e6
        first = collector.reports[0]
        began = first.committed_at - sum(first.seconds.values())  # the stages of one batch run one after another
        reports = list(collector.reports)
        result["e2e_msgs_per_s"] = len(values) / (reports[-1].committed_at - began)
        result["e2e_step_seconds"] = {k: sum(r.seconds[k] for r in reports) for k in STEPS}
        result["sink_rows_per_s"] = sum(r.stored for r in reports) / max(1e-9, result["e2e_step_seconds"]["database"])
        result["e2e_batches"] = len(reports)
        if latency_seconds > 0:
            rate = max(1.0, result["e2e_msgs_per_s"] / 2)
            n_latency = max(10, int(rate * latency_seconds))
            done_before = len(collector.reports)
            produce(bootstrap, topic, message_bytes(bench_texts(n_latency, seed=2), f"lat-{run_id}"), rate=rate,
                    total=n_latency)
            _wait(lambda: collector.records() >= len(values) + n_latency, 120)
            latencies = [r.committed_at * 1000 - ts for r in collector.reports[done_before:] for ts in r.produced_at_ms]
            result |= {"e2e_p50_latency_ms": float(np.percentile(latencies, 50)),
                       "e2e_p99_latency_ms": float(np.percentile(latencies, 99)),
                       "latency_offered_msgs_per_s": rate, "latency_msgs": n_latency}
    finally:
        stop.set()
        thread.join(30)
    return result


def measure_e2e_processes(settings: Settings, engine: Engine, bootstrap: str, database_url: str, values: list[bytes],
                          run_id: str, processes: int = 2) -> float:
    """msgs/s of `finsentry worker --processes N --zero-cost-model`: from the start of production (the
    workers are already assigned their partitions) to the last trend count in Postgres."""
    names = {"social_topic": f"bench-{processes}p-{run_id}", "news_topic": f"bench-{processes}p-news-{run_id}",
             "dead_letter_topic": f"bench-{processes}p-dlq-{run_id}", "trend_series": f"bench-{processes}p-{run_id}",
             "touched_topic": f"bench-{processes}p-windows-{run_id}"}
    ensure_topics(bootstrap, [names["social_topic"], names["news_topic"], names["dead_letter_topic"]],
                  settings.topic_partitions)
    port = free_ports(processes)
    env = child_env(bootstrap, database_url, port, 0)
    env |= {f"FINSENTRY_{k.upper()}": v for k, v in names.items()}
    env |= {"FINSENTRY_MICRO_BATCH_SIZE": str(settings.micro_batch_size), "FINSENTRY_LOG_FORMAT": "text"}
    parent = subprocess.Popen([sys.executable, "-m", "finsentry.cli", "worker", "--processes", str(processes),
                               "--zero-cost-model", "--no-detector", "--group", f"bench-{processes}p-{run_id}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: all(ready(port + i) for i in range(processes)), 180)
        started = time.perf_counter()
        produce(bootstrap, names["social_topic"], values, total=len(values), progress=False)
        _wait(lambda: _counted(engine, names["trend_series"]) >= len(values), 600, interval_s=0.02)
        return len(values) / (time.perf_counter() - started)
    finally:
        stop_child(parent, 60)


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of this machine has spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _counted(engine: Engine, series: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(n_messages), 0) FROM trend_windows WHERE series = :s "
                                     "AND dimension = 'topic'"), {"s": series}).scalar_one())


def measure_naive(
    settings: Settings, classifier: Classifier, engine: Engine, bootstrap: str, values: list[bytes], run_id: str
) -> float:
    """One message at a time, the way a first version would be written."""
    from transformers import PreTrainedTokenizerFast

    from models.text import normalize_text

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(classifier.tokenizer_file))
    topic = f"naive-{run_id}"
    ensure_topics(bootstrap, [topic], settings.topic_partitions)
    produce(bootstrap, topic, values, total=len(values), progress=False)
    consumer = Consumer(consumer_config(bootstrap, f"naive-{run_id}"))
    consumer.subscribe([topic])
    sink = PostgresSink(engine, settings.window_seconds, series=f"naive-{run_id}")
    done = 0
    started: float | None = None
    bar = tqdm(total=len(values), desc="naive", unit="msg")
    try:
        while done < len(values):
            msg = consumer.poll(1.0)
            if msg is None or msg.error() or msg.value() is None:
                continue
            started = started or time.perf_counter()
            value: bytes = msg.value()  # type: ignore[assignment]  # checked above
            post = SocialPost.model_validate_json(value)
            encoded = tokenizer(normalize_text(post.text), return_tensors="pt", truncation=True,
                                max_length=classifier.meta.max_length)
            with torch.inference_mode():
                topic_logits, sent_logits = classifier.network(
                    encoded["input_ids"].to(classifier.device), encoded["attention_mask"].to(classifier.device))
            probs = torch.softmax(sent_logits.float(), -1)[0].tolist()
            t_probs = torch.softmax(topic_logits.float(), -1)[0]
            raw = RawMessage("social", value, topic, int(msg.partition() or 0), int(msg.offset() or 0))
            scores = BatchScores(np.array([int(t_probs.argmax())]), np.array([float(t_probs.max())]),
                                 np.array([probs]), tuple(classifier.topics), tuple(classifier.sentiments),
                                 classifier.version)
            sink.add(stages.to_columns([Accepted(raw, post)], scores))
            sink.flush()
            consumer.commit(message=msg, asynchronous=False)
            done += 1
            bar.update(1)
    finally:
        bar.close()
        consumer.close()
    return done / (time.perf_counter() - (started or time.perf_counter()))


def _wait(condition: Any, timeout_s: float, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        time.sleep(interval_s)


def run_bench(settings: Settings, classifier: Classifier, engine: Engine, bootstrap: str, quick: bool,
              sizes: BenchSizes | None = None, database_url: str = "") -> dict[str, Any]:
    """Every figure in one run. Without `database_url` the two-process path is left out."""
    sizes = sizes or BenchSizes.for_device(classifier.device, quick)
    run_id = uuid.uuid4().hex[:8]
    try:
        result = _run_paths(settings, classifier, engine, bootstrap, sizes, run_id, database_url)
    finally:
        remove_bench_rows(engine, run_id)
    return result | {"run_id": run_id}


def _run_paths(settings: Settings, classifier: Classifier, engine: Engine, bootstrap: str, sizes: BenchSizes,
               run_id: str, database_url: str) -> dict[str, Any]:
    batch_sizes = [256, 1024, 2048, 4096] if classifier.device.type == "cuda" else [16, 32, 64, 128]
    # The real model's three paths run REAL_MODEL_RUNS times, interleaved, and each path's better run
    # counts: on the 2-core reference machine one run's inference speed varies by up to a fifth.
    limits, pipelines, e2es = [], [], []
    for attempt in range(REAL_MODEL_RUNS):
        tag = f"{run_id}-{attempt}"
        limits.append(measure_limit(classifier, bench_texts(sizes.limit_texts), batch_sizes))
        pipelines.append(measure_pipeline(
            classifier, message_bytes(bench_texts(sizes.pipeline_msgs), f"p-{tag}"), settings.micro_batch_size))
        e2es.append(measure_e2e(settings, classifier, engine, bootstrap,
                                message_bytes(bench_texts(sizes.e2e_msgs), f"e-{tag}"),
                                sizes.latency_seconds if attempt == 0 else 0.0, tag))
    limit, best_batch = max(limits)
    pipeline, pipeline_steps, _ = max(pipelines, key=lambda p: p[0])
    latency = e2es[0]
    e2e = max(e2es, key=lambda e: float(e["e2e_msgs_per_s"]))
    naive = measure_naive(settings, classifier, engine, bootstrap,
                          message_bytes(bench_texts(sizes.naive_msgs), f"n-{run_id}"), run_id)

    zero = ZeroCostClassifier(settings.model_dir)
    host_values = message_bytes(bench_texts(sizes.host_msgs, seed=3), f"h-{run_id}")
    cpu_before = time.process_time()
    host_pipeline, host_pipeline_steps, host_batches = measure_pipeline(zero, host_values, settings.micro_batch_size)
    host_pipeline_cpu = (time.process_time() - cpu_before) / len(host_values) * 1e6
    db_copy = measure_db_copy(engine, host_batches, settings.window_seconds)
    sink_alone = measure_sink_alone(engine, host_batches, settings.window_seconds, f"bench-sink-{run_id}")
    host = measure_e2e(settings, zero, engine, bootstrap,
                       message_bytes(bench_texts(sizes.host_msgs, seed=3), f"he-{run_id}"), 0.0, f"h{run_id}")
    two = measure_e2e_processes(settings, engine, bootstrap, database_url,
                                message_bytes(bench_texts(sizes.host_msgs, seed=4), f"h2-{run_id}"), run_id) \
        if database_url else 0.0

    def steps(seconds: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 3) for k, v in seconds.items()}

    return {
        "device": str(classifier.device) if classifier.device.type == "cpu" else torch.cuda.get_device_name(),
        "model_version": classifier.version,
        "limit_msgs_per_s": round(limit, 1),
        "pipeline_msgs_per_s": round(pipeline, 1),
        "e2e_msgs_per_s": round(e2e["e2e_msgs_per_s"], 1),
        "e2e_p50_latency_ms": round(latency["e2e_p50_latency_ms"], 1),
        "e2e_p99_latency_ms": round(latency["e2e_p99_latency_ms"], 1),
        "naive_msgs_per_s": round(naive, 1),
        "pipeline_over_limit": round(pipeline / limit, 3),
        "e2e_over_pipeline": round(e2e["e2e_msgs_per_s"] / pipeline, 3),
        "host_pipeline_msgs_per_s": round(host_pipeline, 1),
        "host_e2e_msgs_per_s": round(host["e2e_msgs_per_s"], 1),
        "host_pipeline_cpu_us_per_msg": round(host_pipeline_cpu, 1),
        "host_e2e_cpu_us_per_msg": round(host.get("e2e_cpu_us_per_msg", 0.0), 1),
        "host_e2e_2proc_msgs_per_s": round(two, 1),
        "host_e2e_over_host_pipeline": round(host["e2e_msgs_per_s"] / host_pipeline, 3),
        "db_copy_rows_per_s": round(db_copy, 1),
        "sink_rows_per_s": round(host["sink_rows_per_s"], 1),
        "sink_over_db_copy": round(host["sink_rows_per_s"] / db_copy, 3),
        "sink_alone_rows_per_s": round(sink_alone, 1),
        "sink_alone_over_db_copy": round(sink_alone / db_copy, 3),
        "limit_batch_size": best_batch,
        "forward_batch_size": classifier.forward_batch_size,
        "micro_batch_size": settings.micro_batch_size,
        "pipeline_depth": settings.pipeline_depth,
        "latency_offered_msgs_per_s": round(latency["latency_offered_msgs_per_s"], 1),
        "real_model_runs": [{"limit": round(li[0], 1), "pipeline": round(pi[0], 1), "e2e": round(ei["e2e_msgs_per_s"], 1)}
                            for li, pi, ei in zip(limits, pipelines, e2es, strict=True)],
        "messages": {"limit": sizes.limit_texts, "pipeline": sizes.pipeline_msgs, "e2e": sizes.e2e_msgs,
                     "latency": latency["latency_msgs"], "naive": sizes.naive_msgs, "host": sizes.host_msgs},
        "pipeline_step_seconds": steps(pipeline_steps),
        "e2e_step_seconds": steps(e2e["e2e_step_seconds"]),
        "host_pipeline_step_seconds": steps(host_pipeline_steps),
        "host_e2e_step_seconds": steps(host["e2e_step_seconds"]),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def remove_bench_rows(engine: Engine, run_id: str) -> int:
    """Delete what one bench run stored (its messages, trend series, detector state), so that a benchmark
    leaves the database as it found it: drift checks and analysts read classified_messages. Every
    message id and series of a run holds its random run id."""
    from sqlalchemy import text

    pattern = f"%{run_id}%"
    with engine.begin() as conn:
        removed = conn.execute(text("DELETE FROM classified_messages WHERE source = 'bench' AND external_id LIKE :p"),
                               {"p": pattern}).rowcount
        conn.execute(text("DELETE FROM message_texts WHERE message_key LIKE :p"), {"p": f"bench:{pattern}"})
        for table in ("trend_windows", "trend_hourly", "trend_daily", "spike_state", "backfill_seen", "ingest_progress"):
            conn.execute(text(f"DELETE FROM {table} WHERE series LIKE :p"), {"p": pattern})
    return int(removed)


def print_table(result: dict[str, Any]) -> None:
    rows = [("model forward alone (limit)", "limit_msgs_per_s"), ("worker pipeline, in-process", "pipeline_msgs_per_s"),
            ("end to end, broker -> Postgres", "e2e_msgs_per_s"), ("naive, one message at a time", "naive_msgs_per_s"),
            ("host pipeline (zero-cost model)", "host_pipeline_msgs_per_s"),
            ("host end to end (zero-cost model)", "host_e2e_msgs_per_s"),
            ("host end to end, 2 processes", "host_e2e_2proc_msgs_per_s"),
            ("plain COPY, rows/s (db limit)", "db_copy_rows_per_s"), ("worker sink in e2e, rows/s", "sink_rows_per_s"),
            ("worker sink alone, rows/s", "sink_alone_rows_per_s")]
    print(f"\nfinsentry bench on {result['device']} (model {result['model_version']})")
    print(f"{'path':34} {'msgs/s':>10}")
    for label, key in rows:
        print(f"{label:34} {result[key]:10.1f}")
    print(f"latency at {result['latency_offered_msgs_per_s']:.0f} msgs/s offered: p50 {result['e2e_p50_latency_ms']:.0f} ms,"
          f" p99 {result['e2e_p99_latency_ms']:.0f} ms")
    print(f"pipeline / limit = {result['pipeline_over_limit']}, e2e / pipeline = {result['e2e_over_pipeline']}")
    print(f"CPU per message: host pipeline {result['host_pipeline_cpu_us_per_msg']:.1f} us (this process), "
          f"host end to end {result['host_e2e_cpu_us_per_msg']:.1f} us (the whole machine)")
    print(f"host e2e / host pipeline = {result['host_e2e_over_host_pipeline']}, "
          f"sink / COPY = {result['sink_over_db_copy']}")
