"""The database itself enforces the ledger's invariants: these tests try to break them and commit."""

from __future__ import annotations

import asyncpg
import pytest


async def _row_id(db, public_id: str) -> int:
    """The row id behind an entry's public id (the API's ids are opaque)."""
    return int(await db.fetchval("SELECT ledger.row_id('ent', $1)", public_id))


async def _entry_for(tenant, db, points: int = 100) -> int:
    await tenant.member("inv-1")
    r = await tenant.adjust("inv-1", points)
    assert r.status_code == 201, r.text
    return await _row_id(db, r.json()["entry"]["id"])


async def test_unbalanced_entry_is_refused_at_commit(tenant, db):
    member = await tenant.member("zs-1")
    assert member
    async with db.acquire() as conn:
        member_pk = await conn.fetchval(
            "SELECT id FROM members WHERE program_id = $1 AND external_id = 'zs-1'", tenant.program_id
        )
        with pytest.raises(asyncpg.CheckViolationError, match="not balanced"):
            async with conn.transaction():
                entry = await conn.fetchval(
                    "INSERT INTO entries (program_id, member_id, kind, occurred_at) "
                    "VALUES ($1, $2, 'adjust', now()) RETURNING id", tenant.program_id, member_pk,
                )
                await conn.execute(
                    "INSERT INTO postings (entry_id, program_id, member_id, account, points) VALUES "
                    "($1, $2, $3, 'available', 100), ($1, $2, $3, 'adjustments', -99)",
                    entry, tenant.program_id, member_pk,
                )
        # An entry with a single posting (or none) is refused too.
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await conn.fetchval(
                    "INSERT INTO entries (program_id, member_id, kind, occurred_at) "
                    "VALUES ($1, $2, 'adjust', now()) RETURNING id", tenant.program_id, member_pk,
                )
        assert await conn.fetchval("SELECT count(*) FROM entries WHERE member_id = $1", member_pk) == 0


async def test_posting_added_to_a_balanced_entry_is_refused(tenant, db):
    entry_id = await _entry_for(tenant, db)
    async with db.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO postings (entry_id, program_id, member_id, account, points) "
                    "SELECT $1, program_id, member_id, 'available', 5 FROM entries WHERE id = $1", entry_id,
                )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET description = 'tampered' WHERE id = $1",
        "DELETE FROM entries WHERE id = $1",
        "UPDATE postings SET points = points * 2 WHERE entry_id = $1",
        "DELETE FROM postings WHERE entry_id = $1",
        "UPDATE lot_allocations SET points = 1 WHERE entry_id = $1",
        "DELETE FROM lot_allocations WHERE entry_id = $1",
    ],
)
async def test_ledger_rows_cannot_be_updated_or_deleted(tenant, db, statement):
    entry_id = await _entry_for(tenant, db)
    # give the entry an allocation too, so the lot_allocations statements have a row to hit
    r = await tenant.adjust("inv-1", -40)
    debit_id = await _row_id(db, r.json()["entry"]["id"])
    target = debit_id if "lot_allocations" in statement else entry_id
    async with db.acquire() as conn:
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            async with conn.transaction():
                await conn.execute(statement, target)


@pytest.mark.parametrize("table", ["entries", "postings", "lot_allocations"])
async def test_ledger_tables_cannot_be_truncated(db, table):
    async with db.acquire() as conn:
        with pytest.raises(asyncpg.RestrictViolationError):
            async with conn.transaction():
                await conn.execute(f"TRUNCATE {table} CASCADE")


async def test_verify_catches_a_tampered_balance(tenant, db):
    await _entry_for(tenant, db)
    assert (await tenant.verify())["ok"] is True
    await db.execute(
        "UPDATE member_balances SET available = available + 1 WHERE member_id = "
        "(SELECT id FROM members WHERE program_id = $1 AND external_id = 'inv-1')", tenant.program_id,
    )
    report = await tenant.verify()
    assert report["ok"] is False
    checks = {d["check"] for d in report["discrepancies"]}
    assert "balance_mismatch" in checks
    mismatch = next(d for d in report["discrepancies"] if d["check"] == "balance_mismatch")
    assert mismatch["detail"]["member_id"] == "inv-1"
    assert mismatch["detail"]["available"] == mismatch["detail"]["expected_available"] + 1


async def test_verify_catches_a_tampered_lot(tenant, db):
    await _entry_for(tenant, db)
    await db.execute(
        "UPDATE lots SET remaining = remaining - 1 WHERE program_id = $1", tenant.program_id
    )
    report = await tenant.verify()
    checks = {d["check"] for d in report["discrepancies"]}
    assert {"lot_remaining_mismatch", "lots_do_not_cover_balance"} <= checks


async def test_verify_catches_a_row_in_another_program_than_its_member(tenant, other_tenant, db):
    """The ledger's tables have no foreign key to programs (no row locked by every write): verify checks that
    each row belongs to its member's program instead."""
    await _entry_for(tenant, db)
    await db.execute("UPDATE lots SET program_id = $2 WHERE program_id = $1", tenant.program_id,
                     other_tenant.program_id)
    report = await tenant.verify()
    mismatch = [d["detail"] for d in report["discrepancies"] if d["check"] == "program_mismatch"]
    assert mismatch and mismatch[0]["kind"] == "lot" and mismatch[0]["program_id"] == str(other_tenant.program_id)


async def test_verify_is_scoped_to_the_callers_program(tenant, other_tenant, db):
    await _entry_for(other_tenant, db)
    await db.execute(
        "UPDATE member_balances SET held = 7 WHERE program_id = $1", other_tenant.program_id
    )
    assert (await tenant.verify())["ok"] is True
    assert (await other_tenant.verify())["ok"] is False
