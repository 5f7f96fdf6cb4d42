"""Personal data in stored text: e-mail addresses and phone numbers in social posts are masked before
storage, and raw text is deleted after the retention period while the trends built from it stay.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# A run of digits with phone punctuation, not glued to a word, a currency sign or a decimal part.
_PHONE_CANDIDATE = re.compile(r"(?<![\w$€£¥.,/])(?:\+|00)?\(?\d[\d\s().-]{6,}\d(?![\w%$€£¥]|[.,]\d)")
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
    return _PHONE_CANDIDATE.sub(_phone, EMAIL.sub("[email]", raw))


def apply_retention(engine: Engine, days: int, batch: int = 10_000) -> int:
    """Delete the text, link and author of messages published more than `days` ago; return how many.

    Runs in batches so that no transaction holds many rows; classifications and trends are kept.
    """
    total = 0
    while True:
        with engine.begin() as conn:
            done = conn.execute(text("""
                UPDATE classified_messages SET text = NULL, url = NULL, author = NULL
                WHERE message_key IN (
                    SELECT message_key FROM classified_messages
                    WHERE published_at < now() - make_interval(days => :days) AND text IS NOT NULL
                    LIMIT :batch FOR UPDATE SKIP LOCKED)"""), {"days": days, "batch": batch}).rowcount
        total += done
        if done < batch:
            return total
