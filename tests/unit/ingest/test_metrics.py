import numpy as np

from models.metrics import (
    classification_report,
    expected_calibration_error,
    fit_temperature,
    softmax,
)


def test_report_per_class_figures() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert report["accuracy"] == round(4 / 6, 4)
    assert report["per_class"]["b"] == {"precision": round(2 / 3, 4), "recall": 1.0, "f1": 0.8, "support": 2}
    assert report["macro_f1"] == round((0.5 + 0.8 + 2 / 3) / 3, 4)


def test_temperature_scaling_reduces_calibration_error_of_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    logits = rng.normal(size=(2000, 3))
    logits[np.arange(2000), y] += 1.0
    logits *= 4  # overconfident
    t = fit_temperature(logits, y)
    assert t > 1.5
    assert expected_calibration_error(softmax(logits, t), y) < expected_calibration_error(softmax(logits), y)
