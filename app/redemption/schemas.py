"""Checkout redemption: quotes, direct redeems, holds, refunds."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.ledger.schemas import Balance, MemberRef, Metadata, Points
from app.money import CurrencyCode, DecimalText

Reference = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Money = Annotated[DecimalText, Field(ge=0, le=Decimal("1e12"), allow_inf_nan=False,
                                 description="Decimal string in the program's currency, e.g. \"49.90\"")]


class QuoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: MemberRef
    order_total: Money
    currency: Annotated[CurrencyCode, Field(min_length=3, max_length=3)] | None = Field(
        default=None, description="Must equal the program's currency when given")


class Quote(BaseModel):
    member_id: str
    currency: str
    order_total: DecimalText
    available: int
    max_points: int = Field(description="Most points usable on this order (0: none)")
    amount: DecimalText = Field(description="Money value of max_points")
    points_per_currency_unit: int
    limited_by: Literal["available", "share_of_order", "increment", "min_redeem_points", "none"]


class RedeemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: MemberRef
    points: Points
    reference: Reference | None = Field(default=None, description="Your order id")
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    order_total: Money | None = Field(default=None, description="When given, max_redeem_share_of_order applies")
    metadata: Metadata = Field(default_factory=dict)


class HoldCreate(RedeemCreate):
    expires_in_seconds: Annotated[int, Field(ge=1, le=10**9)] | None = Field(
        default=None, description="Default: the program's hold_default_seconds (900); at most hold_max_seconds")


class CaptureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: Annotated[int, Field(ge=1, le=10**12, strict=True)] | None = Field(
        default=None, description="Points to capture (default all held); the rest goes back to available. A partial "
        "capture follows the program's redemption rules (min_redeem_points, redeem_increment); to capture nothing, "
        "void the hold")


class VoidRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class RefundCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: Points
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    metadata: Metadata = Field(default_factory=dict)


HoldStatus = Literal["open", "captured", "voided", "expired"]


class Hold(BaseModel):
    id: str = Field(examples=["hold_8a41c0d2e97f3b15"])
    member_id: str
    points: int
    captured_points: int
    status: HoldStatus = Field(description="An open hold past expires_at reads as expired")
    reference: str | None
    description: str | None
    amount: DecimalText = Field(description="Money value of the held points")
    currency: str
    expires_at: datetime
    created_at: datetime
    resolved_at: datetime | None
    hold_entry_id: str
    resolve_entry_id: str | None
    redemption_id: str | None


class Refund(BaseModel):
    id: str = Field(examples=["rfd_0c7d55a1b2e94f38"])
    entry_id: str
    points: int
    available_points: int = Field(description="Came back spendable, into the lots they came from")
    expired_points: int = Field(description="Came back from lots that expired meanwhile: credited as expired")
    created_at: datetime


class Redemption(BaseModel):
    id: str = Field(examples=["rdm_51e0b9c4d3a27f86"])
    member_id: str
    points: int
    refunded_points: int
    amount: DecimalText
    currency: str
    reference: str | None
    entry_id: str
    hold_id: str | None
    created_at: datetime
    refunds: list[Refund]


class HoldWithBalance(BaseModel):
    hold: Hold
    balance: Balance


class RedemptionWithBalance(BaseModel):
    redemption: Redemption
    balance: Balance


class CaptureResult(BaseModel):
    hold: Hold
    redemption: Redemption | None
    balance: Balance


class RefundResult(BaseModel):
    refund: Refund
    redemption: Redemption
    balance: Balance


