"""The serving classifier: loaded once, `predict(texts) -> list[Prediction]` under inference mode.

The hot path is `encode(texts)` (tokenise, on the host) then `score_encoded(encoded)`: it sorts texts by
token length and runs them in forward batches of at most `forward_batch_size`, so padding stays small,
and returns arrays, not an object per text. `ZeroCostClassifier` tokenises and pads exactly the same
way but skips the forward pass: what remains is the host's own work, the part that must keep up with a
GPU. Nothing here imports Kafka, faust or the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models.artifacts import TOKENIZER, ModelMeta, load_meta, load_network, verify_artifact
from models.text import extract_tickers
from models.tokenizing import BatchTokenizer, Encoded
from schemas.predictions import BatchScores, Prediction


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" is fp16 on a GPU and fp32 on a CPU: what the promotion gate measured is what is served.

    int8 (dynamic quantisation of the linear layers) stays a choice for CPU throughput (1.3-1.6x fp32's forward
    pass on short texts), but it costs the labels: its activations get one scale per forward batch, and the
    feed-forward layers' outliers leave the rest little resolution. On the shipped model, int8 against fp32
    on the same dev splits and behavioural suite: news sentiment accuracy 0.874 vs 0.898, events 0.61 vs
    0.70, direction 0.875 vs 0.908 (docs/model.md, "Serving precision on a CPU").
    """
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ValueError("int8 dynamic quantisation runs on the CPU only")
    if precision in {"fp16", "bf16"} and device.type != "cuda":
        raise ValueError(f"{precision} inference needs a GPU")
    return precision


def quantize_int8(network: torch.nn.Module) -> torch.nn.Module:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantised tensor API deprecated; it still runs
        return torch.ao.quantization.quantize_dynamic(network, {torch.nn.Linear}, dtype=torch.qint8)


# Forward batch sizes that measured best per device type (`finsentry bench` reports the limit's best).
DEFAULT_FORWARD_BATCH = {"cpu": 32, "cuda": 1024}


class Classifier:
    def __init__(
        self, model_dir: Path, device: str = "auto", forward_batch_size: int = 0, precision: str = "auto"
    ):
        loaded, meta, version = load_network(model_dir)
        network: torch.nn.Module = loaded
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if self.precision == "int8":
            network = quantize_int8(network)
        elif self.precision in {"fp16", "bf16"}:
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            network = network.to(self.device, dtype=dtype)
        else:
            network = network.to(self.device)
        self.network = network
        self._text_side(model_dir, meta, version,
                        forward_batch_size or DEFAULT_FORWARD_BATCH.get(self.device.type, 256))
        self._temperatures = torch.tensor(
            [meta.topic_temperature, meta.sentiment_temperature], dtype=torch.float32
        )

    def _text_side(self, model_dir: Path, meta: ModelMeta, version: str, forward_batch_size: int) -> None:
        """Labels, version and tokeniser: what the real and the zero-cost classifier share."""
        self.meta = meta
        self.version = version
        self.topics = meta.topics
        self.sentiments = meta.sentiments
        self.forward_batch_size = forward_batch_size
        self.tokenizer_file = model_dir / TOKENIZER
        self.tokenizer = BatchTokenizer(self.tokenizer_file, meta.max_length)

    def encode(self, texts: list[str], words_to: Callable[[list[str]], Any] | None = None) -> Encoded:
        """Token ids; with `words_to`, also what it makes of each text's words (`BatchTokenizer.encode_with`)."""
        return Encoded(texts, *self.tokenizer.encode_with(texts, words_to))

    def score(self, texts: list[str]) -> BatchScores:
        return self.score_encoded(self.encode(texts))

    def score_encoded(self, encoded: Encoded) -> BatchScores:
        """The sort-pad-forward loop: length-sorted forward batches, results back in input order."""
        n = len(encoded)
        topic_index = np.zeros(n, dtype=np.int64)
        topic_prob = np.zeros(n, dtype=np.float32)
        sentiment_probs = np.zeros((n, len(self.sentiments)), dtype=np.float32)
        if n:
            order = np.argsort([len(x) for x in encoded.ids], kind="stable")
            with torch.inference_mode():
                for start in range(0, n, self.forward_batch_size):
                    rows = order[start : start + self.forward_batch_size]
                    input_ids, mask = BatchTokenizer.pad([encoded.ids[i] for i in rows])
                    topic_index[rows], topic_prob[rows], sentiment_probs[rows] = self._forward(input_ids, mask)
        return BatchScores(topic_index, topic_prob, sentiment_probs, tuple(self.topics), tuple(self.sentiments),
                           self.version)

    def _forward(self, input_ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One padded forward batch -> (topic index, topic probability, sentiment probabilities)."""
        topic_logits, sent_logits = self.network(
            torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device)
        )
        t_topic, t_sent = float(self._temperatures[0]), float(self._temperatures[1])
        best_p, best_i = torch.softmax(topic_logits.float() / t_topic, dim=-1).max(dim=-1)
        sentiment = torch.softmax(sent_logits.float() / t_sent, dim=-1)
        return best_i.cpu().numpy(), best_p.cpu().numpy(), sentiment.cpu().numpy()

    def predict(self, texts: list[str]) -> list[Prediction]:
        scores = self.score(texts)
        return [self.prediction(scores, i, text) for i, text in enumerate(texts)]

    def prediction(self, scores: BatchScores, row: int, text: str) -> Prediction:
        probs = scores.sentiment_probs[row]
        named = {name: round(float(p), 6) for name, p in zip(self.sentiments, probs)}
        return Prediction(
            topic=self.topics[int(scores.topic_index[row])],
            topic_prob=round(float(scores.topic_prob[row]), 6),
            sentiment=self.sentiments[int(probs.argmax())],
            sentiment_probs=named,
            sentiment_score=round(named["positive"] - named["negative"], 6),
            tickers=extract_tickers(text),
            model_version=self.version,
        )


class ZeroCostClassifier(Classifier):
    """The real tokeniser, sorting and padding, but no forward pass: scores are a cheap function of the
    token ids. It stands in for a GPU that costs nothing, so a benchmark on any machine shows what the
    host side of the worker can feed."""

    def __init__(self, model_dir: Path, forward_batch_size: int = 1024):
        verify_artifact(model_dir)
        self.device = torch.device("cpu")
        self.precision = "none"
        self._text_side(model_dir, load_meta(model_dir), "zero-cost", forward_batch_size)

    def _forward(self, input_ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        first = input_ids[:, 1]  # the first word piece after [CLS]: deterministic and varied
        topic_index = first % len(self.topics)
        sentiment = np.full((len(first), len(self.sentiments)), 0.1, dtype=np.float32)
        sentiment[np.arange(len(first)), first % len(self.sentiments)] = 0.8
        return topic_index, np.full(len(first), 0.5, dtype=np.float32), sentiment
