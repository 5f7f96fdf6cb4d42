"""Counterfactual augmentation (Kaushik et al., ICLR 2020): a polar sentence with one direction cue, the cue
swapped for its opposite, gets the opposite label ("profit rose" positive -> "profit fell" negative).

Only sentences with exactly one cue and no other sign of direction are flipped: with two ("rose despite weak
sales"), or a cue the pairs do not swap ("+2%", "slipped"), the new label is not known. The pairs are the train half of the suite's `direction_pairs` lexicon, so the test half never
reaches training data. Pure: examples in, examples out.
"""

from __future__ import annotations

import re

from models.behaviour import load_suite
from models.dataset import Example
from schemas.predictions import SENTIMENTS

_NEGATIVE, _POSITIVE = SENTIMENTS.index("negative"), SENTIMENTS.index("positive")
# Other signs of direction: a sentence with one of these is not flipped (the swap would contradict it).
_OTHER_DIRECTION = re.compile(
    r"[+-]\s?\d|\b(?:up|down|slip\w*|declin\w*|lift\w*|gain(?:ed|ing)?|loss|lost|los(?:e|es|ing)|drop|fall(?:en)?"
    r"|rall\w*|tumbl\w*|soar\w*|sank|sink\w*|plung\w*|jump|surge|climb|slump\w*|crash\w*|spik\w*|rebound\w*"
    r"|recover\w*|weak\w*|strength\w*|despite|but|although|though|while|however|not|no|never|n't)\b",
    re.IGNORECASE)


def direction_pairs(half: str = "train") -> dict[str, str]:
    """Each cue (lower case) to its opposite, both ways."""
    opposite: dict[str, str] = {}
    for pair in load_suite()["lexicons"]["direction_pairs"][half]:
        up, down = pair.split("|")
        opposite[up], opposite[down] = down, up
    return opposite


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[0].upper() + word[1:] if like[0].isupper() else word


def flip(text: str, opposite: dict[str, str], cues: re.Pattern[str]) -> str | None:
    """The text with its one cue swapped, or None when it has no cue or several."""
    found = list(cues.finditer(text))
    if len(found) != 1:
        return None
    match = found[0]
    if _OTHER_DIRECTION.search(text[: match.start()] + " " + text[match.end():]):
        return None
    return text[: match.start()] + _match_case(opposite[match.group(0).lower()], match.group(0)) + text[match.end():]


def counterfactuals(examples: list[Example]) -> list[Example]:
    """Flipped copies of the polar sentiment examples that have exactly one direction cue."""
    opposite = direction_pairs()
    cues = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, opposite), key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)
    out = []
    for ex in examples:
        if ex.task != "sentiment" or ex.label not in (_NEGATIVE, _POSITIVE):
            continue
        flipped = flip(ex.text, opposite, cues)
        if flipped is not None:
            out.append(Example(flipped, "sentiment", _POSITIVE if ex.label == _NEGATIVE else _NEGATIVE, ex.domain))
    return out
