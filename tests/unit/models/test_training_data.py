"""Training data by domain: FinEntity's sentence labels, de-duplication, per-domain splits, the data
README's figures, and per-slice evaluation of served scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from models.dataset import (
    DATA_DIR,
    Example,
    data_files,
    dedupe_against,
    file_sha256,
    read_finentity,
    read_labelled_csv,
    split_by_domain,
    stratified_split,
    training_examples,
)
from models.evaluation import evaluate_scores, evaluation_slices

SENTIMENTS = ["negative", "neutral", "positive"]


def finentity_record(content: str, *labels: str) -> dict[str, object]:
    return {"content": content, "annotations": [{"value": "X", "label": label, "tag": label} for label in labels]}


def test_a_finentity_sentence_takes_its_entities_label_only_when_they_agree(tmp_path: Path) -> None:
    path = tmp_path / "FinEntity.json"
    path.write_text(json.dumps([
        finentity_record("Johnson & Johnson <JNJ.N> shares gained 0.2% after results. [nL4N2Z028U]", "Positive"),
        finentity_record("Siemens rallied while Huhtamaki slumped.", "Positive", "Negative"),
        finentity_record("Brent crude <LCOc1> fell 3%.", "Negative", "Negative"),
        finentity_record("Brent crude fell 3%.", "Negative"),  # the same sentence once markup is gone
        finentity_record("The bank held its annual meeting.", "Neutral"),
        finentity_record("No entity was annotated here."),
    ]))
    examples = read_finentity(path)
    assert [(ex.text, SENTIMENTS[ex.label]) for ex in examples] == [
        ("Johnson & Johnson shares gained 0.2% after results.", "positive"),
        ("Brent crude fell 3%.", "negative"),
        ("The bank held its annual meeting.", "neutral"),
    ]
    assert {(ex.task, ex.domain) for ex in examples} == {("sentiment", "news")}


def test_dedupe_drops_texts_seen_in_the_other_data_ignoring_case_and_spaces() -> None:
    news = [Example("Oil  prices fall", "sentiment", 0, "news"), Example("Gold rises", "sentiment", 2, "news")]
    tweets = [Example("oil prices fall", "sentiment", 1, "tweets")]
    assert [ex.text for ex in dedupe_against(news, tweets)] == ["Gold rises"]


def test_adding_a_domain_leaves_the_other_domains_split_as_it_was() -> None:
    tweets = [Example(f"tweet {i}", "sentiment", i % 3, "tweets") for i in range(300)]
    news = [Example(f"news {i}", "sentiment", i % 3, "news") for i in range(100)]
    _, alone = split_by_domain(tweets, {"tweets": 0.1}, seed=7)
    train, dev = split_by_domain(tweets + news, {"tweets": 0.1, "news": 0.2}, seed=7)
    assert {ex for ex in dev if ex.domain == "tweets"} == set(alone)
    assert sum(ex.domain == "news" for ex in dev) == 21  # 0.2 of each class: 7 + 7 + 7 (33 or 34 rounded)
    assert not {ex.text for ex in train} & {ex.text for ex in dev}
    # The shipped data: the tweets' dev split is the one every model before the news data was scored on.
    shipped = [ex for ex in training_examples() if ex.domain == "tweets"]
    _, before = stratified_split(shipped, 0.1, 13)
    _, now = split_by_domain(training_examples(), {"tweets": 0.1, "news": 0.2, "traders": 0.2}, 13)
    assert {ex for ex in now if ex.domain == "tweets"} == set(before)


def test_the_data_readme_states_each_files_sha256_and_rows() -> None:
    readme = (DATA_DIR / "README.md").read_text()
    for name, path in data_files().items():
        assert file_sha256(path) in readme, f"data/README.md lacks the sha256 of {name}"
    news = read_finentity()
    tweets = read_labelled_csv(data_files()["sentiment_train.csv"], "sentiment", "tweets")
    used = dedupe_against(news, tweets)
    counts = {name: sum(SENTIMENTS[ex.label] == name for ex in used) for name in SENTIMENTS}
    stated = re.search(r"FinEntity sentences used: ([\d,]+) \(negative ([\d,]+), neutral ([\d,]+), "
                       r"positive ([\d,]+)\)", readme)
    assert stated, "data/README.md does not state how many FinEntity sentences are used"
    assert [int(g.replace(",", "")) for g in stated.groups()] == [len(used), *counts.values()]


def test_slices_and_scores_per_domain() -> None:
    examples = [
        Example("a", "sentiment", 0, "news"), Example("b", "sentiment", 2, "news"),
        Example("c", "sentiment", 1, "news"), Example("d", "sentiment", 2, "tweets"),
        Example("e", "topic", 3, "tweets"), Example("f", "topic", 1, "tweets"),
    ]
    slices = evaluation_slices(examples)
    assert slices == {"topic": [4, 5], "sentiment": [0, 1, 2, 3], "sentiment/news": [0, 1, 2],
                      "sentiment/tweets": [3]}
    sentiment = np.array([[0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [1, 0, 0], [1, 0, 0]])
    report = evaluate_scores(examples, np.array([0, 0, 0, 0, 3, 2]), np.array([0.9] * 6), sentiment,
                             [f"t{i}" for i in range(4)], SENTIMENTS)
    news = report["sentiment/news"]
    assert news["n"] == 3 and news["accuracy"] == round(2 / 3, 4)
    assert news["per_class"]["positive"]["recall"] == 0.0
    # "b" is labelled positive and its score is 0.4 - 0.5 < 0: one of the two polar texts has the right sign.
    assert news["polarity_accuracy"] == 0.5
    assert report["sentiment/tweets"]["accuracy"] == 1.0 and report["topic"]["accuracy"] == 0.5


def test_counterfactuals_flip_one_direction_cue_and_the_label() -> None:
    from models.augment import counterfactuals

    examples = [
        Example("Acme profit rose 12% in Q3", "sentiment", 2, "tweets"),
        Example("Brill Corp Upgraded to buy at UBS", "sentiment", 2, "tweets"),
        Example("Shares fell despite strong sales", "sentiment", 0, "tweets"),  # two cues: not flipped
        Example("Stocks rose, Nasdaq +2%", "sentiment", 2, "tweets"),  # another sign of direction
        Example("Acme results out on Tuesday", "sentiment", 1, "tweets"),  # neutral: not flipped
        Example("Acme profit rose 12%", "topic", 5, "tweets"),  # topic labels do not depend on direction
    ]
    flipped = counterfactuals(examples)
    assert [(ex.text, SENTIMENTS[ex.label]) for ex in flipped] == [
        ("Acme profit fell 12% in Q3", "negative"),
        ("Brill Corp Downgraded to buy at UBS", "negative"),
    ]


def test_new_sources_are_read_with_their_labels_and_leave_the_old_dev_splits_alone() -> None:
    from models.dataset import read_finentity_topics, read_pooja, read_surge, read_taborda
    from models.training import TrainConfig, split

    surge, pooja, taborda = read_surge(), read_pooja(), read_taborda()
    assert {SENTIMENTS[ex.label] for ex in surge} == {"negative", "positive"}  # surge-ai has no neutral class
    assert {SENTIMENTS[ex.label] for ex in pooja} == {SENTIMENTS[ex.label] for ex in taborda} == set(SENTIMENTS)
    assert len(taborda) == 1300 and all(ex.domain == "traders" for ex in surge + pooja + taborda)
    assert not any("\ufffd" in ex.text for ex in pooja)  # bullish.txt is cp1252, decoded as such
    assert len(read_finentity_topics()) == 968

    old_dev = split(TrainConfig(sources=("finentity",)))[1]
    new_train, new_dev = split(TrainConfig(sources=("finentity", "finentity-topics", "surge", "pooja", "taborda")))
    legacy = [ex for ex in new_dev if (ex.domain, ex.task) != ("news", "topic") and ex.domain != "traders"]
    assert sorted(map(repr, legacy)) == sorted(map(repr, old_dev))
    # a news text's topic label is on the side of the split its sentiment label is on
    assert not {ex.text for ex in new_dev} & {ex.text for ex in new_train}
