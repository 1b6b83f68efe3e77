"""Member use cases."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from app.db.access import Db
from app.earning.erasure import erase_personal_rules
from app.errors import DomainError
from app.ledger.writes import Answer, Write
from app.members import queries as q
from app.members.schemas import Member, MemberMergeCreate, MemberUpsert


async def upsert(
    conn: asyncpg.Connection, program_id: UUID, member_ref: str, data: MemberUpsert
) -> tuple[Member, bool]:
    """Create or update; returns the member and whether it was created."""
    fields = tuple(f for f in q.UPSERTABLE if f in data.model_fields_set)
    values = [getattr(data, f) for f in fields]
    row = await conn.fetchrow(q.upsert(fields), program_id, member_ref, *values)
    if row is None:  # issue-15: merged into another member, whose alias it is now: the survivor is updated
        survivor = await conn.fetchval(q.SURVIVOR_REF, program_id, member_ref)
        row = await conn.fetchrow(q.upsert(fields), program_id, survivor, *values)
    member = Member(**{k: v for k, v in dict(row).items() if k in Member.model_fields})
    return member, bool(row["created"])


async def get(conn: asyncpg.Connection | asyncpg.Pool, program_id: UUID, member_ref: str) -> Member:
    row = await conn.fetchrow(q.GET, program_id, member_ref)
    if row is None:
        raise DomainError("member_not_found")
    return Member(**dict(row))


async def erase_personal_data(conn: asyncpg.Connection, program_id: UUID, member_ref: str) -> Member:
    """Right to erasure: name, email, phone, birthday and attributes are removed; the member id, its
    balances and its ledger history stay (they are the program's records and hold no personal data). The stored
    explanations of its purchases lose what reveals the birthday (issue 12 F8, ``app.earning.erasure``)."""
    row = await conn.fetchrow(q.ERASE, program_id, member_ref)
    if row is None:
        raise DomainError("member_not_found")
    await erase_personal_rules(conn, program_id, row["id"], member_ref)
    await conn.execute(q.ERASED, row["id"])
    return Member(**{k: v for k, v in dict(row).items() if k in Member.model_fields})


async def merge(db: Db, program_id: UUID, member_ref: str, data: MemberMergeCreate, key: str | None,
                fingerprint: bytes) -> Answer:
    """Merge ``data.from_member`` into ``member_ref`` (migrations/functions/88_merges.sql): its points and open lots
    move with their expiry, the higher tier stays, and its id becomes an alias of the survivor."""
    return await db.writer.execute(Write("merge", {
        "p_program": program_id, "p_key": key, "p_fingerprint": fingerprint, "p_member_ref": member_ref,
        "p_from_ref": data.from_member,
    }))
