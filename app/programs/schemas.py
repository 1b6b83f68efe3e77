"""Programs (tenants) and their API keys."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.json_limits import FreeFormObject
from app.money import CurrencyCode, DecimalText, is_currency

Scope = Literal["earn", "redeem", "read", "admin"]


class ProgramSettings(BaseModel):
    """A program's policies. Stored as given; every field has a documented default."""

    model_config = ConfigDict(extra="forbid")

    pending_days: Annotated[int, Field(ge=0, le=365)] = Field(
        default=0, description="Return window: purchase points stay pending this many days after occurred_at")
    enrol_on_purchase: bool = Field(
        default=True, description="A purchase or event for an unknown member enrols it (else 404 member_not_found)")
    negative_balance_on_return: Literal["allow", "clamp"] = Field(
        default="allow", description="allow: a return may take available below zero (later earns repay it "
        "first); clamp: take what is there and record the shortfall")
    points_per_currency_unit_redeemed: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=100, description="Points worth 1.00 of the program's currency when redeemed")
    min_redeem_points: Annotated[int, Field(ge=0, le=10**12)] = Field(
        default=0, description="Smallest redemption or hold")
    redeem_increment: Annotated[int, Field(ge=1, le=10**9)] = Field(
        default=1, description="Redemptions and holds must be multiples of this")
    max_redeem_share_of_order: Annotated[DecimalText, Field(gt=0, le=1, max_digits=6, decimal_places=4)] = Field(
        default=Decimal("1"), description="Largest share of an order total payable with points (quotes, and "
        "redeems/holds that state an order_total)")
    hold_default_seconds: Annotated[int, Field(ge=1, le=31 * 86400)] = Field(
        default=900, description="Hold lifetime when the request does not say")
    hold_max_seconds: Annotated[int, Field(ge=1, le=31 * 86400)] = Field(
        default=7 * 86400, description="Longest hold lifetime a request may ask for")
    expiring_notice_days: Annotated[list[Annotated[int, Field(ge=1, le=365)]], Field(max_length=5)] = Field(
        default=[30, 7], description="Announce `points.expiring` this many days before points expire (each lot "
        "once per threshold; a lot already within a smaller threshold gets only that one). Empty: no notices")
    max_backdate_days: Annotated[int, Field(ge=1, le=36_600)] | None = Field(
        default=None, description="Purchases and events dated more than this many days ago are refused (422 "
        "occurred_at_too_old). Unset: no age limit, but never before the program's first earn rules")

    # Insight (issue 17; README "Insight"): the refresh's window and the lifecycle thresholds. Unset thresholds
    # are relative to the programme's median inter-purchase interval I: new 2 I, at risk 2 I, lapsed 4 I.
    insight_window_days: Annotated[int, Field(ge=1, le=3660)] = Field(
        default=365, description="RFM frequency and monetary count the purchases of the last N days")
    lifecycle_new_days: Annotated[int, Field(ge=1, le=3660)] | None = Field(
        default=None, description="A member is `new` this many days after the first purchase (or enrolment, "
        "without purchases). Unset: twice the programme's median inter-purchase interval")
    lifecycle_at_risk_days: Annotated[int, Field(ge=1, le=3660)] | None = Field(
        default=None, description="A member is `at_risk` this many days after the last purchase. Unset: twice "
        "the median inter-purchase interval")
    lifecycle_lapsed_days: Annotated[int, Field(ge=1, le=3660)] | None = Field(
        default=None, description="A member is `lapsed` this many days after the last purchase (and "
        "`reactivated` after a gap this long). Unset: four times the median inter-purchase interval")


    # issue-15: transfers between members (POST /v1/transfers)
    transfers_enabled: bool = Field(
        default=False, description="Members may transfer points to other members of the program (else 409 "
        "transfers_disabled)")
    transfer_min_points: Annotated[int, Field(ge=1, le=10**12)] = Field(
        default=1, description="Smallest transfer (else 422 transfer_amount_invalid)")
    transfer_max_points: Annotated[int, Field(ge=1, le=10**12)] | None = Field(
        default=None, description="Largest transfer (else 422 transfer_amount_invalid). Unset: no maximum")
    transfer_daily_limit_points: Annotated[int, Field(ge=1, le=10**12)] | None = Field(
        default=None, description="Most points a member may send per day of the program's time zone (else 422 "
        "transfer_limit_reached). Unset: no limit")

    @field_validator("expiring_notice_days")
    @classmethod
    def _thresholds(cls, value: list[int]) -> list[int]:
        return sorted(set(value), reverse=True)


class ProgramUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    settings: FreeFormObject | None = Field(
        default=None, description="Settings to change; fields left out keep their value")


class ProgramCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    currency: Annotated[CurrencyCode, Field(description="ISO 4217 code, case-insensitive", examples=["EUR"])]
    timezone: Annotated[str, Field(description="IANA time zone", examples=["Europe/Berlin"])] = "UTC"
    settings: FreeFormObject = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not is_currency(value):
            raise ValueError("not an ISO 4217 currency code")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError("not an IANA time zone")
        ZoneInfo(value)
        return value


class Program(BaseModel):
    id: UUID
    name: str
    currency: str
    timezone: str
    settings: ProgramSettings
    created_at: datetime


class ProgramSummary(BaseModel):
    id: UUID
    name: str
    currency: str
    timezone: str
    created_at: datetime
    active_keys: int
    active_admin_keys: int


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: Annotated[list[Scope], Field(min_length=1, description="`admin` implies every other scope")]


class ApiKey(BaseModel):
    id: UUID
    name: str
    prefix: str = Field(description="Public part of the key, shown in listings")
    scopes: list[Scope]
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The secret key. Shown once, never retrievable again.")


class ApiKeyList(BaseModel):
    data: list[ApiKey]
