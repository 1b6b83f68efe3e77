"""The SQL's one home (migrations/functions/): a migrated database holds exactly what its files define, every
status the SQL can answer is an error-catalogue code, the typed contracts match their SQL types, a database at
the head before ledger core v2 upgrades cleanly, and the SQL helpers agree with their Python twins."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel

from app.db import functions
from app.db.migrate import upgrade
from app.db.urls import asyncpg_dsn
from app.earning.context import EventContext, PurchaseContext, ReturnContext
from app.errors import CATALOG
from app.ledger.writes import INTERNAL_STATUSES
from app.money import MINOR_UNITS
from app.programs.schemas import ProgramSettings
from app.redemption.conversion import points_value

FIXTURES = Path(__file__).parent / "fixtures"

DEFINITIONS = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name, pg_get_functiondef(p.oid) AS def
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'ledger' AND p.proname <> 'id_secret'
"""
TRIGGERS = """
SELECT c.relname || '.' || t.tgname AS name, pg_get_triggerdef(t.oid) AS def
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
"""
TYPES = """
SELECT t.typname AS name, coalesce(string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                              ORDER BY a.attnum), '') ||
       coalesce((SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder) FROM pg_enum e
                  WHERE e.enumtypid = t.oid), '') AS def
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0
WHERE n.nspname = 'ledger' AND t.typtype IN ('c', 'e') GROUP BY t.oid, t.typname
"""


