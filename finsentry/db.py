"""Database engine and migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine

ROOT = Path(__file__).resolve().parent.parent


def sqlalchemy_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+psycopg:// and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, pool_size=4, max_overflow=4)


def migrate(url: str) -> None:
    """Apply every Alembic revision up to head."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = sqlalchemy_url(url)
    command.upgrade(config, "head")
