"""The one backoff helper, for every retry loop: the database in the worker, the model watcher's
connection, webhook deliveries."""

from __future__ import annotations

import random


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """The wait before retry number `attempt` (1, 2, ...): `base_s` doubled each time, at most `cap_s`,
    jittered to between half and all of it so that many clients do not retry in step."""
    wait = min(cap_s, base_s * 2 ** (attempt - 1))
    return wait * (0.5 + (rng or random).random() / 2)
