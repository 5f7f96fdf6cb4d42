"""Fast batch tokenisation with the `tokenizers` library (no transformers wrapper on the hot path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from models.text import normalize_text


class BatchTokenizer:
    """Encodes normalised texts to unpadded id lists; `pad` turns a slice of them into arrays."""

    def __init__(self, tokenizer_file: Path, max_length: int):
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self.max_length = max_length

    def encode(self, texts: list[str]) -> list[list[int]]:
        encodings = self._tok.encode_batch([normalize_text(t) for t in texts])
        return [e.ids for e in encodings]

    @staticmethod
    def pad(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad a batch to its longest member; returns (input_ids, attention_mask) as int64."""
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return input_ids, mask
