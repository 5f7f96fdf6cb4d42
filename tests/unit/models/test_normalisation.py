"""Training and serving normalise text the same way: the trainer's tokeniser (the base model's
tokenizer.json) and the served classifier give the same ids, and emoji reach the model as words."""

from __future__ import annotations

import json

from models.classifier import Classifier
from models.tokenizing import BatchTokenizer
from models.training import base_model_dir

TEXTS = [
    "$TSLA 🚀🚀🚀 to the moon",
    "$GME 💎🙌 diamond hands, not selling",
    "$AMC 📉📉 bagholders crying 😭",
    "S&amp;P 500 rallies https://t.co/abc 🔥",
    "Bulls 🐂 in control of $NVDA ⬆️",
]


def test_training_and_serving_tokenise_the_same_ids(classifier: Classifier) -> None:
    base = base_model_dir()
    trainer = BatchTokenizer(base / "tokenizer.json", classifier.meta.max_length)
    assert trainer.encode(TEXTS) == classifier.encode(TEXTS).ids


def test_emoji_reach_the_model_as_words_not_unknown_tokens(classifier: Classifier) -> None:
    vocab = json.loads(classifier.tokenizer_file.read_text(encoding="utf-8"))["model"]["vocab"]
    unknown = vocab["[UNK]"]
    for ids in classifier.encode(TEXTS).ids:
        assert unknown not in ids
    rocket = classifier.encode(["🚀"]).ids[0]
    assert rocket == classifier.encode(["rocket"]).ids[0]
