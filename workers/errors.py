"""The one small exception tree: retry decisions are made by type.

A bad record is not an exception here: stages return it as a `DeadLetter` value (schemas.messages).
"""


class FinsentryError(Exception):
    """Base of finsentry's own errors."""


class RetryableError(FinsentryError):
    """A failing dependency (database, broker, device, receiver): back off and try the batch again."""
