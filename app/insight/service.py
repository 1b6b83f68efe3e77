"""Insight use cases: the refresh (scheduler and CLI), a member's insight, the segments overview, a segment's
members (paged and exported). The rules are the pure functions of ``rfm.py``; the SQL is in ``queries.py`` and
``migrations/functions/97_insight.sql``."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from app.errors import DomainError
from app.insight import queries as q
from app.insight.rfm import SEGMENT_MAP, Segment, Stage, Thresholds, thresholds
from app.insight.schemas import (
    LifecycleThresholds,
    MemberInsight,
    PointsPicture,
    RfmScores,
    SegmentFigures,
    SegmentMember,
    SegmentMemberPage,
    SegmentsOverview,
    StageFigures,
)
from app.money import MINOR_UNITS
from app.programs.context import Principal
from app.programs.schemas import ProgramSettings
from app.redemption.conversion import points_value

STEPS = ("facts", "median", "scores", "store")
REFRESH_TIMEOUT_SECONDS = 3600.0
_MAP_R = [r for r, _ in SEGMENT_MAP]
_MAP_FM = [fm for _, fm in SEGMENT_MAP]
_MAP_SEGMENT = [s.value for s in SEGMENT_MAP.values()]


@dataclass
class RefreshResult:
    programs: int = 0
    members: int = 0
    segment_changes: int = 0
    seconds: float = 0.0
    steps: int = 0
    per_program: list[dict[str, Any]] = field(default_factory=list)


def thresholds_for(settings: ProgramSettings, median: Decimal | None) -> Thresholds:
    return thresholds(median, settings.lifecycle_new_days, settings.lifecycle_at_risk_days,
                      settings.lifecycle_lapsed_days)


async def refresh_program(conn: asyncpg.Connection, program_id: UUID, settings: ProgramSettings, as_of: datetime,
                          step_done: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Refresh one programme in one transaction (the caller's): facts, median interval, scores, store."""
    window = settings.insight_window_days
    t_out = REFRESH_TIMEOUT_SECONDS
    async with conn.transaction():
        # A refresh of a large programme takes longer than a request may: no statement timeout here, the client
        # waits up to an hour per step.
        await conn.execute("SET LOCAL statement_timeout = 0", timeout=t_out)
        await conn.execute(q.LOCK_PROGRAM, program_id, timeout=t_out)
        await conn.execute(q.DROP_TEMP, timeout=t_out)
        await conn.execute(q.FACTS_TABLE, timeout=t_out)
        await conn.execute(q.FACTS, program_id, as_of, window, timeout=t_out)
        await conn.execute("ANALYZE insight_facts", timeout=t_out)
        if step_done:
            step_done("facts")
        median: Decimal | None = await conn.fetchval(q.MEDIAN_INTERVAL, timeout=t_out)
        if median is not None:
            median = median.quantize(Decimal("0.01"))
        t = thresholds_for(settings, median)
        if step_done:
            step_done("median")
        await conn.execute(q.SCORE_TABLE, timeout=t_out)
        await conn.execute(q.SCORE, as_of, _MAP_R, _MAP_FM, _MAP_SEGMENT, t.new_days, t.at_risk_days,
                           t.lapsed_days, timeout=t_out)
        await conn.execute("ANALYZE insight_new", timeout=t_out)
        if step_done:
            step_done("scores")
        row = await conn.fetchrow(q.STORE, program_id, as_of, window, median,
                                  {"new_days": t.new_days, "at_risk_days": t.at_risk_days,
                                   "lapsed_days": t.lapsed_days}, timeout=t_out)
        await conn.execute(q.DROP_TEMP, timeout=t_out)
        if step_done:
            step_done("store")
    return {"program_id": str(program_id), "members": row["members"], "segment_changes": row["changed"]}


async def programs_to_refresh(pool: asyncpg.Pool, program_id: UUID | None = None) -> list[asyncpg.Record]:
    return list(await pool.fetch(q.PROGRAMS, program_id))


async def refresh(pool: asyncpg.Pool, as_of: datetime | None = None, program_id: UUID | None = None,
                  progress: Callable[[RefreshResult, str], None] | None = None,
                  stale_after_hours: float | None = None) -> RefreshResult:
    """Refresh every programme (or one), each in its own transaction. ``stale_after_hours``: only the programmes
    whose last refresh is older than that (the scheduler's rule)."""
    as_of = as_of or datetime.now(UTC)
    result = RefreshResult()
    started = time.perf_counter()
    for program in await programs_to_refresh(pool, program_id):
        if stale_after_hours is not None and not await pool.fetchval(q.STALE, program["id"],
                                                                     stale_after_hours * 3600):
            continue
        settings = ProgramSettings.model_validate(program["settings"])

        def step(name: str) -> None:
            result.steps += 1
            if progress:
                progress(result, name)

        async with pool.acquire() as conn:
            done = await refresh_program(conn, program["id"], settings, as_of, step)
        result.programs += 1
        result.members += done["members"]
        result.segment_changes += done["segment_changes"]
        result.per_program.append(done)
    result.seconds = time.perf_counter() - started
    return result


async def refresh_due(pool: asyncpg.Pool, stale_after_hours: float = 24.0) -> int:
    """Scheduler job: refresh the programmes whose last refresh is older than ``stale_after_hours``."""
    return (await refresh(pool, stale_after_hours=stale_after_hours)).members


# --- reads ------------------------------------------------------------------------------------------------------


def _scores(row: Any) -> RfmScores | None:
    if row["r_score"] is None:
        return None
    return RfmScores(r=row["r_score"], f=row["f_score"], m=row["m_score"])


async def member_insight(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, member_ref: str) -> MemberInsight:
    row = await conn.fetchrow(q.MEMBER, p.program_id, member_ref)
    if row is None:
        raise DomainError("member_not_found", f"No member {member_ref!r} in this program.")
    outstanding = row["available"] + row["pending"] + row["held"]
    refreshed = row["as_of"] is not None
    return MemberInsight(
        member_id=row["external_id"], as_of=row["as_of"], window_days=row["window_days"],
        recency_days=row["recency_days"], frequency=row["frequency"] if refreshed else None,
        monetary=row["monetary"].quantize(_quantum(p.currency)) if refreshed else None,
        first_purchase_on=row["first_purchase_on"],
        last_purchase_on=row["last_purchase_on"], scores=_scores(row),
        segment=Segment(row["segment"]) if row["segment"] else None,
        stage=Stage(row["stage"]) if row["stage"] else None,
        points=PointsPicture(
            earned=row["lifetime_earned"], redeemed=row["lifetime_redeemed"], available=row["available"],
            pending=row["pending"], held=row["held"], outstanding=outstanding, currency=p.currency,
            available_value=points_value(max(row["available"], 0), p.settings, p.currency),
            outstanding_value=points_value(max(outstanding, 0), p.settings, p.currency)),
    )


_SHARE = Decimal("0.0001")


def _quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS[currency])


def _share(part: Decimal | int, whole: Decimal | int) -> Decimal:
    return (Decimal(part) / Decimal(whole)).quantize(_SHARE) if whole else Decimal("0.0000")


def _figures(key: str, groups: list[dict[str, Any]], moves: list[dict[str, Any]],
             previous: dict[str | None, int] | None, total_members: int, total_spend: Decimal,
             order: list[str | None], quantum: Decimal) -> list[dict[str, Any]]:
    by_name = {g[key]: g for g in groups}
    moved_in: dict[str | None, int] = {}
    moved_out: dict[str | None, int] = {}
    for m in moves:
        moved_in[m["to"]] = moved_in.get(m["to"], 0) + m["members"]
        moved_out[m["from"]] = moved_out.get(m["from"], 0) + m["members"]
    out = []
    for name in order:
        g = by_name.get(name, {"members": 0, "spend": 0})
        spend = Decimal(str(g["spend"] or 0)).quantize(quantum)
        out.append({key: name, "members": g["members"], "share_of_members": _share(g["members"], total_members),
                    "spend": spend, "share_of_spend": _share(spend, total_spend),
                    "previous_members": None if previous is None else previous.get(name, 0),
                    "moved_in": moved_in.get(name, 0), "moved_out": moved_out.get(name, 0)})
    return out


async def segments_overview(conn: asyncpg.Connection | asyncpg.Pool, p: Principal) -> SegmentsOverview:
    """Sizes, share of spend and movement per segment and per stage, as of the last refresh."""
    rows = await conn.fetch(q.LAST_REFRESHES, p.program_id)
    if not rows:
        return SegmentsOverview(as_of=None, previous_as_of=None, window_days=None, median_interval_days=None,
                                thresholds=None, members=0, spend=Decimal(0).quantize(_quantum(p.currency)),
                                currency=p.currency, segments=[],
                                stages=[])
    last, prev = rows[0], (rows[1] if len(rows) > 1 else None)
    summary = last["summary"]
    quantum = _quantum(p.currency)
    total_spend = sum((Decimal(str(g["spend"] or 0)) for g in summary["segments"]), Decimal(0)).quantize(quantum)
    previous_segments = ({g["segment"]: g["members"] for g in prev["summary"]["segments"]} if prev else None)
    previous_stages = ({g["stage"]: g["members"] for g in prev["summary"]["stages"]} if prev else None)
    segments = _figures("segment", summary["segments"], summary["segment_moves"], previous_segments, last["members"],
                        total_spend, [*[s.value for s in Segment], None], quantum)
    stages = _figures("stage", summary["stages"], summary["stage_moves"], previous_stages, last["members"],
                      total_spend, [s.value for s in Stage], quantum)
    return SegmentsOverview(
        as_of=last["as_of"], previous_as_of=prev["as_of"] if prev else None, window_days=last["window_days"],
        median_interval_days=last["median_interval_days"],
        thresholds=LifecycleThresholds(**last["thresholds"]), members=last["members"], spend=total_spend,
        currency=p.currency, segments=[SegmentFigures(**s) for s in segments],
        stages=[StageFigures(**s) for s in stages])


async def segment_page(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, segment: Segment, cursor: str | None,
                       limit: int) -> SegmentMemberPage:
    """A page of the segment's members (keyset: member row order after the cursor)."""
    after = 0
    if cursor is not None:
        after = await conn.fetchval(q.CURSOR_IN, cursor)
        if after is None:
            raise DomainError("invalid_cursor", "The cursor is not one this endpoint gave.")
    rows = await conn.fetch(q.SEGMENT_PAGE, p.program_id, segment.value, after, limit + 1, MINOR_UNITS[p.currency])
    as_of = await conn.fetchval(q.LAST_AS_OF, p.program_id)
    page = rows[:limit]
    data = [SegmentMember(member_id=r["external_id"], segment=Segment(r["segment"]), stage=Stage(r["stage"]),
                          recency_days=r["recency_days"], frequency=r["frequency"], monetary=r["monetary"],
                          scores=RfmScores(r=r["r_score"], f=r["f_score"], m=r["m_score"]),
                          last_purchase_on=r["last_purchase_on"]) for r in page]
    has_more = len(rows) > limit
    next_cursor = await conn.fetchval(q.CURSOR_OUT, page[-1]["member_pk"]) if has_more else None
    return SegmentMemberPage(data=data, next_cursor=next_cursor, has_more=has_more, as_of=as_of)


EXPORT_COLUMNS = ("member_id", "name", "email", "phone", "segment", "stage", "recency_days", "frequency",
                  "monetary", "r_score", "f_score", "m_score", "last_purchase_on")


def _cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


_PERSONAL = ("name", "email", "phone")


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) is prefixed with '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def export_rows(pool: asyncpg.Pool, program_id: UUID, currency: str, segment: Segment, fmt: str,
                      batch: int = 1000) -> AsyncIterator[bytes]:
    """The segment's members as CSV (with a header) or JSON lines, read through a server-side cursor in batches:
    memory does not grow with the segment. Personal data is what the member record holds now: an erased member's
    name, email and phone are null (empty in CSV)."""
    async for chunk in stream_members(pool, q.SEGMENT_EXPORT, (program_id, segment.value, MINOR_UNITS[currency]),
                                      EXPORT_COLUMNS, fmt, batch):
        yield chunk


async def stream_members(pool: asyncpg.Pool, sql: str, args: tuple[Any, ...], columns: tuple[str, ...], fmt: str,
                         batch: int) -> AsyncIterator[bytes]:
    """A member list (a segment's, an audience's) as CSV with a header or as JSON lines, from one repeatable-read
    snapshot through a server-side cursor, ``batch`` rows at a time: memory does not grow with the list. Personal
    cells (name, email, phone) a spreadsheet would run as a formula are neutralised (csv_safe); NULL is empty in
    CSV."""
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        if fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(columns)
            yield buf.getvalue().encode()
        cur = await conn.cursor(sql, *args)
        while rows := await cur.fetch(batch):
            if fmt == "csv":
                buf = io.StringIO()
                writer = csv.writer(buf, lineterminator="\n")
                for r in rows:
                    writer.writerow(["" if r[c] is None else csv_safe(_cell(r[c])) if c in _PERSONAL else _cell(r[c])
                                     for c in columns])
                yield buf.getvalue().encode()
            else:
                yield "".join(json.dumps({c: _cell(r[c]) for c in columns}) + "\n" for r in rows).encode()
