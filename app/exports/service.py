"""Exports of a program's books, streamed in constant memory: balances as of an instant (CSV), the ledger's entries
with their postings (JSONL), members (CSV, personal data as it is now: erased members' is gone).

Each export is ONE read-only repeatable-read transaction (a consistent snapshot however long it runs) read through a
server-side cursor, ``FETCH_ROWS`` rows at a time, each batch rendered and handed on before the next is fetched:
the HTTP route streams them (StreamingResponse), the command writes them to a file. Memory is one batch.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

FETCH_ROWS = 2000

BALANCE_COLUMNS = ("member_id", "available", "pending", "held", "expired", "lifetime_earned", "lifetime_redeemed",
                   "tier")
MEMBER_COLUMNS = ("member_id", "status", "name", "email", "phone", "birthday", "attributes", "tier", "created_at",
                  "updated_at")

# Every member enrolled by then, in the one member order of the service; its balances as recorded by then
# (migrations/functions/89_as_of.sql).
BALANCES = """
SELECT m.external_id AS member_id, b.available, b.pending, b.held, b.expired, b.lifetime_earned, b.lifetime_redeemed,
       ledger.tier_as_of(m.id, $2) AS tier
FROM members m CROSS JOIN LATERAL ledger.balance_as_of(m.id, $2) b
WHERE m.program_id = $1 AND m.created_at <= $2
ORDER BY m.external_id COLLATE "C"
"""

# The program's entries in recorded time (ix_entries_program_id_recorded_at), each with its postings, as the API
# shows an entry (ledger.entry_json).
ENTRIES = """
SELECT j::text FROM entries e CROSS JOIN LATERAL ledger.entry_json(e.id) j
WHERE e.program_id = $1 AND ($2::timestamptz IS NULL OR e.recorded_at > $2) AND e.recorded_at <= $3
ORDER BY e.recorded_at, e.id
"""

# Members as they are now: an erased member's personal data is NULL in the row itself (DELETE
# /v1/members/{id}/personal-data), so it cannot reach an export.
MEMBERS = """
SELECT m.external_id AS member_id, m.status, m.name, m.email, m.phone, m.birthday, m.attributes::text AS attributes,
       t.tier, m.created_at, m.updated_at
FROM members m LEFT JOIN member_tiers t ON t.member_id = m.id
WHERE m.program_id = $1
ORDER BY m.external_id COLLATE "C"
"""


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return buffer.getvalue()


async def _batches(pool: asyncpg.Pool, query: str, *args: Any) -> AsyncIterator[list[asyncpg.Record]]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SET LOCAL TIME ZONE 'UTC'")
        cursor = await conn.cursor(query, *args)
        while batch := await cursor.fetch(FETCH_ROWS):
            yield batch


async def balances_csv(pool: asyncpg.Pool, program_id: UUID, as_of: datetime) -> AsyncIterator[str]:
    """member_id, available, pending, held, expired, lifetime_earned, lifetime_redeemed, tier: each member enrolled
    by ``as_of``, as recorded by then."""
    yield _csv([BALANCE_COLUMNS])
    async for batch in _batches(pool, BALANCES, program_id, as_of):
        yield _csv([tuple(r) for r in batch])


async def entries_jsonl(pool: asyncpg.Pool, program_id: UUID, since: datetime | None,
                        until: datetime) -> AsyncIterator[str]:
    """One entry per line, with its postings, recorded after ``since`` (exclusive) and by ``until``, oldest first."""
    async for batch in _batches(pool, ENTRIES, program_id, since, until):
        yield "".join(r[0] + "\n" for r in batch)


async def members_csv(pool: asyncpg.Pool, program_id: UUID) -> AsyncIterator[str]:
    """The program's members with their profile as it is now (erased: empty), status and tier."""
    yield _csv([MEMBER_COLUMNS])
    async for batch in _batches(pool, MEMBERS, program_id):
        yield _csv([tuple(r) for r in batch])


