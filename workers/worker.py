"""The worker: consume a micro-batch, run the pure stages, write it durably, then commit offsets.

Order per batch, the at-least-once contract: (1) dead letters produced and acknowledged, (2) rows and
trend deltas committed in one Postgres transaction, (3) Kafka offsets committed. A crash anywhere
replays the batch, and the sink's idempotency makes the replay change nothing.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from sqlalchemy import Engine

from finsentry.settings import Settings
from schemas.messages import DeadLetter, Kind, RawMessage
from workers import stages
from workers.delivery import deliver_due
from workers.detector import run_detection
from workers.errors import RetryableError
from workers.kafka_io import (
    consumer_config,
    next_offsets,
    producer_config,
    send_dead_letters,
)
from workers.routing import build_routes
from workers.sink import PostgresSink
from workers.spikes import SpikeParams

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    swaps: list[Swap] = field(default_factory=list)


@dataclass(frozen=True)
class Swap:
    """A model change between two batches; `pause_ms` is how long the loop spent on it."""

    old_version: str
    new_version: str
    at: float  # time.time()
    pause_ms: float


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did, for benchmarks and metrics."""

    records: int
    stored: int
    dead_lettered: int
    produced_at_ms: list[int]  # Kafka CreateTime of each record
    committed_at: float  # time.time() when the offsets were committed
    seconds: dict[str, float]  # per step: decode, inference, rows, dead_letters, database, commit
    model_version: str = ""


def spike_params(settings: Settings) -> SpikeParams:
    return SpikeParams(
        alpha=settings.spike_alpha, ratio=settings.spike_ratio, threshold=settings.spike_threshold,
        min_volume=settings.spike_min_volume, warmup_windows=settings.spike_warmup_windows,
        cooldown_windows=settings.spike_cooldown_windows,
    )


