"""Tier use cases: configuration versions, the upgrade on a purchase, the evaluation job, manual
assignment, progress. The qualification rules themselves are the pure functions of ``policy.py``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from app.errors import DomainError
from app.programs import versions
from app.programs.context import Principal
from app.tiers import queries as q
from app.tiers.policy import (
    TierConfig,
    TierDecision,
    TierProgress,
    TierState,
    evaluate,
    progress,
    window_bounds,
)


class TierConfigUpdate(TierConfig):
    effective_from: AwareDatetime | None = Field(default=None, description="Default now")


class TierConfigVersion(BaseModel):
    version: int
    effective_from: datetime
    created_at: datetime
    config: TierConfig


class TierConfigVersionList(BaseModel):
    data: list[TierConfigVersion]


class TierAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    until: AwareDatetime = Field(description="The assignment holds at least until then")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class TierHistoryItem(BaseModel):
    from_tier: str | None
    to_tier: str
    valid_until: datetime | None
    reason: str
    source: str
    reference: str | None
    config_version: int | None
    changed_at: datetime
    recorded_at: datetime


class MemberTier(BaseModel):
    member_id: str
    configured: bool = Field(description="False when the program has no tiers")
    progress: TierProgress | None
    since: datetime | None
    manual_tier: str | None
    manual_until: datetime | None
    history: list[TierHistoryItem]


def config_from_row(version_id: int | None, raw: Any) -> TierConfig | None:
    return None if version_id is None else versions.parse(TierConfig, version_id, raw)


def state_from(row: Any) -> TierState | None:
    if row is None or row["tier"] is None:
        return None
    return TierState(tier=row["tier"], valid_until=row["valid_until"], manual_until=row["manual_until"],
                     manual_tier=row["manual_tier"])


def metric_value(config: TierConfig, row: Any, prefix: str = "") -> Decimal:
    """The configured metric's column (``points``, ``spend`` or ``purchases``, after ``prefix``) of ``row``."""
    return Decimal(row[prefix + config.metric])


async def _metrics(conn: asyncpg.Connection | asyncpg.Pool, config: TierConfig, member_ids: list[int],
                   as_of: datetime, tz: ZoneInfo) -> dict[int, Decimal]:
    """The metric over the window ending at ``as_of``. ``window_bounds`` is half-open; the query's end is
    inclusive, so a purchase at exactly ``as_of`` (the one being posted) counts."""
    start, end = window_bounds(config, as_of, tz)
    rows = await conn.fetch(q.METRICS, member_ids, start, end, config.include_bonuses)
    return {r["member_id"]: metric_value(config, r) for r in rows}


async def _save(conn: asyncpg.Connection, program_id: UUID, member_id: int, before: TierState | None,
                decision: TierDecision, at: datetime, source: str, reference: str | None, version: int | None,
                evaluated_at: datetime | None = None) -> None:
    manual_tier = before.manual_tier if before else None
    manual_until = before.manual_until if before else None
    await conn.execute(q.SAVE, program_id, member_id, decision.tier, decision.valid_until, manual_tier,
                       manual_until, at, evaluated_at, before.tier if before else None,
                       decision.reason if decision.changed else None, source, reference, version)


# --- configuration ---------------------------------------------------------------------------------------


def _version(row: Any) -> TierConfigVersion:
    config = config_from_row(row["id"], row["document"])
    assert config is not None
    return TierConfigVersion(version=row["version"], effective_from=row["effective_from"],
                             created_at=row["created_at"], config=config)


async def put_config(conn: asyncpg.Connection, p: Principal, data: TierConfigUpdate) -> TierConfigVersion:
    config = TierConfig.model_validate(data.model_dump(exclude={"effective_from"}))
    return _version(await versions.append(conn, versions.TIERS, p.program_id, data.effective_from,
                                          config.model_dump(mode="json")))


async def current_config(conn: asyncpg.Connection | asyncpg.Pool, program_id: UUID, at: datetime | None = None,
                         cache: versions.VersionCache | None = None
                         ) -> tuple[int | None, int | None, TierConfig | None]:
    row = await versions.in_force(conn, versions.TIERS, program_id, at or datetime.now(UTC), cache)
    if row is None:
        return None, None, None
    return row["id"], row["version"], config_from_row(row["id"], row["document"])


async def config_versions(conn: asyncpg.Connection | asyncpg.Pool, p: Principal) -> list[TierConfigVersion]:
    return [_version(r) for r in await versions.history(conn, versions.TIERS, p.program_id)]


# --- the evaluation job ----------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    members: int = 0
    changed: int = 0
    upgraded: int = 0
    downgraded: int = 0
    seconds: float = 0.0


async def evaluate_all(pool: asyncpg.Pool, as_of: datetime | None = None, batch: int = 500,
                       progress_cb: Callable[[EvaluationResult], None] | None = None,
                       program_id: UUID | None = None, dry_run: bool = False) -> EvaluationResult:
    """Re-qualify every member of every program with tiers, as of ``as_of`` (default now): one transaction
    per batch of members (locked in id order), idempotent (a rerun finds nothing to change).
    ``program_id``: that program only. ``dry_run``: decide and count the same way, lock and save nothing."""
    as_of = as_of or datetime.now(UTC)
    result = EvaluationResult()
    started = time.perf_counter()
    for program in await pool.fetch(q.PROGRAMS_WITH_TIERS, as_of, program_id):
        program_id = program["program_id"]
        tz = ZoneInfo(await pool.fetchval(q.PROGRAM_TZ, program_id))
        _, version, config = await current_config(pool, program_id, as_of)
        assert config is not None
        after = 0
        while True:
            async with pool.acquire() as conn, conn.transaction():
                ids = [r["id"] for r in await conn.fetch(q.MEMBER_BATCH, program_id, after, batch)]
                if not ids:
                    break
                if not dry_run:
                    await conn.execute(q.LOCK_MEMBERS, ids)
                states = {r["member_id"]: state_from(r) for r in await conn.fetch(q.STATES_PEEK, ids)}
                metrics = await _metrics(conn, config, ids, as_of, tz)
                for member_id in ids:
                    before = states.get(member_id)
                    decision = evaluate(config, before, metrics.get(member_id, Decimal(0)), as_of, tz)
                    if decision.changed and not dry_run:
                        await _save(conn, program_id, member_id, before, decision, as_of, "evaluation",
                                    f"evaluate-tiers as of {as_of.isoformat()}", version, evaluated_at=as_of)
                    if decision.changed:
                        result.changed += 1
                        result.upgraded += decision.direction == "up"
                        result.downgraded += decision.direction == "down"
                result.members += len(ids)
                after = ids[-1]
            result.seconds = time.perf_counter() - started
            if progress_cb:
                progress_cb(result)
    result.seconds = time.perf_counter() - started
    return result


async def members_to_evaluate(pool: asyncpg.Pool, as_of: datetime, program_id: UUID | None = None) -> int:
    """How many members ``evaluate_all`` walks (the total for a progress bar)."""
    return int(await pool.fetchval(q.MEMBERS_TO_EVALUATE, as_of, program_id))


async def evaluate_now(pool: asyncpg.Pool) -> int:
    """Scheduler job."""
    return (await evaluate_all(pool)).changed


# --- members ---------------------------------------------------------------------------------------------


async def assign(conn: asyncpg.Connection, p: Principal, member_ref: str, data: TierAssign) -> MemberTier:
    """Manual assignment (admin): the member holds ``tier`` at least until ``until``; then the evaluation
    job decides again. Recorded in the history with the admin's reason."""
    version_id, version, config = await current_config(conn, p.program_id)
    if config is None or config.rank(data.tier) is None:
        raise DomainError("validation_error", f"No tier named {data.tier!r} in the program's tiers.")
    row = await conn.fetchrow(q.MEMBER, p.program_id, member_ref)
    if row is None:
        raise DomainError("member_not_found")
    await conn.execute(q.LOCK_MEMBERS, [row["id"]])
    row = await conn.fetchrow(q.MEMBER, p.program_id, member_ref)  # as its last writer left it
    before = state_from(row)
    now = datetime.now(UTC)
    await conn.execute(q.SAVE, p.program_id, row["id"], data.tier, data.until, data.tier, data.until, now, None,
                       before.tier if before else None, "manual", "manual", data.reason, version)
    return await member_tier(conn, p, member_ref)


async def member_tier(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, member_ref: str) -> MemberTier:
    row = await conn.fetchrow(q.MEMBER, p.program_id, member_ref)
    if row is None:
        raise DomainError("member_not_found")
    history = [TierHistoryItem(**dict(h)) for h in await conn.fetch(q.MEMBER_HISTORY, row["id"], 50)]
    _, _, config = await current_config(conn, p.program_id)
    if config is None:
        return MemberTier(member_id=member_ref, configured=False, progress=None, since=None, manual_tier=None,
                          manual_until=None, history=history)
    tz = ZoneInfo(p.timezone)
    now = datetime.now(UTC)
    value = (await _metrics(conn, config, [row["id"]], now, tz))[row["id"]]
    return MemberTier(member_id=member_ref, configured=True, progress=progress(config, state_from(row), value, now, tz),
                      since=row["since"], manual_tier=row["manual_tier"], manual_until=row["manual_until"],
                      history=history)
