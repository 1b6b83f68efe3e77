"""Alembic environment: async engine over asyncpg, metadata from app.db.tables."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import get_settings
from app.db import functions
from app.db.bootstrap import resolve_database_url
from app.db.migrate import MIGRATE_LOCK_ID, check_server_version
from app.db.tables import metadata
from app.db.urls import sqlalchemy_url

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("database_url") or resolve_database_url(get_settings())
    return sqlalchemy_url(url)


def _at_head(connection: Connection) -> bool:
    current = set(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    return current == set(context.script.get_heads())


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():  # (a statement before this would open the transaction alembic commits)
        check_server_version(int(connection.execute(text("SHOW server_version_num")).scalar_one()))
        # Replicas starting together all run `migrate`: the first takes this lock and migrates, the others
        # wait here, then read the version table (after the lock, so they see the first one's commit) and
        # find nothing to do. Transaction-scoped: released by the commit, or by the rollback of a failure.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATE_LOCK_ID})
        config.attributes["revision_before"] = context.get_context().get_current_revision()
        context.run_migrations()
        # The repeatable step: the SQL functions of migrations/functions/, in the same transaction, once the
        # schema is at head (they are written for the head schema).
        if _at_head(connection):
            functions.apply(connection)


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async(_url()))
