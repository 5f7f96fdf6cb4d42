"""A CPU serves what the promotion gate measured: `auto` is fp32 there, and the served labels are those of
the gate's own forward pass (`training.predict_logits`, fp32) on the shipped model."""

from __future__ import annotations

import numpy as np
import torch

from config.settings import DEFAULT_MODEL_DIR
from models.artifacts import TOKENIZER, load_network
from models.classifier import Classifier, resolve_precision
from models.tokenizing import BatchTokenizer
from models.training import predict_logits
from workers.tools.bench import bench_texts


def test_auto_precision_is_fp32_on_a_cpu_and_fp16_on_a_gpu() -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("int8", torch.device("cpu")) == "int8"  # still there, asked for by name


def test_the_served_labels_are_the_gates_labels(classifier: Classifier) -> None:
    assert classifier.precision == "fp32"
    texts = bench_texts(96, seed=7)
    served = classifier.score(texts)
    network, meta, _ = load_network(DEFAULT_MODEL_DIR)
    ids = BatchTokenizer(DEFAULT_MODEL_DIR / TOKENIZER, meta.max_length).encode(texts)
    topic_logits, sentiment_logits = predict_logits(network, ids, torch.device("cpu"))
    np.testing.assert_array_equal(served.topic_index, topic_logits.argmax(axis=1))
    np.testing.assert_array_equal(served.sentiment_probs.argmax(axis=1), sentiment_logits.argmax(axis=1))
