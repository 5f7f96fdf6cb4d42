"""Replay a CSV or JSONL file into Kafka as news articles or social posts, with a progress bar.

JSONL lines are sent as they are (they should already be messages). CSV rows need a `text` column;
`id`, `source`, `published_at`, `url` and `author` columns are used when present. Rows without an id get
a stable one from the file's content and the row number, so replaying the same file twice is a replay,
not new news.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from tqdm import tqdm

from schemas.errors import UsageError
from workers.ingest.kafka_io import producer_config


def message_from_row(row: dict[str, str], kind: str, fallback_id: str, now: datetime) -> dict[str, Any]:
    text = row["text"]
    message: dict[str, Any] = {
        "id": row.get("id") or fallback_id,
        "source": row.get("source") or ("replay-news" if kind == "news" else "replay-social"),
        "published_at": row.get("published_at") or now.isoformat(),
    }
    if kind == "news":
        message["title"] = text
    else:
        message["text"] = text
    for optional in ("url", "author"):
        if row.get(optional):
            message[optional] = row[optional]
    return message


def read_messages(path: Path, kind: str) -> Iterator[bytes]:
    """Yield message bytes from a .jsonl file (as is) or a .csv file (built from its columns)."""
    if path.suffix == ".jsonl":
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip(b"\r\n")
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    now = datetime.now(timezone.utc)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            raise UsageError(f"{path}: a CSV for replay needs a 'text' column")
        for number, row in enumerate(reader):
            yield json.dumps(message_from_row(row, kind, f"{digest}-{number}", now)).encode()


def produce(
    bootstrap: str, topic: str, values: Iterable[bytes], rate: float | None = None,
    total: int | None = None, progress: bool = True,
) -> int:
    """Produce every value (keyed by its JSON id when it has one); return the count acknowledged."""
    producer = Producer(producer_config(bootstrap))
    failures: list[str] = []
    sent = 0
    started = time.monotonic()

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    with tqdm(total=total, desc=f"replay -> {topic}", unit="msg", disable=not progress) as bar:
        for value in values:
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            while True:
                try:
                    producer.produce(topic, value=value, key=_key(value), on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            sent += 1
            bar.update(1)
    if producer.flush(30) > 0 or failures:
        raise RuntimeError(f"{len(failures)} messages were not acknowledged: {failures[:3]}")
    return sent


def _key(value: bytes) -> bytes | None:
    try:
        obj = json.loads(value)
        return f"{obj['source']}:{obj['id']}".encode()
    except (ValueError, KeyError, TypeError, RecursionError):  # not ours to judge: the worker dead-letters it
        return None
