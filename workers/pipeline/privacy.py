"""Personal data in stored text: e-mail addresses and phone numbers in social posts are masked before
storage (the retention of stored text is `workers.lifecycle.retention`).
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# A run of digits with phone punctuation, not glued to a word, a currency sign or a decimal part.
_PHONE_CANDIDATE = re.compile(r"(?<![\w$€£¥.,/])(?:\+|00)?\(?\d[\d\s().-]{6,}\d(?![\w%$€£¥]|[.,]\d)")
# Every phone candidate contains a match of this (it has no look-arounds, so it scans fast).
_DIGIT_RUN = re.compile(r"\d[\d\s().-]{6,}\d")
_DIGIT = re.compile(r"\d")


def _phone(match: re.Match[str]) -> str:
    candidate = match.group(0)
    digits = len(_DIGIT.findall(candidate))
    separated = candidate.startswith(("+", "00", "(")) or bool(re.search(r"\d[\s().-]+\d", candidate))
    if 9 <= digits <= 15 and separated and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", candidate.strip()):
        return "[phone]"
    return candidate


def mask_pii(raw: str) -> str:
    """Replace e-mail addresses with [email] and phone numbers with [phone]; other text is untouched."""
    masked = EMAIL.sub("[email]", raw) if "@" in raw else raw
    return _PHONE_CANDIDATE.sub(_phone, masked) if _DIGIT_RUN.search(masked) else masked
