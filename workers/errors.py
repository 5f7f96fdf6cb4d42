"""The one small exception tree: retry decisions are made by type."""


class FinsentryError(Exception):
    """Base of finsentry's own errors."""


class PermanentError(FinsentryError):
    """A bad record: retrying will not help; it goes to the dead-letter topic."""


class RetryableError(FinsentryError):
    """A failing dependency (database, broker, device, receiver): back off and try the batch again."""
