"""Migrations: upgrade from empty works, downgrade/upgrade round-trips, and the SQLAlchemy metadata and
the migrations describe the same schema (no drift)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrate import head_revision, upgrade
from app.db.tables import metadata
from app.db.urls import asyncpg_dsn, sqlalchemy_url


async def _diff(url: str) -> list[Any]:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()


async def _tables_and_functions(url: str) -> tuple[set[str], set[str]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = {r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        functions = {f"{r[0]}.{r[1]}" for r in await conn.fetch(
            "SELECT n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname IN ('public', 'ledger')")}
        return tables, functions
    finally:
        await conn.close()


async def _version(url: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


# Synchronous tests: alembic drives its own event loop.
def test_upgrade_from_empty_and_no_drift(fresh_database):
    url = fresh_database("schema")
    assert asyncio.run(_tables_and_functions(url)) == (set(), set())
    upgrade(url)
    tables, functions = asyncio.run(_tables_and_functions(url))
    assert set(metadata.tables) | {"alembic_version"} == tables
    # every function lives in the schema `ledger` (migrations/functions/), none in public
    assert {"ledger.post", "ledger.adjust", "ledger.reverse", "ledger.consume_lots"} <= functions
    assert not {f for f in functions if f.startswith("public.")}
    assert asyncio.run(_diff(url)) == []
    assert asyncio.run(_version(url)) == head_revision()


def test_downgrade_to_base_and_upgrade_again(fresh_database):
    url = fresh_database("roundtrip")
    upgrade(url)
    from alembic import command

    from app.db.migrate import alembic_config

    command.downgrade(alembic_config(url), "base")
    tables, functions = asyncio.run(_tables_and_functions(url))
    assert tables == {"alembic_version"} and functions == set()
    upgrade(url)
    assert asyncio.run(_diff(url)) == []


def test_migration_files_are_named_by_date_and_slug():
    from pathlib import Path

    names = [p.name for p in (Path(__file__).parents[1] / "migrations" / "versions").glob("*.py")]
    assert names and all(n[:8].isdigit() and "_" in n for n in names), names
