"""Inbound messages (strict pydantic) and the values the pipeline passes between stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.predictions import Prediction

Kind = Literal["news", "social"]

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, str_strip_whitespace=True)


class NewsArticle(BaseModel):
    """A news article or headline from a wire or publisher feed."""

    model_config = _STRICT

    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=128)
    published_at: AwareDatetime
    title: str = Field(min_length=1, max_length=2_000)
    body: str = Field(default="", max_length=200_000)
    url: str | None = Field(default=None, max_length=2_048)
    author: str | None = Field(default=None, max_length=256)
    language: str = Field(default="en", min_length=2, max_length=16)

    @property
    def text(self) -> str:
        """What the classifier reads: the headline, then the start of the body."""
        return f"{self.title}. {self.body}" if self.body else self.title


class SocialPost(BaseModel):
    """A post from a social network (tweet, forum post)."""

    model_config = _STRICT

    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=128)
    published_at: AwareDatetime
    text: str = Field(min_length=1, max_length=20_000)
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
class Classified:
    accepted: Accepted
    prediction: Prediction


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be processed, with the stage and reason; it goes to the dead-letter topic."""

    stage: str
    reason: str
    raw: RawMessage
