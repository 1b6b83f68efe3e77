"""Insight: a member's RFM scores, segment, lifecycle stage and points picture; the segments overview; a segment's
members, paged or exported (CSV / JSON lines, streamed). Everything reads the last refresh (README "Insight")."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.api.deps import Admin, MemberIdPath, Pool, Reader
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.insight import health, service
from app.insight.rfm import Segment
from app.insight.schemas import (
    ExportFormat,
    Granularity,
    LiabilityForecast,
    MemberInsight,
    SegmentMemberPage,
    SegmentsOverview,
    Summary,
)

router = APIRouter(prefix="/v1", tags=["insight"], route_class=ApiRoute)

_MEDIA = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **responses("insufficient_scope"),
    200: {"description": "The segment's members: CSV with a header row, or one JSON object per line. Columns: "
          + ", ".join(service.EXPORT_COLUMNS) + ". An erased member's name, email and phone are empty.",
          "content": {"text/csv": {"schema": {"type": "string"}},
                      "application/x-ndjson": {"schema": {"type": "string"}}}},
}


@router.get("/members/{member_id}/insights", response_model=MemberInsight,
            responses=responses("insufficient_scope", "member_not_found"))
async def member_insights(member_id: MemberIdPath, principal: Reader, pool: Pool) -> MemberInsight:
    """The member's recency, frequency and monetary, their 1-5 scores, segment and lifecycle stage as of the last
    refresh (`as_of`), and the points picture now: earned vs redeemed, the balance, and its value in money at the
    programme's conversion."""
    return await service.member_insight(pool, principal, member_id)


@router.get("/segments", response_model=SegmentsOverview, responses=responses("insufficient_scope"))
async def segments(principal: Reader, pool: Pool) -> SegmentsOverview:
    """Per RFM segment and per lifecycle stage: members, share of members, spend of the window and its share, and
    the movement since the previous refresh (members then, moved in, moved out)."""
    return await service.segments_overview(pool, principal)


@router.get("/segments/{segment}/members", response_model=SegmentMemberPage,
            responses=responses("insufficient_scope", "invalid_cursor"))
async def segment_members(
    segment: Segment, principal: Reader, pool: Pool,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64, description="The `next_cursor` of the previous page")] = None,
) -> SegmentMemberPage:
    """The segment's members as of the last refresh, a page at a time (keyset: pages stay consistent while the
    list is read)."""
    return await service.segment_page(pool, principal, segment, cursor, limit)


@router.get("/segments/{segment}/members/export", response_class=StreamingResponse, response_model=None,
            responses=_EXPORT_RESPONSES)
async def export_segment(
    segment: Segment, principal: Admin, pool: Pool,
    format: Annotated[ExportFormat, Query(description="csv (with a header row) or jsonl")] = "csv",
) -> StreamingResponse:
    """The whole segment for a CRM campaign, with the members' contact details (hence admin only), streamed in
    constant memory (read in batches through a server-side cursor, in one snapshot)."""
    filename = f"{segment.value}.{format}"
    return StreamingResponse(service.export_rows(pool, principal.program_id, principal.currency, segment, format),
                             media_type=_MEDIA[format],
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/analytics/summary", response_model=Summary, responses=responses("insufficient_scope"),
            tags=["analytics"])
async def analytics_summary(
    principal: Admin, pool: Pool,
    start: Annotated[date | None, Query(alias="from", description="First day (UTC), included; default `to` - 30 "
                                        "days")] = None,
    end: Annotated[date | None, Query(alias="to", description="Day after the last (UTC), excluded; default "
                                      "tomorrow")] = None,
    granularity: Annotated[Granularity, Query(description="One period per day, ISO week or month")] = "day",
) -> Summary:
    """Programme health per period: members new, active, lapsed and repeat; purchases and spend; points issued,
    redeemed, expired and outstanding (in points and money); redemption, breakage and repeat-purchase rates; and
    retention by enrolment-month cohort. Computed from the ledger and the daily purchase totals at the time of the
    request (at most 400 periods). Admin: these are the programme's finances."""
    return await health.summary(pool, principal, start, end, granularity)


@router.get("/analytics/liability", response_model=LiabilityForecast, responses=responses("insufficient_scope"),
            tags=["analytics"])
async def analytics_liability(
    principal: Admin, pool: Pool,
    horizon: Annotated[int, Query(ge=1, le=120, description="Months forecast one by one (the rest: `later`)")] = 12,
) -> LiabilityForecast:
    """The liability now (points and money) and its forecast: how much of it is expected to be redeemed and how much
    to break, month by month, from the programme's own history by lot age (README "Insight", liability forecast)."""
    return await health.liability_forecast(pool, principal, horizon)
