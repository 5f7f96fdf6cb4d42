"""The worker: consume micro-batches, run the pure stages, write each durably, then commit its offsets.

Three stages overlap, each on its own thread, joined by bounded queues (`pipeline_depth`):

    consume, decode, tokenise  ->  score on the device, build columns  ->  dead letters, COPY, commit

While batch k is on the device, batch k+1 is decoded and tokenised and batch k-1 is written. A full
queue blocks the stage before it, so a slow database pauses consumption (back-pressure). The writer
thread's database transaction runs in a child process with its own GIL (`writer_process`); the
thread waits for its answer.

The at-least-once contract, per batch: (1) dead letters produced and acknowledged, (2) rows and trend
deltas committed in one Postgres transaction, (3) Kafka offsets committed. After (2) a "window touched"
event per key the transaction added to (with its windows) goes to the detector (`touched_topic`), without
waiting: the detector reads the counts from Postgres, so a lost event only delays it until its next sweep. One writer thread does all
three for one batch after another, so offsets are committed strictly in order and only after their
batch is durable. A crash anywhere replays the uncommitted batches, and the sink's idempotency makes the
replay change nothing. Before partitions are revoked, the batches in flight are finished and committed.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from config.settings import Settings
from models.tokenizing import Encoded
from schemas.errors import RetryableError
from schemas.messages import Accepted, DeadLetter, Kind, RawMessage
from workers.ingest.kafka_io import (
    consumer_config,
    ensure_topics,
    next_offsets,
    partition_count,
    producer_config,
    send_dead_letters,
    send_touched,
)
from workers.ingest.sink import register_partitions, release_empty_partitions
from workers.ingest.writer_process import SinkProcess
from workers.pipeline import stages
from workers.retry import backoff_s

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    """Counts over committed batches."""

    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    max_in_flight: int = 0  # most batches consumed and not yet durable at once: the overlap reached
    started: float = field(default_factory=time.monotonic)
    swaps: list[Swap] = field(default_factory=list)


@dataclass(frozen=True)
class Swap:
    """A model change between two batches; `pause_ms` is how long the loop spent on it."""

    old_version: str
    new_version: str
    at: float  # time.time()
    pause_ms: float


STEPS = ("decode", "tokenise", "inference", "columns", "dead_letters", "database")


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did, for benchmarks and metrics."""

    records: int
    stored: int
    dead_lettered: int
    produced_at_ms: list[int]  # Kafka CreateTime of each record
    committed_at: float  # time.time() when the batch was durable (its offsets are committed right after)
    seconds: dict[str, float]  # per step (STEPS); the steps of consecutive batches overlap in time
    model_version: str = ""


@dataclass
class _Batch:
    """One micro-batch on its way through the stages."""

    messages: list[Any]  # confluent_kafka.Message, for offsets and timestamps
    raws: list[RawMessage]
    accepted: list[Accepted]
    dead: list[DeadLetter]
    scorer: stages.Scorer  # the model that tokenised it scores it, even across a swap
    encoded: Encoded
    columns: stages.Columns | None = None
    seconds: dict[str, float] = field(default_factory=dict)


