"""Story ids: exact and near duplicates of one text map to one story, by a pure function of the text.

A text is reduced to the content words of its first `MAX_CHARS` characters: HTML entities unescaped,
lower-cased, without links, @mentions, cashtags, hashtags, tokens with digits, one-letter tokens and a
leading "rt". The story id is a 64-bit hash of the first `PREFIX_WORDS` content words when there are at
least `LONG_TEXT_WORDS` of them (so a suffix, a trailing hashtag or a swapped ticker does not make a new
story), else of all of them. The same
text gets the same id in every worker, after a restart and in a replay, with no state to keep; copies of
a story posted by a hundred outlets or accounts are one story.

What it does not catch: a short text (under LONG_TEXT_WORDS content words) with an added real word, and
a copy with its first words changed. Detection caps each author's stories per window as well
(`workers/alerting/diversity.py`), so such variants from a few accounts still count little.
"""

from __future__ import annotations

import hashlib
import html
import re

PREFIX_WORDS = 6
LONG_TEXT_WORDS = 8
MAX_CHARS = 200  # a news article's story is its headline's and first sentence's, not its whole body's
FIRST_CHUNK = 64  # characters scanned first; most texts have LONG_TEXT_WORDS content words in them
# One pass: noise (links, mentions/hashtags/cashtags, tokens with a digit) matches without a group, a
# content word matches group 1. Each whitespace-separated token is read on its own (no match crosses a
# space), so a text can be scanned in pieces cut at spaces. The possessive `*+` stops the engine from
# retrying every shorter run of a word that has no digit.
_TOKENS = re.compile(r"https?://\S+|www\.\S+|[@#$]\S+|[^\s\d]*+\d\S*|([a-z][a-z']+)")


def content_words(text: str, enough: int | None = None) -> list[str]:
    """The words a story is recognised by (see the module's docstring): all of them, or, with `enough`,
    at least the first `enough` (fewer only when the text has fewer), scanning no further than needed."""
    text = text[:MAX_CHARS]
    if "&" in text:
        text = html.unescape(text)
    text = text.lower()
    cut = text.rfind(" ", 0, FIRST_CHUNK) if enough and len(text) > FIRST_CHUNK else -1
    if cut <= 0:
        words = [w for w in _TOKENS.findall(text) if w]
    else:
        words = [w for w in _TOKENS.findall(text, 0, cut) if w]
        if len(words) < (enough or 0) + (words[:1] == ["rt"]):
            words += [w for w in _TOKENS.findall(text, cut) if w]
    return words[1:] if words[:1] == ["rt"] else words


def story_id(text: str) -> int:
    """A signed 64-bit id (Postgres bigint) of the text's story."""
    words = content_words(text, LONG_TEXT_WORDS)
    if len(words) >= LONG_TEXT_WORDS:
        words = words[:PREFIX_WORDS]
    digest = hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def author_key(author: str | None, source: str) -> int | None:
    """A signed 64-bit key of who posted (an author within its source), or None when the feed names none.
    The key, not the name, is what detection needs, so it can be kept after the name is deleted."""
    if not author:
        return None
    digest = hashlib.blake2b(f"{source}\x00{author.lower()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
