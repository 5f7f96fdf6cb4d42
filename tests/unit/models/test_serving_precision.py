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
    topic_logits, sentiment_logits = predict_logits(network, ids, torch.device("cpu"),
                                                     batch_size=classifier.forward_batch_size)  # the same batches
    np.testing.assert_array_equal(served.topic_index, topic_logits.argmax(axis=1))
    np.testing.assert_array_equal(served.sentiment_probs.argmax(axis=1), sentiment_logits.argmax(axis=1))


def test_int8_still_serves_when_asked_for(classifier: Classifier) -> None:
    """The setting that trades labels for speed still loads and scores: probabilities that sum to one, and
    labels that mostly agree with fp32 (int8 changes some; docs/model.md has how many)."""
    int8 = Classifier(DEFAULT_MODEL_DIR, device="cpu", forward_batch_size=64, precision="int8")
    assert int8.precision == "int8"
    assert any("quantized" in type(module).__module__ for module in int8.network.modules())
    texts = bench_texts(96, seed=7)
    quantised, exact = int8.score(texts), classifier.score(texts)
    np.testing.assert_allclose(quantised.sentiment_probs.sum(axis=1), 1.0, atol=1e-5)
    assert (quantised.topic_index == exact.topic_index).mean() >= 0.9
    assert (quantised.sentiment_probs.argmax(axis=1) == exact.sentiment_probs.argmax(axis=1)).mean() >= 0.9