async def _objects(url: str) -> dict[str, dict[str, str]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return {kind: {r["name"]: r["def"] for r in await conn.fetch(sql)}
                for kind, sql in (("functions", DEFINITIONS), ("triggers", TRIGGERS), ("types", TYPES))}
    finally:
        await conn.close()


async def _from_files(url: str) -> None:
    """The reference: the tables of the metadata and the files, run as they are, without any migration."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.db.tables import metadata
    from app.db.urls import sqlalchemy_url

    engine = create_async_engine(sqlalchemy_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("CREATE SCHEMA ledger; INSERT INTO public_id_keys (secret) VALUES (42);"
                           + functions.secret_function(42))
        for path in functions.function_files():
            await conn.execute(path.read_text())
    finally:
        await conn.close()


def test_a_migrated_database_holds_exactly_the_files(database_url, fresh_database):
    reference = fresh_database("files")
    asyncio.run(_from_files(reference))
    migrated, expected = asyncio.run(_objects(database_url)), asyncio.run(_objects(reference))
    assert migrated["functions"] and migrated["triggers"] and migrated["types"]
    for kind in ("functions", "triggers", "types"):
        assert migrated[kind].keys() == expected[kind].keys(), kind
        drifted = [name for name in expected[kind] if migrated[kind][name] != expected[kind][name]]
        assert not drifted, f"{kind} differ from migrations/functions/: {drifted}"


def test_a_changed_file_is_applied_again_and_drift_is_caught(fresh_database, monkeypatch, tmp_path):
    """The repeatable step re-applies the files when their checksum changes; a function changed behind the files'
    back is caught by the comparison above."""
    url = fresh_database("repeat")
    upgrade(url)
    changed = tmp_path / "functions"
    changed.mkdir()
    for path in functions.function_files():
        (changed / path.name).write_text(path.read_text())
    (changed / "99_extra.sql").write_text("CREATE FUNCTION ledger.extra() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;")
    monkeypatch.setattr(functions, "FUNCTIONS_DIR", changed)
    upgrade(url)
    assert "extra()" in asyncio.run(_objects(url))["functions"]
    monkeypatch.undo()
    upgrade(url)
    assert "extra()" not in asyncio.run(_objects(url))["functions"]


def _sql_text() -> str:
    return "\n".join(p.read_text() for p in functions.function_files())


def test_every_status_the_sql_can_answer_is_a_catalogue_code():
    text = _sql_text()
    enum = re.search(r"CREATE TYPE ledger\.status AS ENUM \((.*?)\);", text, re.S)
    assert enum is not None
    labels = set(re.findall(r"'([a-z_]+)'", enum.group(1)))
    assert labels - INTERNAL_STATUSES <= set(CATALOG), labels - set(CATALOG)
    used = set(re.findall(r"refusal\('([a-z_]+)'", text))
    used |= set(re.findall(r"status := '([a-z_]+)'", text))
    used |= set(re.findall(r"RETURN '([a-z_]+)';", text))
    assert used and used <= labels, used - labels


async def test_the_typed_contexts_match_their_sql_types(db):
    for name, cls in (("purchase_context", PurchaseContext), ("return_context", ReturnContext),
                      ("event_context", EventContext)):
        columns = [r[0] for r in await db.fetch(
            "SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.typrelid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'ledger' AND t.typname = $1 AND a.attnum > 0 ORDER BY a.attnum", name)]
        assert columns == [f.name for f in fields(cls)], name


async def test_public_ids_round_trip_and_kinds_never_mix(db):
    rng = random.Random(7)
    ids = [1, 2, 3, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1] + [rng.randrange(1, 2**63) for _ in range(300)]
    rows = await db.fetch(
        "SELECT x, ledger.public_id('hold', x) AS public, ledger.row_id('hold', ledger.public_id('hold', x)) AS back,"
        " ledger.row_id('ent', 'ent_' || substr(ledger.public_id('hold', x), 6)) AS other"
        " FROM unnest($1::bigint[]) AS x", ids)
    assert all(r["back"] == r["x"] for r in rows)
    assert all(re.fullmatch(r"hold_[0-9a-f]{16}", r["public"]) for r in rows)
    assert len({r["public"] for r in rows}) == len(ids)
    assert sum(r["other"] == r["x"] for r in rows) == 0  # the same digits under another prefix are another id
    for bad in ("hold_", "hold_xyz", "HOLD_0000000000000001", "hold_00000000000000001", "1", ""):
        assert await db.fetchval("SELECT ledger.row_id('hold', $1)", bad) is None


async def test_money_and_timestamps_render_as_pydantic_does(db):
    rng = random.Random(11)
    for _ in range(200):
        currency = rng.choice(sorted(MINOR_UNITS))
        settings = ProgramSettings(points_per_currency_unit_redeemed=rng.choice([1, 3, 7, 100, 250, 1000]))
        points = rng.randrange(0, 10**12)
        sql = await db.fetchval("SELECT ledger.money($1, $2, $3)", points, settings.points_per_currency_unit_redeemed,
                                MINOR_UNITS[currency])
        assert sql == str(points_value(points, settings, currency)), (points, currency)

    class M(BaseModel):
        at: datetime
        amount: Decimal

    base = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    for delta in (timedelta(0), timedelta(microseconds=1), timedelta(microseconds=500_000), timedelta(days=400)):
        at = base + delta
        rendered = await db.fetchval("SELECT ledger.ts($1)", at)
        assert rendered == M(at=at, amount=Decimal(0)).model_dump(mode="json")["at"]


async def _load_fixture(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute((FIXTURES / "db_at_0009.sql").read_text())
        balances = {r["member_id"]: dict(r) for r in await conn.fetch(
            "SELECT member_id, available, pending, held, lifetime_earned, lifetime_redeemed "
            "FROM public.member_balances")}
        return {"balances": balances, "version": await conn.fetchval("SELECT version_num FROM public.alembic_version"),
                "old_functions": await conn.fetchval(
                    "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace")}
    finally:
        await conn.close()


async def _after(url: str) -> dict[str, Any]:
    from app.ledger.verify import verify

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        report = await verify(conn)
        balances = {r["member_id"]: dict(r) for r in await conn.fetch(
            "SELECT member_id, available, pending, held, lifetime_earned, lifetime_redeemed FROM member_balances")}
        public = await conn.fetchval("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace")
        replay = await conn.fetchval("SELECT response_body FROM idempotency_keys LIMIT 1")
        return {"report": report, "balances": balances, "public_functions": public, "replay": replay}
    finally:
        await conn.close()


@pytest.mark.slow
def test_a_database_at_the_previous_head_upgrades_cleanly(fresh_database):
    """tests/fixtures/db_at_0009.sql: pg_dump of a database the code of migration head 0009 built and used
    (adjustments, purchases with a return, a redemption with a refund, holds, an event, a reversal)."""
    url = fresh_database("upgrade")
    before = asyncio.run(_load_fixture(url))
    assert before["version"] == "0009" and before["old_functions"] > 20
    upgrade(url)
    after = asyncio.run(_after(url))
    assert after["report"].ok, after["report"].discrepancies
    assert after["public_functions"] == 0
    assert after["balances"] == before["balances"]
    assert after["replay"].startswith("{")  # stored answers survive, as text


async def test_minor_units_agree_with_python(db):
    rows = await db.fetch("SELECT c, ledger.minor_units(c) AS m FROM unnest($1::text[]) AS c", sorted(MINOR_UNITS))
    assert {r["c"]: r["m"] for r in rows} == MINOR_UNITS
