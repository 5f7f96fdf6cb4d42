"""What the classifier returns for one text."""

from __future__ import annotations

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
