"""Scoring a model on labelled examples, per slice: each task, and each domain of a task that has several.

The trainer reports on its dev split with raw logits; `evaluate_scores` reports on what a serving
`Classifier` returns (its precision, its temperatures), so the shipped model and a challenger can be
compared, fp32 beside int8, on exactly the dev splits the trainer holds out (`training.split`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models import behaviour, metrics
from models.dataset import Example

TASKS = ("topic", "sentiment")


def evaluation_slices(examples: list[Example]) -> dict[str, list[int]]:
    """Rows of each slice to report: every task ("sentiment"), and each domain of a task that has several
    ("sentiment/news", "sentiment/tweets"), so a gain on one register cannot hide a loss on another."""
    slices: dict[str, list[int]] = {}
    for task in TASKS:
        rows = [i for i, ex in enumerate(examples) if ex.task == task]
        if not rows:
            continue
        slices[task] = rows
        domains = sorted({examples[i].domain for i in rows})
        if len(domains) > 1:
            for domain in domains:
                slices[f"{task}/{domain}"] = [i for i in rows if examples[i].domain == domain]
    return slices


def evaluate_scores(
    examples: list[Example], topic_index: np.ndarray, topic_prob: np.ndarray, sentiment_probs: np.ndarray,
    topics: list[str], sentiments: list[str],
) -> dict[str, Any]:
    """Per-slice accuracy, macro-F1, per-class figures and ECE of served scores.

    Sentiment slices also give `polarity_accuracy`: on the texts labelled positive or negative, how often
    the sign of the sentiment score (P(positive) - P(negative)) is the label's.
    """
    report: dict[str, Any] = {}
    positive, negative = sentiments.index("positive"), sentiments.index("negative")
    for name, rows in evaluation_slices(examples).items():
        task = name.split("/")[0]
        y = np.asarray([examples[i].label for i in rows])
        if task == "topic":
            predicted, confidence, names = topic_index[rows], topic_prob[rows], topics
        else:
            probs = sentiment_probs[rows]
            predicted, confidence, names = probs.argmax(axis=1), probs.max(axis=1), sentiments
        slice_report = metrics.classification_report(y, predicted, names)
        slice_report["ece"] = metrics.calibration_error(confidence, predicted == y)
        if task == "sentiment":
            polar = y != sentiments.index("neutral")
            score = sentiment_probs[rows][:, positive] - sentiment_probs[rows][:, negative]
            agrees = np.where(y == positive, score > 0, score < 0)
            slice_report["polarity_accuracy"] = round(float(agrees[polar].mean()), 4) if polar.any() else 0.0
        report[name] = slice_report
    return report


def labels_and_scores(topic_index: np.ndarray, sentiment_probs: np.ndarray, topics: list[str],
                      sentiments: list[str]) -> tuple[list[str], list[str], list[float]]:
    """(topic names, sentiment labels, sentiment scores) of served scores: what the behavioural suite judges."""
    positive, negative = sentiments.index("positive"), sentiments.index("negative")
    score = sentiment_probs[:, positive] - sentiment_probs[:, negative]
    return ([topics[int(i)] for i in topic_index], [sentiments[int(i)] for i in sentiment_probs.argmax(axis=1)],
            [float(s) for s in score])


def behaviour_report(score: behaviour.Scorer, failures: int = 0) -> dict[str, Any]:
    """The behavioural suite's test half, scored: pass rate per capability (see `models.behaviour`)."""
    return behaviour.report(behaviour.run(behaviour.cases("test"), score), failures)
