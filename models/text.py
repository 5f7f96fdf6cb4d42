"""Pure text helpers shared by training and inference: normalisation and cashtag extraction."""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
# A cashtag is "$" + 1-6 letters, optionally ".X" share class ($BRK.B). It must not follow a word
# character or another "$", and must not be followed by more letters/digits, so prices such as
# "$5", "$1.2bn" or "US$30" never match.
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)(?![\w.]*\d)(?![A-Za-z])")

# Emoji and other pictographs: the model's vocabulary has none of them (each run of them became one [UNK]),
# so each is written as words, its Unicode name unless the table below says what it means in markets.
_PICTOGRAPH = re.compile("[\u2190-\u2bff\U0001f000-\U0001faff]")
_PICTOGRAPH_REPEATS = re.compile("([\u2190-\u2bff\U0001f000-\U0001faff])\\1{3,}")  # a run of 4+ counts as 3
# Variation selectors, zero-width joiner, skin tones and flag letters carry no meaning here: removed.
_DROP = dict.fromkeys([0xFE0E, 0xFE0F, 0x200D, *range(0x1F3FB, 0x1F400), *range(0x1F1E6, 0x1F200)])
# The same characters, found by a scan (the regex engine is quickest here with the BMP and astral ones apart).
_DROPPED = re.compile("[\u200d\ufe0e\ufe0f]|[\U0001f1e6-\U0001f1ff\U0001f3fb-\U0001f3ff]")
_MARKET_EMOJI = {
    "🐂": "bull", "🐃": "bull", "🐻": "bear", "💎": "diamond", "🙌": "raised hands", "🌙": "moon", "🌕": "moon",
    "🚀": "rocket", "📈": "chart up", "📉": "chart down", "⬆": "up arrow", "⬇": "down arrow", "🔺": "up",
    "🔻": "down", "🟢": "green", "🔴": "red", "🩸": "blood", "💩": "poop", "🤡": "clown", "🤑": "money face",
    "💸": "money flying away", "😭": "crying", "😱": "screaming", "🤮": "vomiting", "💀": "skull", "☠": "skull",
    "🎯": "target", "🙏": "praying", "★": "star", "⭐": "star", "✅": "check mark", "❌": "cross mark", "⚠": "warning",
}
_NAME_NOISE = {"sign", "symbol", "black", "white", "heavy", "large", "medium", "small", "with"}


@lru_cache(maxsize=4096)
def _as_words(char: str) -> str:
    if char in _MARKET_EMOJI:
        return f" {_MARKET_EMOJI[char]} "
    if unicodedata.category(char) != "So":  # arrows that are maths (Sm) and the like stay as they are
        return char
    words = [w for w in unicodedata.name(char, "").lower().replace("-", " ").split() if w not in _NAME_NOISE]
    return f" {' '.join(words)} " if words else " "


def pictographs_as_words(text: str) -> str:
    """"$TSLA 🚀🚀" -> "$TSLA  rocket  rocket "; other characters unchanged."""
    # str.translate with a table looks every character up (10-14 us a non-ASCII tweet here): only when needed.
    if _DROPPED.search(text):
        text = text.translate(_DROP)
    if not _PICTOGRAPH.search(text):  # most non-ASCII text has only accents, quotes or dashes
        return text
    return _PICTOGRAPH.sub(lambda m: _as_words(m.group(0)), _PICTOGRAPH_REPEATS.sub(r"\1\1\1", text))


def normalize_text(text: str) -> str:
    """Unescape HTML entities, drop links, write pictographs as words and collapse whitespace (the same for
    training and serving)."""
    text = html.unescape(text)
    if "://" in text or "www." in text.lower():  # the regex costs about 2 us a tweet even when nothing matches
        text = _URL.sub(" ", text)
    if not text.isascii():
        text = pictographs_as_words(text)
    return " ".join(text.split())  # str.split() splits on exactly the characters `\s` matches


def extract_tickers(text: str) -> list[str]:
    """Return the distinct cashtags in order of first appearance, upper-cased, without the "$"."""
    if "$" not in text and "&" not in text:  # no cashtag, and no entity that could unescape to "$"
        return []
    seen: dict[str, None] = {}
    for match in _CASHTAG.finditer(html.unescape(text)):
        seen.setdefault(match.group(1).upper(), None)
    return list(seen)
