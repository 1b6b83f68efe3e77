"""Insight: a member's RFM scores, segment, lifecycle stage and points picture; the segments overview; a segment's
members, paged or exported (CSV / JSON lines, streamed). Everything reads the last refresh (README "Insight")."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from app.api.deps import Admin, MemberIdPath, Pool, Reader
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.insight import audiences, health, service
from app.insight.rfm import Segment
from app.insight.schemas import (
    Audience,
    AudienceCreate,
    AudienceList,
    AudienceMemberPage,
    AudienceWithSize,
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


@router.get("/analytics/summary", response_model=Summary, responses=responses("insufficient_scope"))
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


@router.get("/analytics/liability", response_model=LiabilityForecast, responses=responses("insufficient_scope"))
async def analytics_liability(
    principal: Admin, pool: Pool,
    horizon: Annotated[int, Query(ge=1, le=120, description="Months forecast one by one (the rest: `later`)")] = 12,
) -> LiabilityForecast:
    """The liability now (points and money) and its forecast: how much of it is expected to be redeemed and how much
    to break, month by month, from the programme's own history by lot age (README "Insight", liability forecast)."""
    return await health.liability_forecast(pool, principal, horizon)


# --- audiences ---------------------------------------------------------------------------------------------------

AudienceIdPath = Annotated[str, Path(min_length=1, max_length=64, description="An audience's id",
                                     examples=["aud_3f9c2a7d1e4b8c60"])]
_AUDIENCE_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **responses("insufficient_scope", "not_found"),
    200: {"description": "The audience's members: CSV with a header row, or one JSON object per line. Columns: "
          + ", ".join(audiences.EXPORT_COLUMNS) + ". An erased member's name, email and phone are empty.",
          "content": {"text/csv": {"schema": {"type": "string"}},
                      "application/x-ndjson": {"schema": {"type": "string"}}}},
}


@router.post("/audiences", response_model=Audience, status_code=201, responses=responses("insufficient_scope"))
async def create_audience(body: AudienceCreate, principal: Admin, pool: Pool) -> Audience:
    """A named, saved filter: RFM segments, lifecycle stages, tiers, available points, the member's own attributes
    and age bands (every criterion given must hold; within a list, any value). Names are unique per programme
    (422 when taken)."""
    return await audiences.create(pool, principal, body)


@router.get("/audiences", response_model=AudienceList, responses=responses("insufficient_scope"))
async def list_audiences(principal: Reader, pool: Pool) -> AudienceList:
    return AudienceList(data=await audiences.list_all(pool, principal))


@router.get("/audiences/{audience_id}", response_model=AudienceWithSize,
            responses=responses("insufficient_scope", "not_found"))
async def get_audience(audience_id: AudienceIdPath, principal: Reader, pool: Pool) -> AudienceWithSize:
    """The audience and how many members match it now."""
    return await audiences.get_with_size(pool, principal, audience_id)


@router.put("/audiences/{audience_id}", response_model=Audience, responses=responses("insufficient_scope", "not_found"))
async def update_audience(audience_id: AudienceIdPath, body: AudienceCreate, principal: Admin,
                          pool: Pool) -> Audience:
    return await audiences.update(pool, principal, audience_id, body)


@router.delete("/audiences/{audience_id}", status_code=204, responses=responses("insufficient_scope", "not_found"))
async def delete_audience(audience_id: AudienceIdPath, principal: Admin, pool: Pool) -> Response:
    await audiences.delete(pool, principal, audience_id)
    return Response(status_code=204)


@router.get("/audiences/{audience_id}/members", response_model=AudienceMemberPage,
            responses=responses("insufficient_scope", "not_found", "invalid_cursor"))
async def audience_members(
    audience_id: AudienceIdPath, principal: Reader, pool: Pool,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64, description="The `next_cursor` of the previous page")] = None,
) -> AudienceMemberPage:
    return await audiences.members_page(pool, principal, audience_id, cursor, limit)


@router.get("/audiences/{audience_id}/members/export", response_class=StreamingResponse, response_model=None,
            responses=_AUDIENCE_EXPORT_RESPONSES)
async def export_audience(
    audience_id: AudienceIdPath, principal: Admin, pool: Pool,
    format: Annotated[ExportFormat, Query(description="csv (with a header row) or jsonl")] = "csv",
) -> StreamingResponse:
    """The whole audience with contact details (admin), streamed like a segment's export."""
    a = await audiences.get(pool, principal, audience_id)
    return StreamingResponse(audiences.export_rows(pool, principal.program_id, a.filter, format),
                             media_type=_MEDIA[format],
                             headers={"Content-Disposition": f'attachment; filename="audience.{format}"'})
