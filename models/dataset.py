"""Labelled training data: reading the CSVs, mapping labels, and a seeded stratified dev split."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from schemas.predictions import SENTIMENTS

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SENTIMENT_DIR = DATA_DIR / "twitter_financial_news_sentiment"
TOPIC_DIR = DATA_DIR / "twitter_financial_news_topic"

# The sentiment set's labels are 0 Bearish, 1 Bullish, 2 Neutral; ours are SENTIMENTS' order.
_SENTIMENT_FROM_SOURCE = {"Bearish": "negative", "Bullish": "positive", "Neutral": "neutral"}


@dataclass(frozen=True)
class Example:
    """One labelled text for one task ("topic" or "sentiment"); `label` indexes that task's names."""

    text: str
    task: str
    label: int


def topic_names(topic_dir: Path = TOPIC_DIR) -> list[str]:
    labels = json.loads((topic_dir / "labels.json").read_text())
    return [labels[str(i)] for i in range(len(labels))]


def read_labelled_csv(path: Path, task: str) -> list[Example]:
    """Read a `text,label` CSV in the format of the shared data (integer labels of that data set)."""
    source_labels = json.loads((path.parent / "labels.json").read_text())
    if task == "sentiment":
        names = list(SENTIMENTS)
        to_index = {k: names.index(_SENTIMENT_FROM_SOURCE[v]) for k, v in source_labels.items()}
    else:
        to_index = {k: int(k) for k in source_labels}
    examples = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            examples.append(Example(row["text"], task, to_index[row["label"].strip()]))
    return examples


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stratified_split(
    examples: list[Example], dev_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split per (task, label) so that the dev set keeps every class's share; deterministic by seed."""
    groups: dict[tuple[str, int], list[Example]] = defaultdict(list)
    for ex in examples:
        groups[(ex.task, ex.label)].append(ex)
    rng = random.Random(seed)
    train: list[Example] = []
    dev: list[Example] = []
    for key in sorted(groups):
        members = groups[key][:]
        rng.shuffle(members)
        n_dev = max(1, round(len(members) * dev_fraction))
        dev.extend(members[:n_dev])
        train.extend(members[n_dev:])
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev
