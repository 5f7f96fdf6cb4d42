"""Classification metrics on plain arrays: accuracy, macro-F1, per-class precision/recall, ECE."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision, recall, F1 and support."""
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for index, name in enumerate(labels):
        tp = int(np.sum((y_pred == index) & (y_true == index)))
        predicted = int(np.sum(y_pred == index))
        actual = int(np.sum(y_true == index))
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if actual:
            f1s.append(f1)
        per_class[name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": actual,
        }
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(np.mean(y_true == y_pred)), 4) if len(y_true) else 0.0,
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else 0.0,
        "per_class": per_class,
    }


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-1 probability over equal-width confidence bins."""
    return calibration_error(probs.max(axis=1), probs.argmax(axis=1) == y_true)


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE from each prediction's confidence and whether it was right."""
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return round(float(ece), 4)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature in [0.5, 5] that minimises the negative log-likelihood (grid search)."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.arange(0.5, 5.0001, 0.05):
        probs = softmax(logits, float(t))
        nll = -float(np.mean(np.log(probs[np.arange(len(y_true)), y_true] + 1e-12)))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return round(best_t, 3)
