"""`finsentry backfill`: re-score history with a chosen model into a separate trend series.

Messages are read from a file (as `replay` reads them) or from the input topic from an offset on,
run through the same pure stages as the worker, and counted into `trend_windows` under their own series (default `backfill-<model version>`),
so a model can be compared with the live trends, or back-tested, without touching them. Re-running
the same backfill changes nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, select
from tqdm import tqdm

from models.classifier import Classifier
from schemas.errors import UsageError
from schemas.messages import Kind, RawMessage
from schemas.tables import model_versions
from workers.ingest.kafka_io import consumer_config
from workers.ingest.sink import write_batch
from workers.pipeline import stages


def resolve_model(engine: Engine, model: str, default_dir: Path) -> Path:
    """A model folder, a registered version, or "default"."""
    if model == "default":
        return default_dir
    if Path(model).is_dir():
        return Path(model)
    with engine.connect() as conn:
        path = conn.execute(select(model_versions.c.path).where(model_versions.c.version == model)).scalar()
    if path is None:
        raise UsageError(f"model {model!r} is neither a folder nor a registered version (see the model_versions table)")
    return Path(path)


def read_topic_from(bootstrap: str, topic: str, offset: int, idle_s: float = 3.0) -> Iterator[bytes]:
    """Every record of every partition from `offset` up to the fetch high watermark.

    assign() joins no consumer group, so nothing is committed and no group can be wedged.
    """
    consumer = Consumer(consumer_config(bootstrap, f"finsentry-backfill-{uuid.uuid4().hex[:8]}"))
    partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, offset) for p in partitions])
    done: set[int] = set()
    quiet_since = time.monotonic()
    try:
        while len(done) < len(partitions) and time.monotonic() - quiet_since < idle_s:
            messages = consumer.consume(1000, 0.5)
            for msg in messages:
                value = None if msg.error() else msg.value()
                if value is not None:
                    yield value
            if messages:
                quiet_since = time.monotonic()
            for p in partitions:
                tp = TopicPartition(topic, p)
                high = consumer.get_watermark_offsets(tp, cached=True)[1]
                if high >= 0 and consumer.position([tp])[0].offset >= high:
                    done.add(p)
    finally:
        consumer.close()


def backfill(
    engine: Engine, classifier: Classifier, values: list[bytes], kind: Kind, window_seconds: int, origin: str,
    series: str | None = None, chunk: int = 2048,
) -> dict[str, Any]:
    """Score `values` (message bytes; `origin` names where they came from) into a backfill series."""
    series = series or f"backfill-{classifier.version}"
    counted = dead = total = 0
    with tqdm(total=len(values), desc=f"backfill -> {series}", unit="msg") as bar:
        for start in range(0, len(values), chunk):
            raws = [RawMessage(kind, v, origin, 0, start + i) for i, v in enumerate(values[start : start + chunk])]
            accepted, rejected = stages.decode(raws, datetime.now(timezone.utc))
            columns, failed = stages.classify(accepted, classifier)
            counted += write_batch(engine, [columns], window_seconds, series, store_messages=False)
            dead += len(rejected) + len(failed)
            total += len(raws)
            bar.update(len(raws))
    return {"series": series, "model_version": classifier.version, "messages": total, "counted": counted,
            "already_counted": total - dead - counted, "rejected": dead}
