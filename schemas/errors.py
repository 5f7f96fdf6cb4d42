"""The one small exception tree; retry decisions are made by type, and `finsentry`'s main() catches
FinsentryError once, printing the message and exiting with the error's `exit_code`.

A bad record is not an exception here: stages return it as a `DeadLetter` value (schemas.messages).
It sits in `schemas`, the lowest layer but `config`, so every layer can raise from it.
"""


class FinsentryError(Exception):
    """Base of finsentry's own errors."""

    exit_code = 2


class RetryableError(FinsentryError):
    """A failing dependency (database, broker, device, receiver): back off and try the batch again."""


class UsageError(FinsentryError, ValueError):
    """Input from the person at the command line (a file, an option) that cannot be used as it is."""
