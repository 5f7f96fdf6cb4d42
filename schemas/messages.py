"""Inbound messages (strict pydantic) and the values the pipeline passes between stages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

Kind = Literal["news", "social"]

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, str_strip_whitespace=True)


# A character for which str.isalnum() is true: the regex engine's word characters less the underscore.
_ALNUM = re.compile(r"[^\W_]")


def _readable(value: str) -> str:
    """Text to classify must hold a letter or digit: not only zero-width, control or punctuation characters."""
    if not _ALNUM.search(value):
        raise ValueError("has no letter or digit")
    return value


Readable = Annotated[str, AfterValidator(_readable)]


class _Inbound(BaseModel):
    model_config = _STRICT

    @model_validator(mode="after")
    def _no_nul(self) -> "_Inbound":
        """Postgres text cannot hold NUL; no real headline or post contains one."""
        for name, value in self.__dict__.items():  # the fields; plain dict iteration, not the model's __iter__
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{name} contains a NUL character")
        return self


class NewsArticle(_Inbound):
    """A news article or headline from a wire or publisher feed."""

    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=128)
    published_at: AwareDatetime
    title: Readable = Field(min_length=1, max_length=2_000)
    body: str = Field(default="", max_length=200_000)
    url: str | None = Field(default=None, max_length=2_048)
    author: str | None = Field(default=None, max_length=256)
    language: str = Field(default="en", min_length=2, max_length=16)

    @property
    def text(self) -> str:
        """What the classifier reads: the headline, then the start of the body."""
        return f"{self.title}. {self.body}" if self.body else self.title


class SocialPost(_Inbound):
    """A post from a social network (tweet, forum post)."""

    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=128)
    published_at: AwareDatetime
    text: Readable = Field(min_length=1, max_length=20_000)
    url: str | None = Field(default=None, max_length=2_048)
    author: str | None = Field(default=None, max_length=256)
    language: str = Field(default="en", min_length=2, max_length=16)


Inbound = NewsArticle | SocialPost


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One Kafka record as the pipeline sees it: bytes plus where it came from."""

    kind: Kind
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """A record that passed validation."""

    raw: RawMessage
    message: Inbound

    @property
    def key(self) -> str:
        """Idempotency key: the same (source, id) is one message, however often it is replayed."""
        return f"{self.message.source}:{self.message.id}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be processed, with the stage and reason; it goes to the dead-letter topic."""

    stage: str
    reason: str
    raw: RawMessage
