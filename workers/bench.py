"""`finsentry bench`: the model's own limit and the worker's paths, measured in one run on this machine.

- limit: the forward pass alone, on pre-tokenised batches already on the device, at the best batch size.
- pipeline: the worker's stages in-process, raw message bytes to trend deltas (no broker, no database).
- e2e: messages already in the broker, through the worker, until rows, trends and offsets are committed
  (timed from the first batch's arrival, so the one-off consumer-group join is left out).
- latency: produce-to-commit at a steady offered load of half the e2e rate.
- naive: one message at a time: poll, validate, tokenise with the transformers tokenizer, forward, one
  INSERT and one offset commit per message.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import torch
from confluent_kafka import Consumer
from sqlalchemy import Engine
from tqdm import tqdm

from finsentry.settings import Settings
from models.classifier import Classifier
from models.dataset import SENTIMENT_DIR, TOPIC_DIR, read_labelled_csv
from models.tokenizing import BatchTokenizer
from schemas.messages import Accepted, Classified, RawMessage, SocialPost
from workers import stages
from workers.kafka_io import consumer_config, ensure_topics
from workers.replay import produce
from workers.sink import PostgresSink
from workers.worker import BatchReport, Worker


@dataclass(frozen=True)
class BenchSizes:
    limit_texts: int
    pipeline_msgs: int
    e2e_msgs: int
    latency_seconds: float
    naive_msgs: int

    @classmethod
    def for_device(cls, device: torch.device, quick: bool) -> "BenchSizes":
        if device.type == "cuda":
            return cls(65_536, 200_000, 500_000, 20.0, 500) if not quick else cls(16_384, 50_000, 100_000, 10.0, 200)
        return cls(4_000, 4_000, 4_000, 20.0, 300) if not quick else cls(1_500, 1_500, 1_500, 10.0, 100)


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


def measure_pipeline(classifier: Classifier, values: list[bytes], micro_batch: int, window_seconds: int) -> float:
    """msgs/s of decode -> classify -> rows -> trend deltas, in-process."""
    raws = [RawMessage("social", v, "bench", 0, i) for i, v in enumerate(values)]
    started = time.perf_counter()
    for start in range(0, len(raws), micro_batch):
        accepted, _ = stages.decode(raws[start : start + micro_batch], datetime.now(timezone.utc))
        rows = [stages.to_row(c, window_seconds) for c in stages.classify(accepted, classifier)]
        stages.aggregate(rows)
    return len(raws) / (time.perf_counter() - started)


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


def measure_e2e_and_latency(
    settings: Settings, classifier: Classifier, engine: Engine, bootstrap: str, values: list[bytes],
    latency_seconds: float, run_id: str,
) -> dict[str, Any]:
    topic = f"bench-{run_id}"
    s = settings.model_copy(update={"social_topic": topic, "news_topic": f"bench-news-{run_id}",
                                    "dead_letter_topic": f"bench-dlq-{run_id}", "trend_series": f"bench-{run_id}"})
    ensure_topics(bootstrap, [*s.input_topics, s.dead_letter_topic], s.topic_partitions)
    produce(bootstrap, topic, values, total=len(values))
    collector = _Collector()
    stop = threading.Event()
    worker = Worker(s, classifier, engine, bootstrap, group_id=f"bench-{run_id}", stop=stop, on_batch=collector)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: collector.records() >= len(values), 600)
        first = collector.reports[0]
        began = first.committed_at - sum(first.seconds.values())
        e2e = len(values) / (collector.reports[-1].committed_at - began)
        steps = {k: sum(r.seconds[k] for r in collector.reports) for k in first.seconds}

        # Latency at a steady offered load of half the e2e rate, with the worker already running.
        rate = max(1.0, e2e / 2)
        n_latency = max(10, int(rate * latency_seconds))
        done_before = len(collector.reports)
        produce(bootstrap, topic, message_bytes(bench_texts(n_latency, seed=2), f"lat-{run_id}"), rate=rate,
                total=n_latency)
        _wait(lambda: collector.records() >= len(values) + n_latency, 120)
        latencies = [r.committed_at * 1000 - ts for r in collector.reports[done_before:] for ts in r.produced_at_ms]
    finally:
        stop.set()
        thread.join(30)
    return {
        "e2e_msgs_per_s": e2e,
        "e2e_p50_latency_ms": float(np.percentile(latencies, 50)),
        "e2e_p99_latency_ms": float(np.percentile(latencies, 99)),
        "latency_offered_msgs_per_s": rate,
        "latency_msgs": n_latency,
        "e2e_step_seconds": steps,
        "e2e_batches": done_before,
    }


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
            prediction = classifier.prediction(
                _single_scores(int(t_probs.argmax()), float(t_probs.max()), probs), 0, post.text)
            sink.add([stages.to_row(Classified(Accepted(raw, post), prediction), settings.window_seconds)])
            sink.flush()
            consumer.commit(message=msg, asynchronous=False)
            done += 1
            bar.update(1)
    finally:
        bar.close()
        consumer.close()
    return done / (time.perf_counter() - (started or time.perf_counter()))


def _single_scores(topic_index: int, topic_prob: float, sentiment_probs: list[float]) -> Any:
    from models.classifier import BatchScores

    return BatchScores(np.array([topic_index]), np.array([topic_prob]), np.array([sentiment_probs]))


def _wait(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        time.sleep(0.05)


def run_bench(settings: Settings, classifier: Classifier, engine: Engine, bootstrap: str, quick: bool,
              sizes: BenchSizes | None = None) -> dict[str, Any]:
    sizes = sizes or BenchSizes.for_device(classifier.device, quick)
    run_id = uuid.uuid4().hex[:8]
    batch_sizes = [256, 1024, 2048, 4096] if classifier.device.type == "cuda" else [16, 32, 64, 128]
    limit, best_batch = measure_limit(classifier, bench_texts(sizes.limit_texts), batch_sizes)
    pipeline = measure_pipeline(classifier, message_bytes(bench_texts(sizes.pipeline_msgs), f"p-{run_id}"),
                                settings.micro_batch_size, settings.window_seconds)
    e2e = measure_e2e_and_latency(settings, classifier, engine, bootstrap,
                                  message_bytes(bench_texts(sizes.e2e_msgs), f"e-{run_id}"), sizes.latency_seconds,
                                  run_id)
    naive = measure_naive(settings, classifier, engine, bootstrap,
                          message_bytes(bench_texts(sizes.naive_msgs), f"n-{run_id}"), run_id)
    return {
        "device": str(classifier.device) if classifier.device.type == "cpu" else torch.cuda.get_device_name(),
        "model_version": classifier.version,
        "limit_msgs_per_s": round(limit, 1),
        "pipeline_msgs_per_s": round(pipeline, 1),
        "e2e_msgs_per_s": round(e2e["e2e_msgs_per_s"], 1),
        "e2e_p50_latency_ms": round(e2e["e2e_p50_latency_ms"], 1),
        "e2e_p99_latency_ms": round(e2e["e2e_p99_latency_ms"], 1),
        "naive_msgs_per_s": round(naive, 1),
        "pipeline_over_limit": round(pipeline / limit, 3),
        "e2e_over_pipeline": round(e2e["e2e_msgs_per_s"] / pipeline, 3),
        "limit_batch_size": best_batch,
        "forward_batch_size": classifier.forward_batch_size,
        "micro_batch_size": settings.micro_batch_size,
        "latency_offered_msgs_per_s": round(e2e["latency_offered_msgs_per_s"], 1),
        "messages": {"limit": sizes.limit_texts, "pipeline": sizes.pipeline_msgs, "e2e": sizes.e2e_msgs,
                     "latency": e2e["latency_msgs"], "naive": sizes.naive_msgs},
        "e2e_step_seconds": {k: round(v, 3) for k, v in e2e["e2e_step_seconds"].items()},
        "torch_threads": torch.get_num_threads(),
    }


def print_table(result: dict[str, Any]) -> None:
    rows = [("model forward alone (limit)", "limit_msgs_per_s"), ("worker pipeline, in-process", "pipeline_msgs_per_s"),
            ("end to end, broker -> Postgres", "e2e_msgs_per_s"), ("naive, one message at a time", "naive_msgs_per_s")]
    print(f"\nfinsentry bench on {result['device']} (model {result['model_version']})")
    print(f"{'path':34} {'msgs/s':>10}")
    for label, key in rows:
        print(f"{label:34} {result[key]:10.1f}")
    print(f"latency at {result['latency_offered_msgs_per_s']:.0f} msgs/s offered: p50 {result['e2e_p50_latency_ms']:.0f} ms,"
          f" p99 {result['e2e_p99_latency_ms']:.0f} ms")
    print(f"pipeline / limit = {result['pipeline_over_limit']}, e2e / pipeline = {result['e2e_over_pipeline']}")
