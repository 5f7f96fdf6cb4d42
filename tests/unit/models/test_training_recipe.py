"""The training recipe end to end on a few dozen texts: the teacher stage, per-domain metrics, the card."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from models.artifacts import DEFAULT_MODEL_DIR, verify_artifact
from models.dataset import Example
from models.training import TrainConfig, loss_weights, model_card, teacher_folders, train


def test_a_two_stage_run_distils_its_own_teacher_and_reports_each_domain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the teacher's folder is made
    config = TrainConfig(epochs=1, teacher_epochs=1, max_examples_per_task=40)
    result = train(config, tmp_path / "model", progress=False)

    assert verify_artifact(tmp_path / "model") == result.version
    assert {"topic", "sentiment", "sentiment/news", "sentiment/tweets"} <= set(result.metrics)
    domains = [name for name in result.metrics if name.startswith("sentiment/")]
    assert result.metrics["sentiment"]["n"] == sum(result.metrics[name]["n"] for name in domains)
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    teacher = saved["teacher"]
    assert teacher["version"] != result.version and 0 < teacher["seconds"] < result.seconds
    assert saved["recipe"]["teacher_dir"] is None  # the temporary teacher folder is not part of the recipe
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    assert f"a teacher ({teacher['version']})" in card and "### sentiment/news" in card
    assert "FinEntity.json" in card
    assert list(scratch.iterdir()) == []  # the teacher's folder is gone


def test_a_warm_start_s_card_names_the_model_it_started_from_and_its_teachers() -> None:
    """The names are read when training starts (`train`); the teacher list is parsed as `_teacher_probs` does."""
    shipped = verify_artifact(DEFAULT_MODEL_DIR)
    config = TrainConfig(init_dir=str(DEFAULT_MODEL_DIR), teacher_dir=f"{DEFAULT_MODEL_DIR}, {DEFAULT_MODEL_DIR},")
    assert teacher_folders(config) == [DEFAULT_MODEL_DIR, DEFAULT_MODEL_DIR]
    card = model_card(config, {}, {}, n_train=10, n_dev=5, device="cpu", seconds=1.0,
                      start=f"the weights of {shipped} (a warm start)", teachers=[shipped])
    assert f"from the weights of {shipped} (a warm start)" in card
    assert f"The soft labels of {shipped} fill in each text's missing head." in card
    plain = model_card(TrainConfig(), {}, {}, n_train=10, n_dev=5, device="cpu", seconds=1.0)
    assert "from all-MiniLM-L6-v2" in plain and "soft labels of" not in plain


def test_template_and_trader_examples_weigh_what_the_recipe_says() -> None:
    examples = [Example("a", "topic", 0, "tweets"), Example("b", "sentiment", 1, "templates"),
                Example("c", "sentiment", 2, "traders"), Example("d", "topic", 3, "news"), Example("e", "topic", 0, "")]
    weights = loss_weights(TrainConfig(templates_weight=0.5, traders_weight=0.25), examples)
    assert weights.tolist() == [1.0, 0.5, 0.25, 1.0, 1.0]
    assert loss_weights(TrainConfig(templates_weight=1.0, traders_weight=1.0), examples).tolist() == [1.0] * 5


def test_a_model_trained_before_the_loss_weights_is_rebuilt_without_them(tmp_path: Path) -> None:
    from finsentry.cli import _recipe_of

    (tmp_path / "metrics.json").write_text(json.dumps({"recipe": {"seed": 13, "sources": ["finentity"]}}))
    old = _recipe_of(tmp_path)
    assert (old.templates_weight, old.traders_weight) == (1.0, 1.0)  # what that model was trained with
    assert (TrainConfig().templates_weight, TrainConfig().traders_weight) == (0.25, 0.5)  # today's recipe
    (tmp_path / "metrics.json").write_text(json.dumps({"recipe": {"seed": 13, "templates_weight": 0.25}}))
    assert _recipe_of(tmp_path).templates_weight == 0.25
