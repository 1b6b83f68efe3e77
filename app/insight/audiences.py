"""Audiences: named, saved filters over RFM segment, lifecycle stage, tier, balance and the member's own attributes
(city, gender, ... as the merchant sends them) and age band from the birthday. Listed, paged and exported like
segments. Segment and stage criteria read the last refresh; tier, balance, attributes and age are live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.errors import DomainError
from app.insight import queries as q
from app.insight.schemas import (
    Audience,
    AudienceCreate,
    AudienceFilter,
    AudienceMember,
    AudienceMemberPage,
    AudienceWithSize,
)
from app.insight.service import stream_members
from app.programs.context import Principal


def _audience(row: Any) -> Audience:
    return Audience(id=row["id"], name=row["name"], filter=AudienceFilter.model_validate(row["filter"]),
                    created_at=row["created_at"], updated_at=row["updated_at"])


def filter_args(f: AudienceFilter, today: datetime | None = None) -> list[Any]:
    """The parameters $2-$9 of the audience queries."""
    day = (today or datetime.now(UTC)).date()
    return [[s.value for s in f.segments] if f.segments else None, [s.value for s in f.stages] if f.stages else None,
            f.tiers, f.min_available, f.max_available, f.attributes, f.age_bands, day]


async def create(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, data: AudienceCreate) -> Audience:
    row = await conn.fetchrow(q.AUDIENCE_CREATE, p.program_id, data.name,
                              data.filter.model_dump(mode="json", exclude_none=True))
    if row is None:
        raise DomainError("validation_error", f"An audience named {data.name!r} exists already.")
    return _audience(row)


async def update(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, audience_id: str,
                 data: AudienceCreate) -> Audience:
    if await conn.fetchval(q.AUDIENCE_NAME_TAKEN, p.program_id, data.name, audience_id):
        raise DomainError("validation_error", f"An audience named {data.name!r} exists already.")
    row = await conn.fetchrow(q.AUDIENCE_UPDATE, p.program_id, audience_id, data.name,
                              data.filter.model_dump(mode="json", exclude_none=True))
    if row is None:
        raise DomainError("not_found", "No such audience in this program.")
    return _audience(row)


async def get(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, audience_id: str) -> Audience:
    row = await conn.fetchrow(q.AUDIENCE_GET, p.program_id, audience_id)
    if row is None:
        raise DomainError("not_found", "No such audience in this program.")
    return _audience(row)


async def get_with_size(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, audience_id: str) -> AudienceWithSize:
    a = await get(conn, p, audience_id)
    size = await conn.fetchval(q.AUDIENCE_SIZE, p.program_id, *filter_args(a.filter))
    as_of = await conn.fetchval(q.LAST_AS_OF, p.program_id)
    return AudienceWithSize(**a.model_dump(), members=size, as_of=as_of)


async def delete(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, audience_id: str) -> None:
    if await conn.fetchval(q.AUDIENCE_DELETE, p.program_id, audience_id) is None:
        raise DomainError("not_found", "No such audience in this program.")


async def list_all(conn: asyncpg.Connection | asyncpg.Pool, p: Principal) -> list[Audience]:
    return [_audience(r) for r in await conn.fetch(q.AUDIENCE_LIST, p.program_id)]


async def members_page(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, audience_id: str, cursor: str | None,
                       limit: int) -> AudienceMemberPage:
    a = await get(conn, p, audience_id)
    after = 0
    if cursor is not None:
        after = await conn.fetchval(q.CURSOR_IN, cursor)
        if after is None:
            raise DomainError("invalid_cursor", "The cursor is not one this endpoint gave.")
    rows = await conn.fetch(q.AUDIENCE_PAGE, p.program_id, *filter_args(a.filter), after, limit + 1)
    page = rows[:limit]
    has_more = len(rows) > limit
    return AudienceMemberPage(
        data=[AudienceMember(member_id=r["external_id"], segment=r["segment"], stage=r["stage"], tier=r["tier"],
                             available=r["available"]) for r in page],
        next_cursor=await conn.fetchval(q.CURSOR_OUT, page[-1]["member_pk"]) if has_more else None,
        has_more=has_more)


EXPORT_COLUMNS = ("member_id", "name", "email", "phone", "segment", "stage", "tier", "available")


async def export_rows(pool: asyncpg.Pool, program_id: UUID, audience: AudienceFilter, fmt: str,
                      batch: int = 1000) -> AsyncIterator[bytes]:
    """Like a segment's export: a server-side cursor in one snapshot, CSV or JSON lines, constant memory."""
    async for chunk in stream_members(pool, q.AUDIENCE_EXPORT, (program_id, *filter_args(audience)), EXPORT_COLUMNS,
                                      fmt, batch):
        yield chunk
