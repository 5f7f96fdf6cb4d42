"""Alembic environment: the URL comes from settings (or from `finsentry migrate`), metadata from schemas."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from config.settings import get_settings
from schemas.tables import metadata, partition_day
from workers.services.db import sqlalchemy_url

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    configured = get_settings().database_url
    if configured is None:
        raise SystemExit("DATABASE_URL is not set: run `finsentry migrate`, which starts the embedded Postgres")
    return sqlalchemy_url(configured.get_secret_value())


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Day partitions are made and dropped at run time (workers.lifecycle.partitions), not by migrations."""
    return not (type_ == "table" and name is not None and partition_day(name) is not None)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url())
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
