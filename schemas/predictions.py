"""What the classifier returns: for one text (`Prediction`, the CLI) and for a batch (`BatchScores`, as arrays:
the hot path). Plain values, no torch, so the pipeline stages and the sink import none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

SENTIMENTS: tuple[str, str, str] = ("negative", "neutral", "positive")


class Prediction(BaseModel):
    """Labels for one text. `sentiment_score` is P(positive) - P(negative), in [-1, 1]."""

    model_config = ConfigDict(frozen=True)

    topic: str
    topic_prob: float
    sentiment: str
    sentiment_probs: dict[str, float]
    sentiment_score: float
    tickers: list[str]
    model_version: str


@dataclass(frozen=True)
class BatchScores:
    """Scores for a batch, in input order: topic index and probability, sentiment probabilities.

    They name their labels and the model that made them, so a model swap between two stages of the
    pipeline can never mislabel a batch."""

    topic_index: np.ndarray  # (n,) int
    topic_prob: np.ndarray  # (n,) float
    sentiment_probs: np.ndarray  # (n, 3) float, columns in `sentiments` order
    topics: tuple[str, ...] = ()
    sentiments: tuple[str, ...] = ()
    model_version: str = ""
