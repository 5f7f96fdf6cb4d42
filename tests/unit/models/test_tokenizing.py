"""The tokenizer's fast path against the `tokenizers` library it stands in for: the same ids for every
text, on the training data, on generated text of every script, and on the cases it hands back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import DEFAULT_MODEL_DIR
from models.dataset import SENTIMENT_DIR, TOPIC_DIR, read_labelled_csv
from models.text import normalize_text
from models.tokenizing import WORDS_KEPT, BatchTokenizer, WordPieceFastPath

TOKENIZER = DEFAULT_MODEL_DIR / "tokenizer.json"


@pytest.fixture(scope="module")
def tokenizer() -> BatchTokenizer:
    tok = BatchTokenizer(TOKENIZER, 128)
    assert tok.fast is not None  # the shipped model's tokenizer is the BERT kind the fast path reproduces
    return tok


def library(tok: BatchTokenizer, texts: list[str]) -> list[list[int]]:
    return tok.library_encode([normalize_text(t) for t in texts])


def test_the_training_data_tokenises_as_the_library_does(tokenizer: BatchTokenizer) -> None:
    texts = [ex.text for ex in read_labelled_csv(TOPIC_DIR / "train.csv", "topic")]
    texts += [ex.text for ex in read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment")]
    assert tokenizer.fast is not None
    declined = sum(tokenizer.fast.encode(normalize_text(t)) is None for t in texts)
    assert declined < len(texts) // 100  # the fast path takes nearly every real text
    ids, words = tokenizer.encode_with(texts, list)
    assert words is not None and ids == library(tokenizer, texts)
    assert words == [tokenizer.library_words(normalize_text(t)) for t in texts]
    assert max(len(w) for w in words) == WORDS_KEPT  # long texts hand over only their first words


@pytest.mark.parametrize("text", [
    "[CLS] written by hand, and [MASK] too",  # special tokens are matched before normalisation
    "a" * 101 + " and a word of exactly " + "b" * 100,  # over max_input_chars_per_word: [UNK]
    "$AAPL " * 200,  # truncated to 128 ids with [SEP] last
    "Cafe\u0301 de\u0301ja\u0300 vu",  # combining accents (stripped)
    "İstanbul ǅ ß ﬁnance Ⅻ",  # lower-casing that changes length
    "日本株が急落 央行",  # CJK ideographs are words of their own
    "ctrl\x01chars\x7f and zero\u200bwidth\ufeff",  # removed
    "😱📉 $TSLA🚀 — “quoted” … ‘x’ €5 ®™",
    "\u0f71\u0f72 \u0e33 \u1d165",  # marks whose normal form may be reordered
    "\ufffd replacement",
])
def test_hard_cases_tokenise_as_the_library_does(tokenizer: BatchTokenizer, text: str) -> None:
    assert tokenizer.encode([text]) == library(tokenizer, [text])


def test_a_truncated_text_ends_with_sep(tokenizer: BatchTokenizer) -> None:
    [ids] = tokenizer.encode(["$AAPL " * 200])
    assert len(ids) == 128 and ids[0] == 101 and ids[-1] == 102


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)
       | st.text(alphabet=st.sampled_from(list("abcXYZ019 .,'$#@-_()[]!?\u00e9\u2019\u2026\u4e2d\U0001F680\u0301")),
                 max_size=80))
def test_any_text_tokenises_as_the_library_does(tokenizer: BatchTokenizer, text: str) -> None:
    ids, words = tokenizer.encode_with([text], list)
    assert ids == library(tokenizer, [text])
    # the words handed over with the ids (the story id is made of them) are the library's pre-tokeniser's
    assert words == [tokenizer.library_words(normalize_text(text))]


def test_a_tokenizer_of_another_kind_goes_to_the_library_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    config["normalizer"]["lowercase"] = False  # a cased model: not what the fast path reproduces
    assert not WordPieceFastPath.supports(config)
    cased = tmp_path / "tokenizer.json"
    cased.write_text(json.dumps(config), encoding="utf-8")
    tok = BatchTokenizer(cased, 128)
    assert tok.fast is None
    texts = ["Apple Beats Estimates", "$AAPL"]
    assert tok.encode(texts) == tok.library_encode(texts) != BatchTokenizer(TOKENIZER, 128).encode(texts)
    assert tok.encode_with(texts, list)[1] is None  # its words are not the shipped tokenizer's: none handed over


@pytest.mark.parametrize("option", ["clean_text", "handle_chinese_chars"])
def test_a_normaliser_with_another_option_hands_no_words_over(option: str) -> None:
    config = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    config["normalizer"][option] = False  # other words than the shipped tokenizer's for some texts
    assert not WordPieceFastPath.supports(config)


def test_padding_puts_each_row_s_ids_first_then_zeros() -> None:
    ids = [[101, 7, 102], [101, 102], [101, 5, 6, 7, 8, 102], [101, 9, 102]]
    input_ids, mask = BatchTokenizer.pad(ids)
    assert input_ids.dtype == mask.dtype == "int64" and input_ids.shape == mask.shape == (4, 6)
    for row, seq in enumerate(ids):
        assert input_ids[row].tolist() == seq + [0] * (6 - len(seq))
        assert mask[row].tolist() == [1] * len(seq) + [0] * (6 - len(seq))
