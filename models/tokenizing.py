"""Batch tokenisation: the model's BERT WordPiece tokenizer, exactly, at a fraction of the library's cost.

The `tokenizers` library spends about 45 us of CPU on a 95-character tweet here (its normaliser and
pre-tokeniser track offsets for every character). `WordPieceFastPath` produces the same ids for a
fraction of that: one `str.translate` (or, for ASCII text, `lower()` and one regex) splits a text into
words, and each distinct word's pieces are looked up once and remembered. Exactness comes from the
library itself: every character's treatment (removed, whitespace, punctuation, or part of a word, and
what it normalises to) is asked of the library's own normaliser and pre-tokeniser the first time the
character is seen. A text the fast path cannot vouch for (a special token such as `[CLS]` written in
it, or a character whose normal form keeps a combining mark, whose order NFD may change) goes to the
library, so the output is the library's for every text; tests compare the two on the training data
and on generated text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
from tokenizers import Tokenizer

from models.text import normalize_text

T = TypeVar("T")
WORDS_KEPT = 64  # words kept a text for its story id (workers/pipeline/stories.py reads the first few)


@dataclass(frozen=True)
class Encoded:
    """A batch of texts with their unpadded token ids, in input order, and what the caller's `words_to`
    made of each text's words (`BatchTokenizer.encode_with`; the worker's story ids), or None."""

    texts: list[str]
    ids: list[list[int]]
    from_words: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def part(self, start: int, stop: int) -> "Encoded":
        return Encoded(self.texts[start:stop], self.ids[start:stop],
                       None if self.from_words is None else self.from_words[start:stop])


class _NeedsLibrary(Exception):
    """Raised from inside `str.translate` for a character the fast path does not vouch for."""


class _CharTable(dict[int, str]):
    """code point -> what the BERT normaliser and pre-tokeniser make of it, padded so that `str.split()`
    then yields the pre-tokeniser's words: "" (removed), " " (whitespace), " c " (punctuation: a word of
    its own) or the normalised characters (part of a word). Filled lazily from the library."""

    LIMIT = 200_000  # distinct characters remembered; past that the table starts again

    def __init__(self, tok: Tokenizer):
        super().__init__()
        self._tok = tok
        self._unsafe: set[int] = set()

    def __missing__(self, code: int) -> str:
        if code in self._unsafe:
            raise _NeedsLibrary
        entry = self._entry(chr(code))
        if entry is None:
            self._unsafe.add(code)
            raise _NeedsLibrary
        if len(self) >= self.LIMIT:
            self.clear()
        self[code] = entry
        return entry

    def _entry(self, ch: str) -> str | None:
        assert self._tok.normalizer is not None and self._tok.pre_tokenizer is not None
        out = []
        for d in self._tok.normalizer.normalize_str(ch):
            if unicodedata.combining(d):  # NFD reorders combining marks by class: context matters
                return None
            words = [w for w, _ in self._tok.pre_tokenizer.pre_tokenize_str(f"a{d}a")]
            if words == ["a", "a"]:
                out.append(" ")
            elif words == ["a", d, "a"]:
                out.append(f" {d} ")
            elif words == [f"a{d}a"] and not d.isspace():
                out.append(d)
            else:
                return None
        return "".join(out)


# What the BERT pre-tokeniser makes of lower-cased ASCII without control characters: runs of letters
# and digits, and each other printable character alone. Checked against the library at start.
_ASCII_WORDS = re.compile(r"[a-z0-9]+|[^a-z0-9 ]")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class WordPieceFastPath:
    """The library's ids for BERT-style tokenizers (BertNormalizer lower-casing, BertPreTokenizer,
    WordPiece, `[CLS] $A [SEP]`), or None for a text that must go to the library."""

    WORD_CACHE_LIMIT = 1_000_000

    def __init__(self, tok: Tokenizer, config: dict[str, Any], max_length: int):
        model = config["model"]
        self._vocab: dict[str, int] = model["vocab"]
        self._unk = (self._vocab[model["unk_token"]],)
        self._prefix: str = model["continuing_subword_prefix"]
        self._max_word = int(model["max_input_chars_per_word"])
        self._cls, self._sep = self._vocab["[CLS]"], self._vocab["[SEP]"]
        self._keep = max_length - 1  # [CLS] and at most max_length - 2 pieces, then [SEP]
        self._specials = [t["content"] for t in config.get("added_tokens", [])]
        self._table = _CharTable(tok)
        self._pieces: dict[str, tuple[int, ...]] = {}
        table = self._table
        expected = {c: (c.lower() if c.isalnum() else " " if c == " " else f" {c} ") for c in map(chr, range(32, 127))}
        self._ascii_regex = all(table[ord(c)] == want for c, want in expected.items())

    @staticmethod
    def supports(config: dict[str, Any]) -> bool:
        """True for the configuration this fast path reproduces (all-MiniLM-L6-v2's, BERT uncased, every
        option of its normaliser as there), so the words it hands over are the same for every such model."""
        normalizer, pre, model, post = (config.get(k) or {} for k in ("normalizer", "pre_tokenizer", "model",
                                                                       "post_processor"))
        single = [next(iter(item.values()))["id"] for item in post.get("single", [])]
        return (normalizer.get("type") == "BertNormalizer" and normalizer.get("lowercase") is True
                and normalizer.get("strip_accents") in (None, True) and normalizer.get("clean_text") is True
                and normalizer.get("handle_chinese_chars") is True and pre.get("type") == "BertPreTokenizer"
                and model.get("type") == "WordPiece" and post.get("type") == "TemplateProcessing"
                and single == ["[CLS]", "A", "[SEP]"])

    def encode(self, text: str) -> tuple[list[int], list[str]] | None:
        """The text's ids and its words (at most WORDS_KEPT of them), or None: the library must do it."""
        if "[" in text and any(s in text for s in self._specials):
            return None  # special tokens are matched in the raw text, before normalisation
        if self._ascii_regex and text.isascii() and not _ASCII_CONTROL.search(text):
            words = _ASCII_WORDS.findall(text.lower())
        else:
            try:
                words = text.translate(self._table).split()
            except _NeedsLibrary:
                return None
        ids = [self._cls]
        pieces = self._pieces
        for word in words:
            found = pieces.get(word)
            if found is None:
                if len(pieces) >= self.WORD_CACHE_LIMIT:
                    pieces.clear()
                found = pieces[word] = self._wordpiece(word)
            ids.extend(found)
        del ids[self._keep:]
        ids.append(self._sep)
        return ids, words if len(words) <= WORDS_KEPT else words[:WORDS_KEPT]

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first, as the library's WordPiece model: a word with an unmatched rest
        is one [UNK]."""
        if len(word) > self._max_word:
            return self._unk
        vocab, out, start = self._vocab, [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = vocab.get(word[start:end] if start == 0 else self._prefix + word[start:end])
                if piece is not None:
                    out.append(piece)
                    start = end
                    break
            else:
                return self._unk
        return tuple(out)


class BatchTokenizer:
    """Encodes normalised texts to unpadded id lists; `pad` turns a slice of them into arrays.

    Texts go through `WordPieceFastPath` when the tokenizer is the BERT kind it reproduces; what it
    declines goes to the library's `encode_batch_fast`, which runs in Rust on every core and releases
    the GIL."""

    def __init__(self, tokenizer_file: Path, max_length: int, fast_path: bool = True):
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self.max_length = max_length
        config = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
        self.fast = WordPieceFastPath(self._tok, config, max_length) \
            if fast_path and WordPieceFastPath.supports(config) else None

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.encode_with(texts)[0]

    def encode_with(self, texts: list[str], words_to: Callable[[list[str]], T] | None = None,
                    ) -> tuple[list[list[int]], list[T] | None]:
        """Each text's ids, and, with `words_to`, what it makes of each text's pre-tokeniser words (at most
        WORDS_KEPT of them); None instead when this tokenizer is not the BERT kind those words are defined
        on (`WordPieceFastPath.supports`). `words_to` is called on each text's words as soon as the text is
        split: holding a batch's words until its end cost 2-3 us a text more here (memory traffic)."""
        normalized = [normalize_text(t) for t in texts]
        if self.fast is None:
            return self.library_encode(normalized), None
        encode = self.fast.encode
        ids: list[list[int]] = []
        made: list[T] = []
        rest = []
        for i, text in enumerate(normalized):
            found = encode(text)
            if found is None:  # a special token written in the text, or a character the fast path declines
                rest.append(i)
                ids.append([])
                if words_to is not None:
                    made.append(words_to(self.library_words(text)))
            else:
                ids.append(found[0])
                if words_to is not None:
                    made.append(words_to(found[1]))
        if rest:
            for i, found_ids in zip(rest, self.library_encode([normalized[i] for i in rest]), strict=True):
                ids[i] = found_ids
        return ids, made if words_to is not None else None

    def library_words(self, normalized: str) -> list[str]:
        """The library's pre-tokeniser words of a normalised text (at most WORDS_KEPT)."""
        assert self._tok.normalizer is not None and self._tok.pre_tokenizer is not None
        words = self._tok.pre_tokenizer.pre_tokenize_str(self._tok.normalizer.normalize_str(normalized))
        return [w for w, _ in words[:WORDS_KEPT]]

    def library_encode(self, normalized: list[str]) -> list[list[int]]:
        """The library alone, on already normalised texts (the reference the fast path must equal)."""
        return [e.ids for e in self._tok.encode_batch_fast(normalized)]

    @staticmethod
    def pad(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad a batch to its longest member; returns (input_ids, attention_mask) as int64.
        One fill of the whole batch in row order (0.6-0.8 us a tweet less than a copy per row)."""
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        mask = np.arange(int(lengths.max())) < lengths[:, None]
        input_ids = np.zeros(mask.shape, dtype=np.int64)
        input_ids[mask] = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        return input_ids, mask.astype(np.int64)
