"""Kafka plumbing (confluent-kafka): client configs, topic creation, dead letters, "window touched" events, lag."""

from __future__ import annotations

import json
import logging
import time
import zlib
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.errors import RetryableError
from schemas.messages import DeadLetter
from workers.pipeline.stages import Touched

# librdkafka's own log lines (connection errors, say) go through Python logging like every other line, so
# that under FINSENTRY_LOG_FORMAT=json each is a JSON object; left alone, librdkafka writes them straight to
# stderr. A line reaches the logger when its client is polled; one written after a client's last poll (at
# its close) is dropped.
LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")


def client_config(bootstrap: str) -> dict[str, Any]:
    """What every confluent-kafka client here is given: the broker, and the logger for librdkafka's lines."""
    return {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOGGER}


def consumer_config(bootstrap: str, group_id: str) -> dict[str, Any]:
    return {
        **client_config(bootstrap),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 100,
    }


def producer_config(bootstrap: str) -> dict[str, Any]:
    return {**client_config(bootstrap), "acks": "all", "linger.ms": 5, "batch.num.messages": 10_000}


def ensure_topics(bootstrap: str, topics: list[str], partitions: int, timeout_s: float = 15.0) -> None:
    """Create missing topics; existing ones are left as they are."""
    admin = AdminClient(client_config(bootstrap))
    try:
        _create_missing(admin, topics, partitions, timeout_s)
    finally:
        admin.poll(0)  # hands librdkafka's lines from these calls (a broker that is down, say) to the logger


def _create_missing(admin: AdminClient, topics: list[str], partitions: int, timeout_s: float) -> None:
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, operation_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except Exception as err:  # noqa: BLE001 - a topic created meanwhile is fine
            if getattr(err.args[0], "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout_s
    while not set(topics) <= set(admin.list_topics(timeout=timeout_s).topics):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {topics} did not appear")
        time.sleep(0.1)


def dead_letter_value(item: DeadLetter) -> bytes:
    payload = item.raw.value or b""
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return json.dumps({
        "stage": item.stage,
        "reason": item.reason,
        "topic": item.raw.topic,
        "partition": item.raw.partition,
        "offset": item.raw.offset,
        "payload": text,
        "payload_hex": None if text is not None else payload.hex(),
    }).encode()


def send_dead_letters(producer: Producer, topic: str, items: list[DeadLetter], timeout_s: float = 10.0) -> None:
    """Produce and wait until the broker has every dead letter; raise RetryableError otherwise."""
    if not items:
        return
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for item in items:
        producer.produce(topic, value=dead_letter_value(item),
                         key=f"{item.raw.topic}:{item.raw.partition}:{item.raw.offset}".encode(),
                         on_delivery=on_delivery)
    if producer.flush(timeout_s) > 0 or failures:
        raise RetryableError(f"dead letters not acknowledged: {failures[:3]}")


def next_offsets(messages: list[Any]) -> list[TopicPartition]:
    """The offsets to commit after a batch: one past the highest offset seen per partition."""
    highest: dict[tuple[str, int], int] = {}
    for msg in messages:
        key = (msg.topic(), msg.partition())
        highest[key] = max(highest.get(key, -1), msg.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(highest.items())]


def lag(consumer: Consumer) -> int:
    """Messages behind the fetch high watermark, over this consumer's assignment."""
    total = 0
    for tp in consumer.assignment():
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        position = consumer.position([tp])[0].offset
        if high >= 0 and position >= 0:
            total += max(0, high - position)
    return total


def key_partition(key: str, partitions: int) -> int:
    """The partition of a keyed event finsentry produces (CRC-32 of the key): explicit, so that the detector
    can tell which keys its assigned partitions hold."""
    return zlib.crc32(key.encode()) % partitions


def partition_count(producer: Producer, topic: str, timeout_s: float = 10.0) -> int:
    metadata = producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise RuntimeError(f"topic {topic} has no partitions: {getattr(metadata, 'error', None)}")
    return len(metadata.partitions)


def send_touched(producer: Producer, topic: str, partitions: int, series: str, touched: list[Touched]) -> None:
    """Publish "window touched" events without waiting: one per key, naming the windows of that key a
    transaction added to (`windows`, oldest first) and the newest (`window_start`, all that events of
    earlier versions carried). A lost one only delays detection until the detector's next sweep, and a
    repeated one changes nothing."""
    by_key: dict[tuple[str, str], list[Any]] = {}
    for t in touched:
        by_key.setdefault((t.dimension, t.key), []).append(t.window_start)
    iso = {w: w.isoformat() for w in {t.window_start for t in touched}}
    for (dimension, key), windows in by_key.items():
        name = f"{dimension}:{key}"
        times = [iso[w] for w in sorted(windows)]
        value = json.dumps({"series": series, "dimension": dimension, "key": key, "window_start": times[-1],
                            "windows": times}).encode()
        producer.produce(topic, value=value, key=name.encode(), partition=key_partition(name, partitions))
    producer.poll(0)
