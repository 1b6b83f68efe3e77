"""Ledger use cases: adjust, reverse, read balances, entries and activity. Callers own the transaction."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from app.errors import DomainError
from app.ledger import queries as q
from app.ledger.schemas import ActivityPage, AdjustmentCreate, Balance, Entry, EntryWithBalance, ReverseCreate

_STATUS_ERRORS = {
    "member_not_found": "member_not_found",
    "entry_not_found": "entry_not_found",
    "entry_not_reversible": "entry_not_reversible",
    "already_reversed": "entry_already_reversed",
}


async def _entry_with_balance(conn: asyncpg.Connection, program_id: UUID, entry_id: int) -> EntryWithBalance:
    entry = await get_entry(conn, program_id, entry_id)
    assert entry.member_id is not None
    return EntryWithBalance(entry=entry, balance=await get_balance(conn, program_id, entry.member_id))


async def _raise_for_status(
    conn: asyncpg.Connection, program_id: UUID, status: str, member_ref: str | None
) -> None:
    if status == "ok":
        return
    if status == "insufficient_points":
        available = None
        if member_ref is not None:
            available = (await get_balance(conn, program_id, member_ref)).available
        raise DomainError("insufficient_points", "The member does not have enough available points.",
                          available=available)
    raise DomainError(_STATUS_ERRORS[status])


async def _policy_expiry(
    conn: asyncpg.Connection, program_id: UUID, timezone: str, occurred_at: datetime | None
) -> tuple[datetime | None, bool]:
    from app.expiry.service import current_policy, expiry_for

    at = occurred_at or datetime.now(UTC)
    _, version = await current_policy(conn, program_id, at)
    expiry = expiry_for(version.policy, at, None, ZoneInfo(timezone))
    return expiry.expires_at, expiry.on_inactivity


async def adjust(
    conn: asyncpg.Connection, program_id: UUID, data: AdjustmentCreate, timezone: str = "UTC"
) -> EntryWithBalance:
    """Credit or debit a member by hand. A debit never takes ``available`` below zero. Credited points
    expire at ``expires_at`` when given, else by the program's expiration policy."""
    expires_at, on_inactivity = data.expires_at, False
    if data.points > 0 and expires_at is None:
        expires_at, on_inactivity = await _policy_expiry(conn, program_id, timezone, data.occurred_at)
    try:
        row = await conn.fetchrow(
            q.ADJUST, program_id, data.member_id, data.points, data.occurred_at,
            data.external_ref, data.reason, data.metadata, expires_at, on_inactivity,
        )
    except asyncpg.UniqueViolationError as exc:
        raise DomainError("external_ref_conflict", f"external_ref {data.external_ref!r} already used.") from exc
    except asyncpg.NumericValueOutOfRangeError as exc:
        raise DomainError("points_out_of_range", "The resulting balance would be out of range.") from exc
    await _raise_for_status(conn, program_id, row["status"], data.member_id)
    return await _entry_with_balance(conn, program_id, row["entry_id"])


async def reverse(
    conn: asyncpg.Connection, program_id: UUID, entry_id: int, data: ReverseCreate
) -> EntryWithBalance:
    """Post the mirror image of an entry, at most once."""
    try:
        row = await conn.fetchrow(q.REVERSE, program_id, entry_id, data.reason, data.metadata)
    except asyncpg.UniqueViolationError as exc:
        raise DomainError("entry_already_reversed") from exc
    if row["status"] == "insufficient_points":
        original = await get_entry(conn, program_id, entry_id)
        await _raise_for_status(conn, program_id, row["status"], original.member_id)
    await _raise_for_status(conn, program_id, row["status"], None)
    return await _entry_with_balance(conn, program_id, row["entry_id"])


def balance_of(row: Mapping[str, Any]) -> Balance:
    """The balance in a row of ``ledger_balance`` or of a write function that answers it (other columns
    ignored)."""
    return Balance(**{field: row[field] for field in Balance.model_fields})


async def get_balance(conn: asyncpg.Connection | asyncpg.Pool, program_id: UUID, member_ref: str) -> Balance:
    row = await conn.fetchrow(q.BALANCE, program_id, member_ref)
    if row is None:
        raise DomainError("member_not_found")
    return balance_of(row)


async def get_entry(conn: asyncpg.Connection | asyncpg.Pool, program_id: UUID, entry_id: int) -> Entry:
    row = await conn.fetchrow(q.GET_ENTRY, program_id, entry_id)
    if row is None:
        raise DomainError("entry_not_found")
    return Entry(**dict(row))


async def activity(
    conn: asyncpg.Connection | asyncpg.Pool, program_id: UUID, member_ref: str, limit: int, cursor: str | None
) -> ActivityPage:
    before = decode_cursor(cursor) if cursor else None
    rows = await conn.fetch(q.ACTIVITY, program_id, member_ref, before, limit + 1)
    if not rows:
        raise DomainError("member_not_found")
    entries = [Entry(**{k: v for k, v in dict(r).items() if k != "member_pk"}) for r in rows if r["id"] is not None]
    next_cursor = None
    if len(entries) > limit:
        entries = entries[:limit]
        next_cursor = encode_cursor(entries[-1].id)
    return ActivityPage(data=entries, next_cursor=next_cursor)


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"e:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, _, value = raw.partition(":")
        if tag != "e":
            raise ValueError
        entry_id = int(value)
        if not 0 < entry_id < 2**63:
            raise ValueError
        return entry_id
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise DomainError("invalid_cursor") from None