class Worker:
    def __init__(
        self, settings: Settings, scorer: stages.Scorer, engine: Engine, bootstrap: str,
        group_id: str | None = None, stop: threading.Event | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_loop: Callable[[Consumer], None] | None = None,
        model_updates: Callable[[], stages.Scorer | None] | None = None,
    ):
        self.settings = settings
        self.scorer = scorer
        self.engine = engine
        self.bootstrap = bootstrap
        self.group_id = group_id or settings.consumer_group
        self.stop = stop or threading.Event()
        self.stats = WorkerStats()
        self.on_batch = on_batch
        self.on_loop = on_loop  # called every turn of the consume loop (health, lag)
        self.model_updates = model_updates  # a newly loaded champion, taken between batches
        self.sink = PostgresSink(engine, settings.window_seconds, settings.trend_series)
        self._kinds: dict[str, Kind] = {settings.news_topic: "news", settings.social_topic: "social"}

    def run(self) -> WorkerStats:
        consumer = Consumer(consumer_config(self.bootstrap, self.group_id))
        producer = Producer(producer_config(self.bootstrap))
        consumer.subscribe(self.settings.input_topics)
        log.info("worker %s consuming %s (model %s)", self.group_id, self.settings.input_topics,
                 self.scorer.version)
        try:
            while not self.stop.is_set():
                if self.model_updates:
                    self._swap_if_ready()
                messages = consumer.consume(self.settings.micro_batch_size, self.settings.micro_batch_timeout_s)
                if messages:
                    self._handle(consumer, producer, messages)
                if self.on_loop:
                    self.on_loop(consumer)
        finally:
            consumer.close()
            producer.flush(5)
        return self.stats

    def _swap_if_ready(self) -> None:
        started = time.perf_counter()
        assert self.model_updates is not None
        new = self.model_updates()
        if new is None:
            return
        old, self.scorer = self.scorer, new
        swap = Swap(old.version, new.version, time.time(), (time.perf_counter() - started) * 1000)
        self.stats.swaps.append(swap)
        log.info("swapped model %s -> %s between batches (%.3f ms)", old.version, new.version, swap.pause_ms,
                 extra={"model_version": new.version})

    def _handle(self, consumer: Consumer, producer: Producer, messages: list[Any]) -> None:
        clock = [time.perf_counter()]
        raws: list[RawMessage] = []
        for msg in messages:
            if msg.error():
                log.warning("kafka error: %s", msg.error())
                continue
            raws.append(RawMessage(self._kinds[msg.topic()], msg.value(), msg.topic(), msg.partition(), msg.offset()))
        accepted, dead = stages.decode(raws, datetime.now(timezone.utc))
        clock.append(time.perf_counter())
        classified, failed = stages.classify_resilient(accepted, self.scorer)
        dead += failed
        clock.append(time.perf_counter())
        rows = [stages.to_row(item, self.settings.window_seconds) for item in classified]
        clock.append(time.perf_counter())
        self._durably(lambda: send_dead_letters(producer, self.settings.dead_letter_topic, dead))
        clock.append(time.perf_counter())
        self.sink.add(rows)
        stored = self._durably(self.sink.flush)
        clock.append(time.perf_counter())
        try:
            consumer.commit(offsets=next_offsets([m for m in messages if not m.error()]), asynchronous=False)
        except KafkaException as err:
            # The partitions moved to another worker meanwhile: it replays them, idempotently.
            log.warning("offset commit failed, batch will be replayed elsewhere: %s", err)
        clock.append(time.perf_counter())
        if self.on_batch:
            steps = ("decode", "inference", "rows", "dead_letters", "database", "commit")
            self.on_batch(BatchReport(
                len(raws), stored, len(dead), [m.timestamp()[1] for m in messages if not m.error()], time.time(),
                {name: clock[i + 1] - clock[i] for i, name in enumerate(steps)}, self.scorer.version))
        self.stats.consumed += len(raws)
        self.stats.stored += stored
        self.stats.duplicates += len(raws) - len(dead) - stored  # seen before, in this batch or earlier
        self.stats.dead_lettered += len(dead)
        self.stats.batches += 1
        log.info("batch committed", extra={
            "records": len(raws), "stored": stored, "dead_lettered": len(dead), "model_version": self.scorer.version,
            "first_message": rows[0]["message_key"] if rows else None,
            "last_message": rows[-1]["message_key"] if rows else None})
        _log_dead(dead)

    def _durably(self, action: Any) -> Any:
        """Run an action until it succeeds, backing off on RetryableError (never skip past it)."""
        delay = 0.2
        while True:
            try:
                return action()
            except RetryableError as err:
                if self.stop.is_set():
                    raise
                self.stats.retries += 1
                log.warning("%s; retrying in %.1f s", err, delay)
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 30.0)


def _log_dead(dead: list[DeadLetter]) -> None:
    for item in dead[:5]:  # the reason never quotes the input (pydantic errors without input)
        log.info("dead letter (%s): %s", item.stage, item.reason, extra={
            "kafka_topic": item.raw.topic, "kafka_partition": item.raw.partition, "kafka_offset": item.raw.offset})


class AlertLoop(threading.Thread):
    """Detection over closed windows and webhook delivery, every `detect_interval_s`."""

    def __init__(self, settings: Settings, engine: Engine, stop: threading.Event):
        super().__init__(name="alert-loop", daemon=True)
        self.settings = settings
        self.engine = engine
        self.stop_event = stop
        self.routes = build_routes(settings.webhook_url_list, settings.webhook_routes, settings.webhook_policy)

    def run_once(self) -> tuple[list[int], int]:
        s = self.settings
        touched = run_detection(self.engine, spike_params(s), s.allowed_lateness_s, s.window_seconds,
                                self.routes, series=s.trend_series, dimensions=tuple(s.spike_dimensions),
                                overrides=s.spike_overrides)
        delivered = deliver_due(self.engine, s.webhook_secret_list, s.webhook_timeout_s,
                                s.webhook_max_attempts, s.webhook_backoff_s, policy=s.webhook_policy)
        return touched, delivered

    def run(self) -> None:
        while not self.stop_event.wait(self.settings.detect_interval_s):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - keep the loop alive; the next pass retries
                log.exception("alert loop pass failed; retrying")
