"""Labelled training data: reading each source, mapping labels, and a seeded stratified dev split per domain.

Two domains (registers) of text: "tweets" (the two zeroshot data sets) and "news" (FinEntity's news
sentences). Every example carries its domain, so splits, metrics and the promotion gate can be per domain.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from schemas.predictions import SENTIMENTS

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SENTIMENT_DIR = DATA_DIR / "twitter_financial_news_sentiment"
TOPIC_DIR = DATA_DIR / "twitter_financial_news_topic"
FINENTITY_JSON = DATA_DIR / "finentity" / "FinEntity.json"

# The sentiment set's labels are 0 Bearish, 1 Bullish, 2 Neutral; ours are SENTIMENTS' order.
_SENTIMENT_FROM_SOURCE = {"Bearish": "negative", "Bullish": "positive", "Neutral": "neutral"}


@dataclass(frozen=True)
class Example:
    """One labelled text for one task ("topic" or "sentiment"); `label` indexes that task's names."""

    text: str
    task: str
    label: int
    domain: str = ""  # "tweets", "news", "corrections"; "" for a user's file of unknown origin


def topic_names(topic_dir: Path = TOPIC_DIR) -> list[str]:
    labels = json.loads((topic_dir / "labels.json").read_text())
    return [labels[str(i)] for i in range(len(labels))]


def read_labelled_csv(path: Path, task: str, domain: str = "") -> list[Example]:
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
            examples.append(Example(row["text"], task, to_index[row["label"].strip()], domain))
    return examples


# Reuters instrument codes ("<JNJ.N>", "<.SPX>") and story references ("[nL4N2Z028U]") are wire-feed
# markup, not language: other news sources have none, so the model must not learn from them.
_WIRE_MARKUP = re.compile(r"\s*<[^<>\s]{1,24}>|\s*\[n[A-Z0-9]{6,14}\]")
_SPACES = re.compile(r"\s+")


def read_finentity(path: Path = FINENTITY_JSON) -> list[Example]:
    """FinEntity's news sentences as sentence-level sentiment examples (domain "news").

    FinEntity labels the sentiment of each financial entity in a sentence. A sentence whose entities
    all carry the same label takes that label; a sentence with mixed labels is left out (its overall
    polarity is not what the annotators judged). Duplicate sentences are kept once.
    """
    names = list(SENTIMENTS)
    seen: set[str] = set()
    examples = []
    for record in json.loads(path.read_text(encoding="utf-8")):
        labels = {a["label"].lower() for a in record["annotations"]}
        text = _SPACES.sub(" ", _WIRE_MARKUP.sub("", record["content"])).strip()
        if len(labels) != 1 or not text or text in seen:
            continue
        seen.add(text)
        examples.append(Example(text, "sentiment", names.index(labels.pop()), "news"))
    return examples


def dedupe_against(examples: list[Example], others: list[Example]) -> list[Example]:
    """Drop examples whose text (case- and space-insensitive) is also one of `others`' texts."""
    def key(text: str) -> str:
        return _SPACES.sub(" ", text).strip().lower()

    taken = {key(ex.text) for ex in others}
    return [ex for ex in examples if key(ex.text) not in taken]


def training_examples() -> list[Example]:
    """Every labelled example the product trains on: tweets (both tasks) and news sentences."""
    tweets = read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment", "tweets") + read_labelled_csv(
        TOPIC_DIR / "train.csv", "topic", "tweets"
    )
    return tweets + dedupe_against(read_finentity(), tweets)


def data_files() -> dict[str, Path]:
    """The files `training_examples` reads, by the name the model card gives them."""
    return {
        "sentiment_train.csv": SENTIMENT_DIR / "train.csv",
        "topic_train.csv": TOPIC_DIR / "train.csv",
        "FinEntity.json": FINENTITY_JSON,
    }


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


def split_by_domain(
    examples: list[Example], dev_fractions: dict[str, float], seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded stratified split of each domain on its own, so adding a domain leaves the others' splits as
    they were (a model trained before it was added is still scored on texts it did not see)."""
    train: list[Example] = []
    dev: list[Example] = []
    for domain in sorted({ex.domain for ex in examples}):
        part_train, part_dev = stratified_split([ex for ex in examples if ex.domain == domain],
                                                dev_fractions[domain], seed)
        train += part_train
        dev += part_dev
    rng = random.Random(seed)
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev
