"""Fast batch tokenisation with the `tokenizers` library (no transformers wrapper on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from models.text import normalize_text


@dataclass(frozen=True)
class Encoded:
    """A batch of texts with their unpadded token ids, in input order."""

    texts: list[str]
    ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.texts)

    def part(self, start: int, stop: int) -> "Encoded":
        return Encoded(self.texts[start:stop], self.ids[start:stop])


class BatchTokenizer:
    """Encodes normalised texts to unpadded id lists; `pad` turns a slice of them into arrays.

    `encode_batch` runs in Rust on every core and releases the GIL, so a worker tokenises the next
    batch while the device works on the current one."""

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
