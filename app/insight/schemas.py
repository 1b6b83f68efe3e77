"""Insight: what the API answers (README "Insight")."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.insight.rfm import Segment, Stage
from app.money import DecimalText

Money = Annotated[DecimalText, Field(description="Decimal string in the program's currency")]
Share = Annotated[DecimalText, Field(description="A share between 0 and 1, 4 decimal places")]


class RfmScores(BaseModel):
    r: int = Field(ge=1, le=5, description="Recency score (5: most recent)")
    f: int = Field(ge=1, le=5, description="Frequency score")
    m: int = Field(ge=1, le=5, description="Monetary score")


class PointsPicture(BaseModel):
    earned: int = Field(description="Net points granted by earning and adjustments (lifetime)")
    redeemed: int = Field(description="Net points spent (lifetime)")
    available: int
    pending: int
    held: int
    outstanding: int = Field(description="available + pending + held: what the programme owes the member")
    currency: str
    available_value: Money = Field(description="available in money at the programme's conversion (rounded down)")
    outstanding_value: Money = Field(description="outstanding in money at the programme's conversion")


class MemberInsight(BaseModel):
    member_id: str
    as_of: datetime | None = Field(description="The refresh these figures come from (null: not refreshed yet)")
    window_days: int | None = Field(description="Frequency and monetary count the last N days")
    recency_days: int | None = Field(description="Days since the last purchase (null: never purchased)")
    frequency: int | None = Field(description="Purchases in the window")
    monetary: Money | None = Field(description="Eligible spend in the window")
    first_purchase_on: date | None
    last_purchase_on: date | None
    scores: RfmScores | None = Field(description="Null for a member who never purchased")
    segment: Segment | None
    stage: Stage | None
    points: PointsPicture = Field(description="Live, not as of the refresh")


class GroupFigures(BaseModel):
    members: int
    share_of_members: Share
    spend: Money = Field(description="Eligible spend of the window")
    share_of_spend: Share
    previous_members: int | None = Field(description="Members at the previous refresh (null: none)")
    moved_in: int = Field(description="Members who came from another group since the previous refresh")
    moved_out: int = Field(description="Members who left for another group since the previous refresh")


class SegmentFigures(GroupFigures):
    segment: Segment | None = Field(description="null: members who never purchased (unscored)")


class StageFigures(GroupFigures):
    stage: Stage


class LifecycleThresholds(BaseModel):
    new_days: int
    at_risk_days: int
    lapsed_days: int


class SegmentsOverview(BaseModel):
    as_of: datetime | None = Field(description="The last refresh (null: the programme was never refreshed)")
    previous_as_of: datetime | None = Field(description="The refresh the movement is measured from")
    window_days: int | None
    median_interval_days: DecimalText | None = Field(
        description="The programme's median inter-purchase interval (days, 2 decimal places)")
    thresholds: LifecycleThresholds | None
    members: int
    spend: Money
    currency: str
    segments: list[SegmentFigures]
    stages: list[StageFigures]


class SegmentMember(BaseModel):
    member_id: str
    segment: Segment
    stage: Stage
    recency_days: int
    frequency: int
    monetary: Money
    scores: RfmScores
    last_purchase_on: date


class SegmentMemberPage(BaseModel):
    data: list[SegmentMember]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page (null: last page)")
    has_more: bool
    as_of: datetime | None


class RefreshResult(BaseModel):
    program_id: str
    as_of: datetime
    members: int
    segment_changes: int
    seconds: float


ExportFormat = Literal["csv", "jsonl"]
