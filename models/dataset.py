"""Labelled training data: reading each source, mapping labels, and a seeded stratified dev split per domain.

Domains (registers) of text: "tweets" (the two zeroshot data sets: financial news tweets), "news"
(FinEntity's news sentences, with sentiment from its annotators and topics labelled by the team) and
"traders" (stock tweets and phrases by traders: surge-ai, Taborda, poojathakoor). Every example carries its
domain, so splits, metrics and the promotion gate can be per domain.
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
FINENTITY_TOPICS = DATA_DIR / "finentity" / "topics.csv"
SURGE_CSV = DATA_DIR / "surge_ai" / "sentiment.csv"
POOJA_DIR = DATA_DIR / "poojathakoor"
TABORDA_CSV = DATA_DIR / "taborda" / "Taborda_tweets_labelled.csv"

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


def finentity_texts(path: Path = FINENTITY_JSON) -> list[tuple[str, set[str]]]:
    """FinEntity's passages without wire markup, each once, with the set of its entities' labels."""
    seen: set[str] = set()
    out = []
    for record in json.loads(path.read_text(encoding="utf-8")):
        text = _SPACES.sub(" ", _WIRE_MARKUP.sub("", record["content"])).strip()
        if text and text not in seen:
            seen.add(text)
            out.append((text, {a["label"].lower() for a in record["annotations"]}))
    return out


def read_finentity(path: Path = FINENTITY_JSON) -> list[Example]:
    """FinEntity's news sentences as sentence-level sentiment examples (domain "news").

    FinEntity labels the sentiment of each financial entity in a sentence. A sentence whose entities
    all carry the same label takes that label; a sentence with mixed labels is left out (its overall
    polarity is not what the annotators judged). Duplicate sentences are kept once.
    """
    names = list(SENTIMENTS)
    return [Example(text, "sentiment", names.index(next(iter(labels))), "news")
            for text, labels in finentity_texts(path) if len(labels) == 1]


def read_finentity_topics(path: Path = FINENTITY_TOPICS, topics: list[str] | None = None) -> list[Example]:
    """The team's topic labels of FinEntity's passages (`id,text,topic,note`; see data/README.md)."""
    names = topics or topic_names()
    with path.open(newline="", encoding="utf-8") as handle:
        return [Example(row["text"], "topic", names.index(row["topic"]), "news") for row in csv.DictReader(handle)]


def _polar_or_neutral(label: str) -> int:
    return list(SENTIMENTS).index(label)


def read_surge(path: Path = SURGE_CSV) -> list[Example]:
    """surge-ai/stock-sentiment: stock tweets labelled Positive or Negative (no neutral class)."""
    to_label = {"Positive": "positive", "Negative": "negative"}
    with path.open(newline="", encoding="utf-8") as handle:
        return [Example(row["Tweet Text"], "sentiment", _polar_or_neutral(to_label[row["Sentiment"].strip()]), "traders")
                for row in csv.DictReader(handle)]


def read_pooja(folder: Path = POOJA_DIR) -> list[Example]:
    """poojathakoor/twitter-stock-sentiment: one trader phrase a line, the label is the file's name.
    bullish.txt is cp1252, the others UTF-8; lines are split on "\n" only (cp1252's 0x85 is an ellipsis)."""
    out = []
    for name, label, encoding in (("bearish", "negative", "utf-8"), ("bullish", "positive", "cp1252"),
                                  ("neutral", "neutral", "utf-8")):
        for line in (folder / f"{name}.txt").read_bytes().decode(encoding).split("\n"):
            if line.strip():
                out.append(Example(line.strip(), "sentiment", _polar_or_neutral(label), "traders"))
    return out


def read_taborda(path: Path = TABORDA_CSV) -> list[Example]:
    """Taborda et al.'s stock market tweets (`id;created_at;text;sentiment`): the 1,300 rows with a label."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [Example(row["text"], "sentiment", _polar_or_neutral(row["sentiment"].strip()), "traders")
                for row in csv.DictReader(handle, delimiter=";") if (row["sentiment"] or "").strip()]


def consistent(examples: list[Example]) -> list[Example]:
    """Each (task, text) once (case- and space-insensitive); a text with conflicting labels is dropped."""
    by_key: dict[tuple[str, str], set[int]] = defaultdict(set)
    first: dict[tuple[str, str], Example] = {}
    for ex in examples:
        key = (ex.task, _SPACES.sub(" ", ex.text).strip().lower())
        by_key[key].add(ex.label)
        first.setdefault(key, ex)
    return [ex for key, ex in first.items() if len(by_key[key]) == 1]


def dedupe_against(examples: list[Example], others: list[Example]) -> list[Example]:
    """Drop examples whose (task, text) (text case- and space-insensitive) is also one of `others`'."""
    def key(ex: Example) -> tuple[str, str]:
        return ex.task, _SPACES.sub(" ", ex.text).strip().lower()

    taken = {key(ex) for ex in others}
    return [ex for ex in examples if key(ex) not in taken]


# Sources beyond the tweets, by the name a recipe gives them (TrainConfig.sources).
SOURCES = {
    "finentity": (read_finentity, FINENTITY_JSON),
    "finentity-topics": (read_finentity_topics, FINENTITY_TOPICS),
    "surge": (read_surge, SURGE_CSV),
    "pooja": (read_pooja, POOJA_DIR / "bullish.txt"),
    "taborda": (read_taborda, TABORDA_CSV),
}
DEFAULT_SOURCES = ("finentity", "finentity-topics", "surge", "pooja", "taborda")


def training_examples(sources: tuple[str, ...] = DEFAULT_SOURCES) -> list[Example]:
    """Every labelled example of a recipe: the tweets (both tasks), then each named source, each de-duplicated
    within itself and against everything before it."""
    examples = read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment", "tweets") + read_labelled_csv(
        TOPIC_DIR / "train.csv", "topic", "tweets"
    )
    for name in sources:
        examples += dedupe_against(consistent(SOURCES[name][0]()), examples)
    return examples


def data_files(sources: tuple[str, ...] = DEFAULT_SOURCES) -> dict[str, Path]:
    """The files `training_examples` reads, by the name the model card gives them."""
    files = {"sentiment_train.csv": SENTIMENT_DIR / "train.csv", "topic_train.csv": TOPIC_DIR / "train.csv"}
    for name in sources:
        if name == "pooja":
            files.update({f"poojathakoor/{p.name}": p for p in sorted(POOJA_DIR.glob("*.txt"))})
        else:
            files[SOURCES[name][1].name] = SOURCES[name][1]
    return files


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
        # A text labelled for both tasks (news: sentiment and topic) is on the side its sentiment label
        # fell on, so no dev text was seen in training under its other label.
        dev_texts = {ex.text for ex in part_dev if ex.task == "sentiment"}
        train_texts = {ex.text for ex in part_train if ex.task == "sentiment"}
        part_dev, part_train = (
            [ex for ex in part_dev if ex.text not in train_texts] + [ex for ex in part_train if ex.text in dev_texts],
            [ex for ex in part_train if ex.text not in dev_texts] + [ex for ex in part_dev if ex.text in train_texts])
        train += part_train
        dev += part_dev
    rng = random.Random(seed)
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev
