"""Expiration: policy versions, the expiry sweep, expiring-soon lists."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import AwareDatetime, BaseModel, Field

from app.expiry import queries as q
from app.expiry.policy import NEVER, Activity, ExpirationPolicy, activity_expires_at, lot_expires_at
from app.programs import versions
from app.programs.context import Principal


class PolicyUpdate(ExpirationPolicy):
    effective_from: AwareDatetime | None = Field(
        default=None, description="Lots created from this time on get their expiry from this version; default now")


class PolicyVersion(BaseModel):
    version: int = Field(description="0: the default (points never expire) before any PUT")
    effective_from: datetime | None
    created_at: datetime | None
    policy: ExpirationPolicy


class PolicyVersionList(BaseModel):
    data: list[PolicyVersion]


class ExpiringBucket(BaseModel):
    expires_at: datetime = Field(description="First instant the points are no longer available")
    date: str = Field(description="Local date (program time zone) on which they are gone")
    points: int


class ExpiringList(BaseModel):
    member_id: str
    within_days: int
    data: list[ExpiringBucket]


def policy_from_row(version_id: int | None, raw: Any) -> ExpirationPolicy:
    """The policy of a stored version; none stored: points never expire."""
    return NEVER if version_id is None else versions.parse(ExpirationPolicy, version_id, raw)


@dataclass(frozen=True)
class LotExpiry:
    """What a new lot's expiry is, and what the activity does to the member's activity date."""

    expires_at: datetime | None
    on_inactivity: bool
    activity_expires_at: datetime | None


def expiry_for(policy: ExpirationPolicy, occurred_at: datetime, activity: Activity | None, tz: ZoneInfo) -> LotExpiry:
    """A new lot's expiry under ``policy``; ``activity`` says whether this credit is a qualifying activity."""
    pushed = activity_expires_at(policy, occurred_at, activity, tz) if activity is not None else None
    return LotExpiry(lot_expires_at(policy, occurred_at, tz), policy.kind == "activity", pushed)


def _version(row: Any) -> PolicyVersion:
    return PolicyVersion(version=row["version"], effective_from=row["effective_from"], created_at=row["created_at"],
                         policy=policy_from_row(row["id"], row["document"]))


async def put_policy(conn: asyncpg.Connection, p: Principal, data: PolicyUpdate) -> PolicyVersion:
    policy = ExpirationPolicy.model_validate(data.model_dump(exclude={"effective_from"}))
    return _version(await versions.append(conn, versions.EXPIRATION_POLICY, p.program_id, data.effective_from,
                                          policy.model_dump(mode="json")))


async def current_policy(conn: asyncpg.Connection | asyncpg.Pool, program_id: UUID,
                         at: datetime | None = None,
                         cache: versions.VersionCache | None = None) -> tuple[int | None, PolicyVersion]:
    row = await versions.in_force(conn, versions.EXPIRATION_POLICY, program_id, at or datetime.now(UTC), cache)
    if row is None:
        return None, PolicyVersion(version=0, effective_from=None, created_at=None, policy=NEVER)
    return row["id"], _version(row)


async def policy_versions(conn: asyncpg.Connection | asyncpg.Pool, p: Principal) -> list[PolicyVersion]:
    return [_version(r) for r in await versions.history(conn, versions.EXPIRATION_POLICY, p.program_id)]


async def expiring(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, member_ref: str,
                   within_days: int) -> ExpiringList:
    from app.errors import DomainError

    rows = await conn.fetch(q.EXPIRING, p.program_id, member_ref, within_days)
    if not rows or rows[0]["found"] == 0:
        raise DomainError("member_not_found")
    tz = ZoneInfo(p.timezone)
    buckets = [
        ExpiringBucket(expires_at=r["expires_at"], date=r["expires_at"].astimezone(tz).date().isoformat(),
                       points=r["points"])
        for r in rows if r["expires_at"] is not None
    ]
    return ExpiringList(member_id=member_ref, within_days=within_days, data=buckets)


@dataclass
class SweepResult:
    members: int = 0
    lots: int = 0
    points: int = 0
    batches: int = 0
    seconds: float = 0.0


async def expire_due(pool: asyncpg.Pool, as_of: datetime | None = None, batch: int = 500,
                     progress: Callable[[SweepResult], None] | None = None, program_id: UUID | None = None,
                     dry_run: bool = False) -> SweepResult:
    """Expire every lot due by ``as_of`` (default now), of one program or all: one transaction per batch of
    members, walking member ids upwards, so a crash loses at most the batch in flight and a rerun (or a
    concurrent run) finds nothing left to expire twice. ``dry_run``: count what would expire, write nothing."""
    as_of = as_of or datetime.now(UTC)
    result = SweepResult()
    started = time.perf_counter()
    after = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 0")
            row = await conn.fetchrow(q.EXPIRE_BATCH, as_of, after, batch, program_id, dry_run)
        if not row["members"]:
            break
        result.members += row["members"]
        result.lots += row["lots"]
        result.points += row["points"]
        result.batches += 1
        after = row["last_member"]
        result.seconds = time.perf_counter() - started
        if progress:
            progress(result)
    result.seconds = time.perf_counter() - started
    return result


async def expire_now(pool: asyncpg.Pool) -> int:
    """Scheduler job: the sweep as of now."""
    return (await expire_due(pool)).points




async def announce_expiring(pool: asyncpg.Pool, now: datetime | None = None, batch: int = 2000) -> int:
    """Scheduler job (hourly): the `points.expiring` notices due, for every program with thresholds; one
    transaction per batch of members. Returns the notices announced."""
    from app.programs.schemas import ProgramSettings

    now = now or datetime.now(UTC)
    announced = 0
    for program in await pool.fetch(q.PROGRAMS):
        days = ProgramSettings.model_validate(program["settings"]).expiring_notice_days
        if not days:
            continue
        after = 0
        while True:
            row = await pool.fetchrow(q.ANNOUNCE_EXPIRING, program["id"], days, program["timezone"], now, after,
                                      batch)
            if not row["members"]:
                break
            announced += row["notices"]
            after = row["last_member"]
    await pool.fetchval(q.PURGE_NOTICES)
    return announced
