"""Ledger use cases: adjust, reverse, read balances, entries and activity."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from app.db.access import Db
from app.errors import DomainError
from app.ledger import queries as q
from app.ledger.schemas import AdjustmentCreate, Balance, ReverseCreate
from app.ledger.writes import Answer, Write
from app.programs.context import Principal

ENTRY_ID = re.compile(r"^ent_[0-9a-f]{16}$")


async def _policy_expiry(db: Db, p: Principal, occurred_at: datetime | None) -> tuple[datetime | None, bool]:
    from app.expiry.service import current_policy, expiry_for

    at = occurred_at or datetime.now(UTC)
    _, version = await current_policy(db.pool, p.program_id, at, db.versions)
    expiry = expiry_for(version.policy, at, None, ZoneInfo(p.timezone))
    return expiry.expires_at, expiry.on_inactivity


async def adjust(db: Db, p: Principal, data: AdjustmentCreate, key: str | None, fingerprint: bytes) -> Answer:
    """Credit or debit a member by hand. A debit never takes ``available`` below zero. Credited points expire at
    ``expires_at`` when given, else by the program's expiration policy."""
    expires_at, on_inactivity = data.expires_at, False
    if data.points > 0 and expires_at is None:
        expires_at, on_inactivity = await _policy_expiry(db, p, data.occurred_at)
    try:
        return await db.writer.execute(Write("adjust", {
            "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_member_ref": data.member_id,
            "p_points": data.points, "p_occurred_at": data.occurred_at, "p_external_ref": data.external_ref,
            "p_reason": data.reason, "p_metadata": data.metadata, "p_expires_at": expires_at,
            "p_expires_on_inactivity": on_inactivity,
        }))
    except asyncpg.NumericValueOutOfRangeError as exc:
        raise DomainError("points_out_of_range", "The resulting balance would be out of range.") from exc


async def reverse(db: Db, p: Principal, entry_id: str, data: ReverseCreate, key: str | None,
                  fingerprint: bytes) -> Answer:
    """Post the mirror image of an entry, at most once."""
    return await db.writer.execute(Write("reverse", {
        "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_entry_id": entry_id,
        "p_reason": data.reason, "p_metadata": data.metadata,
    }))


async def balance_json(pool: asyncpg.Pool | asyncpg.Connection, program_id: UUID, member_ref: str) -> str:
    """The balance as the API answers it, rendered by Postgres."""
    body: str | None = await pool.fetchval(q.BALANCE_JSON, program_id, member_ref)
    if body is None:
        raise DomainError("member_not_found")
    return body


async def get_balance(pool: asyncpg.Pool | asyncpg.Connection, program_id: UUID, member_ref: str) -> Balance:
    row = await pool.fetchrow(q.BALANCE, program_id, member_ref)
    if row is None:
        raise DomainError("member_not_found")
    return Balance(**dict(row))


async def entry_json(pool: asyncpg.Pool, program_id: UUID, entry_id: str) -> str:
    body: str | None = await pool.fetchval(q.ENTRY_JSON, program_id, entry_id)
    if body is None:
        raise DomainError("entry_not_found")
    return body


async def balance_as_of_json(pool: asyncpg.Pool | asyncpg.Connection, program_id: UUID, member_ref: str,
                             as_of: datetime) -> str:
    """The member's balances as recorded by ``as_of`` (README "Balances as of an instant")."""
    body: str | None = await pool.fetchval(q.BALANCE_AS_OF_JSON, program_id, member_ref, as_of)
    if body is None:
        raise DomainError("member_not_found")
    return body


async def liability_json(pool: asyncpg.Pool | asyncpg.Connection, program_id: UUID, as_of: datetime) -> str:
    """The programme's outstanding points as recorded by ``as_of``."""
    body: str = await pool.fetchval(q.LIABILITY_JSON, program_id, as_of)
    return body


async def activity_json(pool: asyncpg.Pool, program_id: UUID, member_ref: str, limit: int,
                        cursor: str | None, until: datetime | None = None) -> str:
    """Newest first; ``cursor``: the ``next_cursor`` of the previous page (an entry's id); ``until``: only entries
    recorded at or before it."""
    if cursor is not None and not ENTRY_ID.match(cursor):
        raise DomainError("invalid_cursor")
    body: str | None = await pool.fetchval(q.ACTIVITY_JSON, program_id, member_ref, cursor, limit, until)
    if body is None:
        raise DomainError("member_not_found")
    return body
