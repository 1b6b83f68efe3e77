"""Insight: what the API answers (README "Insight")."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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


Granularity = Literal["day", "week", "month"]


class MemberCounts(BaseModel):
    new: int = Field(description="Members enrolled in the period")
    active: int = Field(description="Members with at least one purchase in the period")
    lapsed: int = Field(description="Members who lapsed in the period: `lapsed_days` after a purchase day that no "
                        "purchase followed within `lapsed_days`")
    repeat: int = Field(description="Active members whose purchases, counted to the period's end, are two or more")


class PointsFigures(BaseModel):
    issued: int = Field(description="Net points granted in the period (earned and adjusted, net of clawbacks and "
                        "reversals)")
    redeemed: int = Field(description="Net points redeemed (redemptions, captures, exchanges, net of refunds)")
    expired: int
    outstanding: int = Field(description="At the period's end: issued - redeemed - expired to date; equals the "
                             "members' available + pending + held")
    outstanding_value: Money = Field(description="`outstanding` in money at the programme's conversion")


class SummaryPeriod(BaseModel):
    start: date = Field(description="First day (UTC) of the period")
    end: date = Field(description="Day after the period's last day (exclusive)")
    members: MemberCounts
    purchases: int
    spend: Money = Field(description="Eligible spend of the period's purchases")
    repeat_purchase_rate: Share = Field(description="members.repeat / members.active (0 without active members)")
    points: PointsFigures
    redemption_rate: Share = Field(description="Redeemed to date / issued to date, at the period's end")
    breakage_rate: Share = Field(description="Expired to date / issued to date, at the period's end")


class Cohort(BaseModel):
    cohort: str = Field(description="Enrolment month (UTC), YYYY-MM", examples=["2026-01"])
    members: int = Field(description="Members enrolled that month")
    active: list[int] = Field(description="Members of the cohort who purchased in each month from the enrolment "
                              "month (index 0) to the month of `to`")
    retention: list[Share] = Field(description="active / members, per month")


class Summary(BaseModel):
    start: date = Field(description="`from`: the first day (UTC), included")
    end: date = Field(description="`to`: the day after the last one (UTC), excluded")
    granularity: Granularity
    currency: str
    lapsed_days: int = Field(description="The lapse threshold used: the last refresh's, else the programme's "
                             "setting, else 4 x 30 days")
    periods: list[SummaryPeriod]
    cohorts: list[Cohort] = Field(description="Retention by enrolment-month cohort, for the members enrolled from "
                                  "`from` to `to`")


class ForecastMonth(BaseModel):
    month: str = Field(description="YYYY-MM (UTC)", examples=["2027-01"])
    redeemed: int = Field(description="Points expected to be redeemed that month")
    breakage: int = Field(description="Points expected to expire that month")
    redeemed_value: Money
    breakage_value: Money


class ForecastLater(BaseModel):
    redeemed: int
    breakage: int = Field(description="Expiring after the horizon, and never redeemed (`never_redeemed`)")


class AgeRate(BaseModel):
    age_months: int
    redemption_rate: DecimalText = Field(description="Share of the points still in lots at this age redeemed during "
                                         "it, in the programme's history (6 decimal places)")


class LiabilityForecast(BaseModel):
    as_of: datetime
    currency: str
    outstanding: int = Field(description="The liability now: available + pending + held of every member")
    outstanding_value: Money
    forecast_points: int = Field(description="What the forecast covers: points left in lots, plus held points "
                                 "(differs from `outstanding` only by members' negative balances)")
    expected_redeemed: int = Field(description="Of `forecast_points`, expected to be redeemed, ever")
    expected_breakage: int = Field(description="Expected to expire or never be redeemed (`forecast_points` - "
                                   "`expected_redeemed`)")
    expected_breakage_rate: Share
    expected_redeemed_value: Money
    expected_breakage_value: Money
    never_redeemed: int = Field(description="Points without an expiry expected still unredeemed after 10 years "
                                "(part of the breakage)")
    horizon_months: int
    months: list[ForecastMonth]
    later: ForecastLater = Field(description="After the horizon")
    rates: list[AgeRate] = Field(description="The redemption rates by lot age the forecast used (observed ages)")
    tail_rate: DecimalText = Field(description="The rate used beyond the observed ages (mean of the last three)")


# --- audiences ------------------------------------------------------------------------------------------------

AgeBand = Literal["under_18", "18_24", "25_34", "35_44", "45_54", "55_64", "65_plus"]
AttributeValue = Annotated[str, Field(max_length=200)] | int | bool


class AudienceFilter(BaseModel):
    """Every criterion given must hold (AND); within a list, any value (OR). Empty: every member."""

    model_config = ConfigDict(extra="forbid")

    segments: Annotated[list[Segment], Field(min_length=1, max_length=11)] | None = Field(
        default=None, description="RFM segments of the last refresh")
    stages: Annotated[list[Stage], Field(min_length=1, max_length=5)] | None = Field(
        default=None, description="Lifecycle stages of the last refresh")
    tiers: Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]],
                     Field(min_length=1, max_length=20)] | None = Field(default=None, description="Current tiers")
    min_available: Annotated[int, Field(ge=-(10**12), le=10**12)] | None = Field(
        default=None, description="Available points at least this (live)")
    max_available: Annotated[int, Field(ge=-(10**12), le=10**12)] | None = Field(
        default=None, description="Available points at most this (live)")
    attributes: Annotated[dict[Annotated[str, Field(min_length=1, max_length=100)], AttributeValue],
                          Field(min_length=1, max_length=20)] | None = Field(
        default=None, description="The member's own attributes, each equal to the value given "
        "(e.g. {\"city\": \"Berlin\"})")
    age_bands: Annotated[list[AgeBand], Field(min_length=1, max_length=7)] | None = Field(
        default=None, description="Age bands from the birthday, on the day of the request (members without a "
        "birthday never match)")


class AudienceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    filter: AudienceFilter = Field(default_factory=AudienceFilter)


class Audience(BaseModel):
    id: str = Field(examples=["aud_3f9c2a7d1e4b8c60"])
    name: str
    filter: AudienceFilter
    created_at: datetime
    updated_at: datetime


class AudienceWithSize(Audience):
    members: int = Field(description="Members matching now (segments and stages: as of the last refresh)")
    as_of: datetime | None = Field(description="The refresh segment and stage criteria read")


class AudienceList(BaseModel):
    data: list[Audience]


class AudienceMember(BaseModel):
    member_id: str
    segment: Segment | None
    stage: Stage | None
    tier: str | None
    available: int


class AudienceMemberPage(BaseModel):
    data: list[AudienceMember]
    next_cursor: str | None
    has_more: bool
