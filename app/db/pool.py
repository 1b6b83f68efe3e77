"""The asyncpg pool used by every request. JSON/JSONB are decoded to Python objects once, here."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from app.db.urls import asyncpg_dsn
from app.ledger.writes import RawJSON


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=_encode_json, decoder=json.loads, schema="pg_catalog", format="text"
        )


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg ships no type for it
    """A connection of the request pool. asyncpg resets a connection when the pool takes it back: an open
    transaction is rolled back, then one more round trip (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL``) clears session state. This service never leaves such state on a pooled connection: its
    advisory locks are transaction-scoped, its settings ``SET LOCAL``, it opens no cursors, and it LISTENs
    and holds the scheduler's session lock on connections of their own. So that round trip, a fifth of a
    balance read's database work, is skipped; the rollback still happens."""

    def get_reset_query(self) -> str:
        return ""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _encode_json(value: Any) -> str:
    """JSON text already serialised (``RawJSON``, e.g. an award pydantic rendered) goes as is; anything else is
    serialised here."""
    return value if isinstance(value, RawJSON) else _dumps(value)


async def create_pool(
    database_url: str, *, min_size: int = 2, max_size: int = 10, statement_timeout_ms: int = 5000,
    lock_timeout_ms: int = 3000,
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        connection_class=PooledConnection,
        timeout=5,  # connecting to a database that is down fails fast (503) instead of hanging
        command_timeout=max(statement_timeout_ms / 1000 * 2, 5),
        server_settings={
            "statement_timeout": str(statement_timeout_ms),
            # Bounds every lock wait: a duplicate request waiting for its in-flight original, and a
            # request queued behind a busy member. Past it: 409 request_in_progress / member_busy.
            "lock_timeout": str(lock_timeout_ms),
            "application_name": "points-ledger",
            "timezone": "UTC",
        },
    )
    assert pool is not None
    return pool
