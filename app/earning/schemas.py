"""HTTP shapes of earning: rule versions, purchases, returns, events. The rule set itself and the award
breakdown are the pure models of ``app.earning.rules``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.earning.rules import (
    Award,
    Channel,
    ClawbackResult,
    Code,
    EventAward,
    Money,
    PurchaseLine,
    ReturnedLine,
    RuleSet,
)
from app.ledger.schemas import Balance, MemberRef, Metadata
from app.money import CurrencyCode
from app.rewards.codes import VoucherCode

OrderId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class EarnRulesUpdate(RuleSet):
    """A new version of the program's rule set."""

    effective_from: AwareDatetime | None = Field(
        default=None, description="Purchases occurring from this time on use this version; default now")


class EarnRuleVersion(BaseModel):
    version: int = Field(description="0 is the built-in default (1 point per currency unit) before any PUT")
    effective_from: datetime | None
    created_at: datetime | None
    rules: RuleSet


class EarnRuleVersionList(BaseModel):
    data: list[EarnRuleVersion]


class PurchaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: MemberRef
    order_id: OrderId = Field(description="Your order id; unique per program (a natural idempotency key)")
    occurred_at: AwareDatetime | None = Field(default=None, description="When the purchase happened; default now")
    currency: Annotated[CurrencyCode, Field(min_length=3, max_length=3)]
    total: Money = Field(description="Order total, all tenders included")
    paid_with_points: Money = Field(default=Decimal(0), description="Part of the total paid with points")
    channel: Channel = "pos"
    store_id: Code | None = None
    lines: list[PurchaseLine] = Field(min_length=1, max_length=5000)
    # issue-14: vouchers used on the order, redeemed in the purchase's transaction (or the purchase is refused)
    voucher_codes: list[VoucherCode] = Field(
        default_factory=list, max_length=20, description="Vouchers used on this order: each is redeemed with the "
        "purchase, or the purchase is refused and nothing is written (ignored by quotes)")

    @field_validator("voucher_codes")
    @classmethod
    def _distinct_codes(cls, codes: list[str]) -> list[str]:
        if len(set(codes)) != len(codes):
            raise ValueError("each voucher at most once")
        return codes


class PurchaseQuoteRequest(PurchaseCreate):
    """A purchase to evaluate without posting it: no order id needed."""

    order_id: OrderId | None = None  # type: ignore[assignment]


class PurchaseQuote(BaseModel):
    member_id: str
    points: int
    award: Award
    rule_version: int


class LotInfo(BaseModel):
    id: str = Field(examples=["lot_6e0f2d9a41c3b857"])
    points: int
    available_at: datetime
    expires_at: datetime | None


class ReturnInfo(BaseModel):
    return_id: str
    points: int = Field(description="Points clawed back")
    shortfall: int = Field(description="Points that could not be taken back (clamp policy)")
    created_at: datetime


class Purchase(BaseModel):
    order_id: str
    member_id: str
    occurred_at: datetime
    points: int
    status: Literal["pending", "available", "none"] = Field(
        description="Where the points are now: pending (return window), available, or none awarded")
    clawed_back_points: int
    rule_version: int
    entry_id: str | None
    lot: LotInfo | None
    award: Award
    returns: list[ReturnInfo]


class PurchaseResult(BaseModel):
    purchase: Purchase
    balance: Balance
    replayed: bool = Field(default=False, description="True when this order_id had been posted before")


class ReturnCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    return_id: ClientId = Field(description="Your return id; unique per purchase")
    lines: list[ReturnedLine] | None = Field(default=None, min_length=1, max_length=5000)
    amount: Annotated[Money, Field(gt=0)] | None = Field(default=None, description="A refunded amount instead of lines")


class ReturnResult(BaseModel):
    order_id: str
    return_id: str
    points: int = Field(description="Points clawed back by this return")
    shortfall: int = Field(description="Points the clamp policy could not take back")
    clawback: ClawbackResult
    balance: Balance
    replayed: bool = False


class EventCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: MemberRef
    event_id: ClientId = Field(description="Your id for this occurrence; unique per program")
    name: Code = Field(description="An event name of the rule set, e.g. survey_completed")
    occurred_at: AwareDatetime | None = None
    metadata: Metadata = Field(default_factory=dict)


class EventResult(BaseModel):
    event_id: str
    member_id: str
    name: str
    points: int
    evaluation: EventAward
    entry_id: str | None
    balance: Balance
    replayed: bool = False
