"""Database engine and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import PoolProxiedConnection

from schemas.errors import FinsentryError

ROOT = Path(__file__).resolve().parents[2]  # the project folder: alembic.ini, migrations


def sqlalchemy_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+psycopg:// and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, pool_size=4, max_overflow=4)


def driver(held: PoolProxiedConnection) -> psycopg.Connection[Any]:
    """The psycopg connection inside a pooled one (COPY and one-round-trip statements need it)."""
    raw = held.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


@contextmanager
def pooled(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection of the engine's pool for one piece of work; dropped if the work fails."""
    held = engine.raw_connection()
    try:
        yield driver(held)
    except BaseException:
        held.invalidate()
        raise
    finally:
        held.close()


def migrate(url: str) -> None:
    """Apply every Alembic revision up to head."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = sqlalchemy_url(url)
    command.upgrade(config, "head")


class SchemaError(FinsentryError):
    """The database is not at the migrations' head (a user's database is never migrated implicitly)."""


def prepare(url: str, embedded: bool) -> None:
    """Migrate the embedded database (ours); check that a user's database is already at head."""
    if embedded:
        migrate(url)
        return
    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    if current != head:
        raise SchemaError(f"the database is at migration {current or 'none'}, this version needs {head}: "
                          "run `finsentry migrate` first")
