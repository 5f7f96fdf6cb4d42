"""Story ids: exact and near duplicates of one text map to one story, by a pure function of the text.

A text is reduced to its story words: the words the model's tokenizer splits it into (BERT's uncased
pre-tokeniser, as the shipped tokenizer configures it, on `normalize_text`'s output: HTML entities
unescaped, links dropped, pictographs written as words, lower-cased, accents stripped, punctuation split
off; the first `models.tokenizing.WORDS_KEPT` of them), keeping those of two or more letters and dropping a
leading "rt" and every @mention, #hashtag and $cashtag (the word after the sign, and further words joined
to it by "_"; the words carry no spaces, so "sold @ market" loses "market" too). Words with a digit are
not words of letters, so numbers, prices and codes drop out. The story id is a 64-bit hash of the first
`PREFIX_WORDS` story words when there are at least `LONG_TEXT_WORDS` of them (so a suffix, a trailing
hashtag or a swapped ticker does not make a new story), else of all of them. The same text gets the same
id in every worker, after a restart and in a replay, with no state to keep; copies of a story posted by a
hundred outlets or accounts are one story.

The worker does not read a text a second time for its story: the tokenizer calls `story_id_of_words` on
the words it split the text into for the model (`BatchTokenizer.encode_with`; only a tokenizer configured
as the shipped one hands words over); `story_ids` does the same for texts with the shipped tokenizer.

What it does not catch: a short text (under LONG_TEXT_WORDS story words) with an added real word or
pictograph, and a copy with its first words changed. Texts without a story word (only cashtags and
numbers, say) share one story. Detection caps each author's stories per window as
well (`workers/alerting/diversity.py`), so such variants from a few accounts still count little.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Callable, TypeVar

from config.settings import DEFAULT_MODEL_DIR
from models.artifacts import TOKENIZER
from models.tokenizing import WORDS_KEPT, BatchTokenizer

T = TypeVar("T")
PREFIX_WORDS = 6
LONG_TEXT_WORDS = 8
_SIGNS = frozenset("@#$")  # a mention, hashtag or cashtag: the next word (and "_" + word after it) is a name


def story_words(words: list[str]) -> list[str]:
    """The story words among a text's tokenizer words (see the module's docstring): all of them, or the
    first LONG_TEXT_WORDS + 1 when there are more (all a story id needs), without a leading "rt"."""
    out: list[str] = []
    in_name = 0  # 1: a sign was just read, its name's word comes next; 2: a name's word was just read
    for word in words:
        if in_name:
            if in_name == 1:
                if word.isalnum():
                    in_name = 2
                    continue
                if word == "_":  # a name that starts with "_"
                    continue
            elif word == "_":
                in_name = 1
                continue
            in_name = 0
        if word in _SIGNS:
            in_name = 1
        elif len(word) > 1 and word.isalpha():
            out.append(word)
            if len(out) > LONG_TEXT_WORDS:
                break
    return out[1:] if out[:1] == ["rt"] else out


def story_id_of_words(words: list[str]) -> int:
    """A signed 64-bit id (Postgres bigint) of the story of a text with these tokenizer words."""
    found = story_words(words)
    if len(found) >= LONG_TEXT_WORDS:
        found = found[:PREFIX_WORDS]
    digest = hashlib.blake2b(" ".join(found).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@lru_cache(maxsize=1)
def _tokenizer() -> BatchTokenizer:
    return BatchTokenizer(DEFAULT_MODEL_DIR / TOKENIZER, WORDS_KEPT)  # the ids are not used, only the words


def _with_shipped_tokenizer(texts: list[str], words_to: Callable[[list[str]], T]) -> list[T]:
    made = _tokenizer().encode_with(texts, words_to)[1]
    assert made is not None  # the shipped tokenizer hands words over
    return made


def story_ids(texts: list[str]) -> list[int]:
    """The story ids of texts, read with the shipped tokenizer as the worker reads them."""
    return _with_shipped_tokenizer(texts, story_id_of_words)


def story_id(text: str) -> int:
    """A signed 64-bit id (Postgres bigint) of the text's story."""
    return story_ids([text])[0]


def content_words(text: str) -> list[str]:
    """The story words of one text (see `story_words`)."""
    return _with_shipped_tokenizer([text], story_words)[0]


def author_key(author: str | None, source: str) -> int | None:
    """A signed 64-bit key of who posted (an author within its source), or None when the feed names none.
    The key, not the name, is what detection needs, so it can be kept after the name is deleted."""
    if not author:
        return None
    digest = hashlib.blake2b(f"{source}\x00{author.lower()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
