"""The behavioural suite: its construction (halves kept apart, enough cases), its judging, and the shipped
model held to the 0.90 target on every capability (expected failures where the shipped model misses it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models import behaviour
from models.behaviour import Case, judge
from models.classifier import Classifier
from models.dataset import topic_names
from models.evaluation import behaviour_report, labels_and_scores

CAPABILITIES = {"direction", "negation", "slang", "invariance", "register", "topic", "events"}


def test_the_test_half_has_at_least_1500_cases_over_every_capability() -> None:
    cases = behaviour.cases("test")
    assert len(cases) >= 1500
    assert {c.capability for c in cases} == CAPABILITIES
    assert {c.kind for c in cases} == {"MFT", "DIR", "INV"}
    assert all(len(c.texts) >= 2 for c in cases if c.kind in {"DIR", "INV"})
    assert behaviour.cases("test") == cases  # seeded: the same cases every run


def test_slang_covers_30_terms_and_emoji() -> None:
    lexicons = behaviour.load_suite()["lexicons"]
    terms = [t for name in ("slang_positive", "slang_negative") for half in ("train", "test") for t in lexicons[name][half]]
    assert len(terms) >= 30
    assert sum(1 for t in terms if not t.isascii()) >= 10


def test_no_test_half_value_reaches_the_training_examples() -> None:
    """Training data from the suite uses the train half only: no test-only company, broker, slang phrase or
    template of the test half appears in it."""
    suite = behaviour.load_suite()
    train_texts = " || ".join(ex.text for ex in behaviour.training_examples(topic_names())).lower()
    for name in ("company", "broker", "person", "slang_positive", "slang_negative"):
        train_values = {str(v).lower() for v in suite["lexicons"][name]["train"]}
        for value in suite["lexicons"][name]["test"]:
            probe = re.sub(r"\{\w+\}", "", str(value)).strip().lower()
            if probe and not any(probe in t for t in train_values):
                assert probe not in train_texts, (name, value)
    test_texts = {t for case in behaviour.cases("test") for t in case.texts}
    assert not test_texts & {ex.text for ex in behaviour.training_examples(topic_names())}


def test_a_lexicon_with_a_value_in_both_halves_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text("lexicons:\n  company: {train: [Acme, Brill], test: [Brill]}\ncapabilities: {}\n")
    with pytest.raises(ValueError, match="both halves"):
        behaviour.load_suite(path)


def test_judging_each_test_type() -> None:
    mft = Case("direction", "MFT", ("a", "b"), label="positive")
    assert judge(mft, ["x", "x"], ["positive", "positive"], [0.8, 0.7]).passed
    assert not judge(mft, ["x", "x"], ["positive", "neutral"], [0.8, 0.1]).passed
    topic = Case("topic", "MFT", ("a",), task="topic", label="Dividend")
    assert judge(topic, ["Dividend"], ["neutral"], [0.0]).passed
    lower = Case("negation", "DIR", ("base", "variant"), expect="lower", margin=0.1)
    assert judge(lower, ["x", "x"], ["positive", "neutral"], [0.7, 0.5]).passed
    assert not judge(lower, ["x", "x"], ["positive", "positive"], [0.7, 0.65]).passed  # moved, but by < margin
    higher = Case("negation", "DIR", ("base", "variant"), expect="higher", margin=0.1)
    assert judge(higher, ["x", "x"], ["negative", "neutral"], [-0.6, 0.0]).passed
    inv = Case("invariance", "INV", ("a", "b", "c"))
    assert judge(inv, ["x"] * 3, ["negative"] * 3, [-0.5, -0.4, -0.6]).passed
    assert not judge(inv, ["x"] * 3, ["negative", "negative", "neutral"], [-0.5, -0.4, -0.1]).passed


@pytest.fixture(scope="module")
def shipped_report(classifier: Classifier) -> dict[str, dict[str, object]]:
    def score(texts: list[str]) -> tuple[list[str], list[str], list[float]]:
        scores = classifier.score(texts)
        return labels_and_scores(scores.topic_index, scores.sentiment_probs, classifier.topics, classifier.sentiments)

    return behaviour_report(score, failures=5)


# Issue 22's target is not met yet on two capabilities: the shipped default (fs-b34551927eeb, a warm start
# from fs-a0cb45f9748b that passed the promotion gate on 2026-12-07) is under 0.90 on these as served on a CPU
# (fp32; docs/model.md has its figures). strict: the day a shipped model meets a capability's target, that
# case fails as XPASS and its entry here must go.
UNMET = {"negation", "events"}


@pytest.mark.parametrize("capability", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="issue 22: the shipped default misses 0.90"))
    if name in UNMET else name for name in sorted(CAPABILITIES)])
def test_the_shipped_model_passes_each_capability(shipped_report: dict[str, dict[str, object]],
                                                  capability: str) -> None:
    entry = shipped_report[capability]
    assert float(entry["pass_rate"]) >= behaviour.PASS_RATE_TARGET, entry  # type: ignore[arg-type]
