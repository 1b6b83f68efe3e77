"""Seeding: N members with a history, fast, through the ledger's own SQL functions.

Every credit goes through ``ledger.adjust`` and every debit through ``ledger.redeem`` (without an
Idempotency-Key: ``p_key => NULL``), called
set-based (one statement per chunk of members, ``generate_series`` x ``LATERAL`` function call), on as many
connections as there are cores. So the seeded data obeys every rule the service obeys (zero-sum entries,
lots, allocations, balances) and ``points-ledger verify`` passes on it; the functions are called with
named arguments so that parameters added later with defaults do not break the seed.

History per member ``m0000001``..: three credits (lots expiring in 20-220 days, in 200-500 days, never),
posted 300, 150 and 30 days ago; every fourth member also redeemed 1,000 points (so lots are
partly consumed and allocations exist). Balances are ~1M points so that the Zipf-hot members never run dry
during a run (a refusal would be a 422 in the error counts, not a measure of speed). The hot member
``hot-0000001`` gets 10^11 points.

The raw ceiling app has its own two tables in schema ``bench_raw`` (``accounts`` with one row per member,
``events`` with only its primary key, like pgbench's history table).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import asyncpg

from app.db.urls import asyncpg_dsn
from bench.members import HOT_MEMBER

MEMBERS = """
WITH m AS (
    INSERT INTO members (program_id, external_id, name, email, created_at, updated_at)
    SELECT $1, 'm' || lpad(g.i::text, 7, '0'), 'Member ' || g.i, 'm' || g.i || '@example.com',
           now() - interval '400 days', now() - interval '400 days'
    FROM generate_series($2::int, $3::int) AS g(i)
    RETURNING id, program_id
)
INSERT INTO member_balances (member_id, program_id) SELECT id, program_id FROM m
"""

CREDITS = """
SELECT count(*) FILTER (WHERE r.status = 'ok') AS ok, count(*) AS total
FROM generate_series($2::int, $3::int) AS g(i)
CROSS JOIN LATERAL (VALUES (1), (2), (3)) AS c(k)
CROSS JOIN LATERAL ledger.adjust(
    p_program => $1::uuid, p_key => NULL::text, p_fingerprint => NULL::bytea,
    p_member_ref => 'm' || lpad(g.i::text, 7, '0'),
    p_points => (CASE c.k WHEN 1 THEN 200000 + g.i % 1000 WHEN 2 THEN 300000 ELSE 500000 END)::bigint,
    p_occurred_at => now() - make_interval(days => CASE c.k WHEN 1 THEN 300 + g.i % 60 WHEN 2 THEN 150
                                                                ELSE 30 END),
    p_external_ref => NULL::text,
    p_reason => 'seed credit',
    p_metadata => jsonb_build_object('seed', true),
    p_expires_at => CASE c.k WHEN 1 THEN now() + make_interval(days => 20 + g.i % 200)
                             WHEN 2 THEN now() + make_interval(days => 200 + g.i % 300)
                             ELSE NULL::timestamptz END,
    p_expires_on_inactivity => false
) AS r
"""

DEBITS = """
SELECT count(*) FILTER (WHERE r.status = 'ok') AS ok, count(*) AS total
FROM generate_series($2::int, $3::int) AS g(i)
CROSS JOIN LATERAL ledger.redeem(
    p_program => $1::uuid, p_key => NULL::text, p_fingerprint => NULL::bytea,
    p_member_ref => 'm' || lpad(g.i::text, 7, '0'),
    p_points => 1000::bigint,
    p_kind => 'redeem',
    p_reference => 'seed-order-' || g.i,
    p_description => 'seed redemption',
    p_metadata => jsonb_build_object('seed', true),
    p_hold_expires_at => NULL::timestamptz,
    p_points_per_unit => 100, p_minor_units => 2, p_currency => 'EUR'
) AS r
WHERE g.i % 4 = 0
"""

HOT = """
WITH m AS (
    INSERT INTO members (program_id, external_id, name) VALUES ($1, $2, 'Hot member') RETURNING id, program_id
)
INSERT INTO member_balances (member_id, program_id) SELECT id, program_id FROM m
"""

HOT_CREDIT = """
SELECT status FROM ledger.adjust(p_program => $1::uuid, p_key => NULL::text, p_fingerprint => NULL::bytea,
    p_member_ref => $2, p_points => 100000000000::bigint, p_occurred_at => NULL::timestamptz,
    p_external_ref => NULL::text, p_reason => 'seed credit', p_metadata => '{}'::jsonb,
    p_expires_at => NULL::timestamptz, p_expires_on_inactivity => false)