_END = object()  # closes a queue: everything before it is finished first


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
        self.sink = SinkProcess(engine.url.render_as_string(hide_password=False), settings.window_seconds,
                                settings.trend_series, settings.horizons)
        self._kinds: dict[str, Kind] = {settings.news_topic: "news", settings.social_topic: "social"}
        depth = max(1, settings.pipeline_depth)
        self._to_score: queue.Queue[Any] = queue.Queue(depth)
        self._to_write: queue.Queue[Any] = queue.Queue(depth)
        self._failed = threading.Event()  # a stage raised: the others give up, run() re-raises
        self._error: BaseException | None = None
        self._in_flight = 0  # batches consumed and not yet committed
        self._in_flight_changed = threading.Condition()
        self._durable_offsets: dict[tuple[str, int], int] = {}  # next offset per partition, batch durable
        self._producer: Producer | None = None
        self._touched_partitions = 0  # of settings.touched_topic; 0: no detector is told
        self._unregistered: set[tuple[str, int]] = set()  # assigned partitions the watermark does not know yet
        self._no_data_yet: set[tuple[str, int]] = set()  # registered, and no message of theirs consumed yet

    def run(self) -> WorkerStats:
        # What exists now (the model, the libraries) lives as long as the process: frozen, it is left out
        # of every full collection, which otherwise walks it all and holds the GIL for about 0.3 s here.
        gc.collect()
        gc.freeze()
        # Partition EOF events tell which newly assigned partitions are empty (see _note_empty).
        consumer = Consumer({**consumer_config(self.bootstrap, self.group_id), "enable.partition.eof": True})
        self._producer = Producer(producer_config(self.bootstrap))
        if self.settings.touched_topic:
            ensure_topics(self.bootstrap, [self.settings.touched_topic], self.settings.topic_partitions)
            self._touched_partitions = partition_count(self._producer, self.settings.touched_topic)
        self.sink.start()  # the database writes' own process (see writer_process)
        consumer.subscribe(self.settings.input_topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("worker %s consuming %s (model %s)", self.group_id, self.settings.input_topics,
                 self.scorer.version)
        stages_ = [threading.Thread(target=self._stage, args=(self._score, self._to_score, self._to_write),
                                    name="score", daemon=True),
                   threading.Thread(target=self._stage, args=(self._write, self._to_write, None),
                                    name="write", daemon=True)]
        for thread in stages_:
            thread.start()
        try:
            while not self.stop.is_set() and not self._failed.is_set():
                if self._unregistered:
                    self._register_partitions()
                self._commit_durable(consumer, asynchronous=True)
                if self.model_updates:
                    self._swap_if_ready()
                messages = consumer.consume(self.settings.micro_batch_size, self.settings.micro_batch_timeout_s)
                if self._no_data_yet:
                    self._note_empty(messages)
                batch = self._prepare(messages) if messages else None
                if batch is not None and batch.raws:
                    with self._in_flight_changed:
                        self._in_flight += 1
                        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
                    self._put(self._to_score, batch)
                if self.on_loop:
                    self.on_loop(consumer)
        finally:
            self._put(self._to_score, _END)  # finish what was consumed, unless a stage failed
            for thread in stages_:
                thread.join()
            self._commit_durable(consumer)
            consumer.close()
            self._producer.flush(5)
            self.sink.close()
        if self._error is not None:
            raise self._error
        return self.stats

    # --- stage 1, on the consuming thread: decode and tokenise ---------------------------------------

    def _prepare(self, messages: list[Any]) -> _Batch:
        started = time.perf_counter()
        raws: list[RawMessage] = []
        good: list[Any] = []
        for msg in messages:
            if error := msg.error():
                if error.code() != KafkaError._PARTITION_EOF:  # EOF: the end of a partition, for _note_empty
                    log.warning("kafka error: %s", error)
                continue
            good.append(msg)
            raws.append(RawMessage(self._kinds[msg.topic()], msg.value(), msg.topic(), msg.partition(), msg.offset()))
        accepted, dead = stages.decode(raws, datetime.now(timezone.utc), horizons=self.settings.horizons)
        decoded = time.perf_counter()
        scorer = self.scorer
        encoded = stages.encode(accepted, scorer)
        return _Batch(good, raws, accepted, dead, scorer, encoded,
                      seconds={"decode": decoded - started, "tokenise": time.perf_counter() - decoded})

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

    # --- stage 2: the device ---------------------------------------------------------------------------

    def _score(self, batch: _Batch) -> _Batch:
        started = time.perf_counter()
        scored, scores, failed = stages.score(batch.accepted, batch.encoded, batch.scorer)
        batch.dead += failed
        scored_at = time.perf_counter()
        batch.columns = stages.to_columns(scored, scores, batch.encoded)
        batch.seconds |= {"inference": scored_at - started, "columns": time.perf_counter() - scored_at}
        return batch

    # --- stage 3: durable writes, then the offsets ----------------------------------------------------

    def _write(self, batch: _Batch) -> None:
        assert batch.columns is not None and self._producer is not None
        clock = [time.perf_counter()]
        producer = self._producer
        self._durably(lambda: send_dead_letters(producer, self.settings.dead_letter_topic, batch.dead))
        clock.append(time.perf_counter())
        self.sink.add(batch.columns)
        stored = self._durably(self.sink.flush)
        clock.append(time.perf_counter())
        batch.seconds |= {name: clock[i + 1] - clock[i] for i, name in enumerate(("dead_letters", "database"))}
        if self._touched_partitions:
            watched = [t for t in self.sink.touched if t.dimension in self.settings.spike_dimensions]
            send_touched(producer, self.settings.touched_topic, self._touched_partitions, self.settings.trend_series,
                         watched)
        self._account(batch, stored)
        # The batch is durable: its offsets may be committed. The consuming thread commits them (the
        # client serialises its calls, so a commit from here would wait on that thread's poll).
        with self._in_flight_changed:
            for tp in next_offsets(batch.messages):
                self._durable_offsets[(tp.topic, tp.partition)] = tp.offset
            self._in_flight -= 1
            self._in_flight_changed.notify_all()

    def _account(self, batch: _Batch, stored: int) -> None:
        records, dead, columns = len(batch.raws), len(batch.dead), batch.columns
        assert columns is not None
        if self.on_batch:
            self.on_batch(BatchReport(records, stored, dead, [m.timestamp()[1] for m in batch.messages], time.time(),
                                      {name: batch.seconds.get(name, 0.0) for name in STEPS}, batch.scorer.version))
        self.stats.consumed += records
        self.stats.stored += stored
        self.stats.duplicates += records - dead - stored  # seen before, in this batch or earlier
        self.stats.dead_lettered += dead
        self.stats.batches += 1
        log.info("batch committed", extra={
            "records": records, "stored": stored, "dead_lettered": dead, "model_version": batch.scorer.version,
            "first_message": columns.message_key[0] if len(columns) else None,
            "last_message": columns.message_key[-1] if len(columns) else None})
        _log_dead(batch.dead)

    # --- plumbing ----------------------------------------------------------------------------------------

    def _stage(self, work: Callable[[Any], Any], inbox: queue.Queue[Any], outbox: queue.Queue[Any] | None) -> None:
        """Run `work` on each item of `inbox` in order, passing results on; stop at _END or a failure."""
        while not self._failed.is_set():
            try:
                item = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is not _END:
                try:
                    item = work(item)
                except BaseException as err:  # noqa: BLE001 - handed to run(), which re-raises it
                    self._error = self._error or err
                    self._failed.set()
                    with self._in_flight_changed:
                        self._in_flight_changed.notify_all()
                    return
            if outbox is not None:
                self._put(outbox, item)
            if item is _END:
                return

    def _put(self, box: queue.Queue[Any], item: Any) -> None:
        """Put with back-pressure; give up only when a stage has failed (nothing more is committed)."""
        while not self._failed.is_set():
            try:
                box.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _on_assign(self, consumer: Consumer, partitions: list[Any]) -> None:
        """Tell the detector's watermark about the new partitions before their first batch (else the
        other partitions' progress alone could close windows this worker has not written yet)."""
        self._unregistered |= {(tp.topic, tp.partition) for tp in partitions}
        self._register_partitions()

    def _register_partitions(self) -> None:
        try:
            register_partitions(self.engine, self.settings.trend_series, sorted(self._unregistered))
            self._no_data_yet |= self._unregistered
            self._unregistered.clear()
        except (DBAPIError, psycopg.Error) as err:  # the database is away: the next turn of the loop tries again
            log.warning("could not record the assigned partitions yet: %s", err)

    def _note_empty(self, messages: list[Any]) -> None:
        """Release the registered partitions that a partition-EOF event shows to be empty (their end came
        before any message), so that a quiet topic does not hold the watermark back."""
        empty = []
        for msg in messages:
            where = (msg.topic(), msg.partition())
            error = msg.error()
            if error is None:
                self._no_data_yet.discard(where)
            elif error.code() == KafkaError._PARTITION_EOF and where in self._no_data_yet:
                empty.append(where)
        if empty:
            try:
                release_empty_partitions(self.engine, self.settings.trend_series, sorted(empty))
                self._no_data_yet.difference_update(empty)
            except (DBAPIError, psycopg.Error) as err:  # they go idle on their own after watermark_idle_s
                log.warning("could not release empty partitions: %s", err)

    def _on_revoke(self, consumer: Consumer, partitions: list[Any]) -> None:
        """Before partitions move to another worker, finish and commit the batches in flight, so the new
        owner starts after them (a failure here only means it replays them, idempotently)."""
        with self._in_flight_changed:
            self._in_flight_changed.wait_for(lambda: self._in_flight == 0 or self._failed.is_set(), timeout=60)
        self._commit_durable(consumer)

    def _commit_durable(self, consumer: Consumer, asynchronous: bool = False) -> None:
        """On the consuming thread: commit the offsets of the batches that are durable. They only grow, and
        are sent in order; a lost commit means a replay, which changes nothing."""
        with self._in_flight_changed:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._durable_offsets.items())]
            self._durable_offsets.clear()
        if not offsets:
            return
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as err:
            # The partitions moved to another worker meanwhile: it replays them, idempotently.
            log.warning("offset commit failed, the last batches will be replayed: %s", err)

    def _durably(self, action: Any) -> Any:
        """Run an action until it succeeds, backing off on RetryableError (never skip past it)."""
        failures = 0
        while True:
            try:
                return action()
            except RetryableError as err:
                if self.stop.is_set():
                    raise
                self.stats.retries += 1
                failures += 1
                wait = backoff_s(failures, 0.2, 30.0)
                log.warning("%s; retrying in %.1f s", err, wait)
                time.sleep(wait)


def _log_dead(dead: list[DeadLetter]) -> None:
    for item in dead[:5]:  # the reason never quotes the input (pydantic errors without input)
        log.info("dead letter (%s): %s", item.stage, item.reason, extra={
            "kafka_topic": item.raw.topic, "kafka_partition": item.raw.partition, "kafka_offset": item.raw.offset})
