"""Pure text helpers shared by training and inference: normalisation and cashtag extraction."""

from __future__ import annotations

import html
import re

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
# A cashtag is "$" + 1-6 letters, optionally ".X" share class ($BRK.B). It must not follow a word
# character or another "$", and must not be followed by more letters/digits, so prices such as
# "$5", "$1.2bn" or "US$30" never match.
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)(?![\w.]*\d)(?![A-Za-z])")


def normalize_text(text: str) -> str:
    """Unescape HTML entities, drop links and collapse whitespace (same for training and serving)."""
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    return " ".join(text.split())  # str.split() splits on exactly the characters `\s` matches


def extract_tickers(text: str) -> list[str]:
    """Return the distinct cashtags in order of first appearance, upper-cased, without the "$"."""
    if "$" not in text and "&" not in text:  # no cashtag, and no entity that could unescape to "$"
        return []
    seen: dict[str, None] = {}
    for match in _CASHTAG.finditer(html.unescape(text)):
        seen.setdefault(match.group(1).upper(), None)
    return list(seen)