"""

RAW_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS bench_raw;
CREATE TABLE bench_raw.accounts (
    id bigint PRIMARY KEY,
    balance bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bench_raw.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL,
    amount bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

RAW_ROWS = "INSERT INTO bench_raw.accounts (id, balance) SELECT i, 1000000 FROM generate_series(1, $1::int) AS i"

EXPIRED_HOLDS = """
SELECT count(*) FILTER (WHERE r.status = 'ok') AS ok
FROM generate_series(1, $2::int) AS g(i)
CROSS JOIN LATERAL ledger.redeem(
    p_program => $1::uuid, p_key => NULL::text, p_fingerprint => NULL::bytea,
    p_member_ref => 'm' || lpad(((g.i - 1) % $3::int + 1)::text, 7, '0'),
    p_points => 10::bigint,
    p_kind => 'hold',
    p_reference => 'bench-expired-hold-' || g.i,
    p_description => 'bench: expired hold',
    p_metadata => '{}'::jsonb,
    p_hold_expires_at => now() - interval '1 hour',
    p_points_per_unit => 100, p_minor_units => 2, p_currency => 'EUR'
) AS r
"""


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size - 1, n)) for lo in range(1, n + 1, size)]


async def seed(url: str, program_id: UUID, members: int, *, parallel: int = 2, chunk: int = 5000) -> dict[str, Any]:
    """Seed ``members`` members (plus the hot member) and the raw tables; return counts and timings."""
    dsn = asyncpg_dsn(url)
    started = time.perf_counter()
    chunks = _chunks(members, min(chunk, max(members // parallel, 1)))
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    totals = {"credits": 0, "debits": 0}

    async def worker() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET synchronous_commit = on")
            while not queue.empty():
                lo, hi = queue.get_nowait()
                async with conn.transaction():
                    await conn.execute(MEMBERS, program_id, lo, hi)
                    credits = await conn.fetchrow(CREDITS, program_id, lo, hi)
                    debits = await conn.fetchrow(DEBITS, program_id, lo, hi)
                if credits["ok"] != credits["total"] or debits["ok"] != debits["total"]:
                    raise RuntimeError(f"seed refused: credits {dict(credits)}, debits {dict(debits)}")
                totals["credits"] += credits["ok"]
                totals["debits"] += debits["ok"]
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, min(parallel, len(chunks))))))
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(HOT, program_id, HOT_MEMBER)
            assert await conn.fetchval(HOT_CREDIT, program_id, HOT_MEMBER) == "ok"
        ledger_s = time.perf_counter() - started
        t = time.perf_counter()
        await conn.execute(RAW_SCHEMA)
        await conn.execute(RAW_ROWS, members)
        raw_s = time.perf_counter() - t
        t = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        vacuum_s = time.perf_counter() - t
        counts = dict(await conn.fetchrow(
            "SELECT (SELECT count(*) FROM members) AS members, (SELECT count(*) FROM entries) AS entries, "
            "(SELECT count(*) FROM postings) AS postings, (SELECT count(*) FROM lots) AS lots, "
            "(SELECT count(*) FROM lot_allocations) AS lot_allocations"))
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    return {
        "members": members + 1,
        "credits": totals["credits"] + 1,
        "debits": totals["debits"],
        "rows": counts,
        "ledger_seconds": round(ledger_s, 3),
        "entries_per_second": round(counts["entries"] / ledger_s, 1) if ledger_s else None,
        "members_per_second": round((members + 1) / ledger_s, 1) if ledger_s else None,
        "raw_tables_seconds": round(raw_s, 3),
        "vacuum_analyze_seconds": round(vacuum_s, 3),
        "database_bytes": size,
        "parallel_connections": parallel,
    }


async def expired_holds(url: str, program_id: UUID, count: int, members: int) -> int:
    """Create ``count`` open holds that expired an hour ago (for the hold release job)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await conn.fetchval(EXPIRED_HOLDS, program_id, count, members))
    finally:
        await conn.close()
