"""HTTP shapes of the rewards catalogue, exchanges and vouchers.

A reward is one of four kinds; the fields that describe what it gives depend on the kind (``RewardCreate``'s
validator is the rule, applied to a creation and to a reward as a PATCH leaves it):

* ``voucher``: money off an order, ``amount_off`` (in the program's currency) or ``percent_off`` (one of them), with
  an optional ``min_spend``;
* ``product``: a free item at the POS, ``sku``;
* ``gift``: an item the merchant ships (an exchange may carry the ``delivery`` details);
* ``partner_code``: codes uploaded in bulk (cinema tickets...), one handed to each exchange; its ``stock`` is the
  number of codes not handed out yet, so it is never set by hand.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.earning.rules import Channel, Code, Money
from app.ledger.schemas import Balance, MemberRef, Metadata, Points
from app.money import DecimalText
from app.tiers.policy import TierName

RewardKind = Literal["voucher", "product", "gift", "partner_code"]
LimitPeriod = Literal["day", "month", "ever"]
VoucherStatus = Literal["issued", "redeemed", "expired", "cancelled"]
CHANNELS: list[Channel] = ["pos", "online", "app"]

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=2000)]
Percent = Annotated[DecimalText, Field(gt=0, le=100, decimal_places=4, description="0 < p <= 100")]
Stock = Annotated[int, Field(ge=1, le=10**12, strict=True)]
Reference = Annotated[str, StringConstraints(min_length=1, max_length=200)]
PartnerCode = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7E]+$")]


class RewardLimit(BaseModel):
    """At most ``count`` vouchers of the reward per member per ``period``: the local ``day`` or ``month`` (the
    program's time zone) or ``ever``. Cancelled vouchers do not count."""

    model_config = ConfigDict(extra="forbid")

    count: Annotated[int, Field(ge=1, le=1_000_000, strict=True)]
    period: LimitPeriod


class RewardFields(BaseModel):
    """What a reward says, whatever its kind (all of it may change by PATCH; the kind never does)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Text | None = None
    cost_points: Points = Field(description="Points one exchange costs")
    amount_off: Annotated[Money, Field(gt=0)] | None = Field(
        default=None, description="kind voucher: money off an order, in the program's currency")
    percent_off: Percent | None = Field(default=None, description="kind voucher: percentage off an order")
    min_spend: Money | None = Field(default=None, description="kind voucher: the smallest order it applies to")
    sku: Code | None = Field(default=None, description="kind product: the free item")
    stock: Stock | None = Field(
        default=None, description="Units that can be exchanged (null: unlimited). Partner codes: set by uploads")
    low_stock_threshold: Annotated[int, Field(ge=0, le=10**12, strict=True)] | None = Field(
        default=None, description="An exchange that leaves exactly this many units emits reward.stock_low")
    limit: RewardLimit | None = Field(default=None, description="Per member: null for no limit")
    available_from: AwareDatetime | None = None
    available_until: AwareDatetime | None = Field(default=None, description="Exclusive")
    min_tier: TierName | None = Field(
        default=None, description="Members below this tier of the program's ladder are not eligible")
    channels: list[Channel] = Field(default_factory=lambda: list(CHANNELS), min_length=1, max_length=3,
                                    description="Where its vouchers can be used")
    voucher_valid_days: Annotated[int, Field(ge=1, le=3650, strict=True)] | None = Field(
        default=None, description="An issued voucher expires this many days later (null: never)")
    cancel_window_hours: Annotated[int, Field(ge=1, le=8760, strict=True)] | None = Field(
        default=None, description="A redeem key may cancel a voucher this long after its issue (admin keys: any "
        "time; null: admin keys only)")
    refund_on_expiry: bool = Field(default=False, description="An expired voucher gives its points back")
    metadata: Metadata = Field(default_factory=dict)


class RewardCreate(RewardFields):
    kind: RewardKind

    @model_validator(mode="after")
    def _kind_terms(self) -> RewardCreate:
        problems: list[str] = []
        money = [f for f in ("amount_off", "percent_off", "min_spend") if getattr(self, f) is not None]
        if self.kind == "voucher":
            if (self.amount_off is None) == (self.percent_off is None):
                problems.append("a voucher takes exactly one of amount_off and percent_off")
        elif money:
            problems.append(f"{', '.join(money)}: only for kind voucher")
        if self.kind == "product" and self.sku is None:
            problems.append("a product needs its sku")
        if self.kind != "product" and self.sku is not None:
            problems.append("sku: only for kind product")
        if self.kind == "partner_code" and self.stock is not None:
            problems.append("stock: a partner-code reward's stock is its unused codes (upload them)")
        if self.available_from and self.available_until and self.available_until <= self.available_from:
            problems.append("available_until must be after available_from")
        if len(set(self.channels)) != len(self.channels):
            problems.append("channels: each at most once")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RewardPatch(BaseModel):
    """Fields to change; those left out keep their value, null clears one (stock null: unlimited)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Text | None = None
    cost_points: Points | None = None
    amount_off: Annotated[Money, Field(gt=0)] | None = None
    percent_off: Percent | None = None
    min_spend: Money | None = None
    sku: Code | None = None
    stock: Stock | None = None
    low_stock_threshold: Annotated[int, Field(ge=0, le=10**12, strict=True)] | None = None
    limit: RewardLimit | None = None
    available_from: AwareDatetime | None = None
    available_until: AwareDatetime | None = None
    min_tier: TierName | None = None
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=3)
    voucher_valid_days: Annotated[int, Field(ge=1, le=3650, strict=True)] | None = None
    cancel_window_hours: Annotated[int, Field(ge=1, le=8760, strict=True)] | None = None
    refund_on_expiry: bool | None = None
    metadata: Metadata | None = None


ReasonCode = Literal["reward_unavailable", "member_suspended", "member_closed", "not_eligible", "limit_reached",
                     "out_of_stock", "insufficient_points"]


class RewardReason(BaseModel):
    code: ReasonCode = Field(description="The error code an exchange would answer")
    detail: str


class RewardForMember(BaseModel):
    member_id: str
    available_points: int
    affordable: bool = Field(description="The member has the points")
    missing_points: int = Field(description="Points the member lacks (0 when affordable)")
    eligible: bool = Field(description="The member's tier, status and the per-member limit allow it")
    can_exchange: bool = Field(description="An exchange now would succeed (no reason against it)")
    reasons: list[RewardReason] = Field(description="Why not, in the order an exchange checks them")


class Reward(BaseModel):
    id: str = Field(examples=["rwd_4c1e0b7a9d2f3e65"])
    name: str
    description: str | None
    kind: RewardKind
    status: Literal["active", "archived"]
    cost_points: int
    currency: str | None = Field(description="Of amount_off and min_spend (the program's)")
    amount_off: DecimalText | None
    percent_off: DecimalText | None
    min_spend: DecimalText | None
    sku: str | None
    stock: int | None = Field(description="Units left (null: unlimited); partner codes: codes not handed out")
    low_stock_threshold: int | None
    limit: RewardLimit | None
    available_from: datetime | None
    available_until: datetime | None
    min_tier: str | None
    channels: list[Channel]
    voucher_valid_days: int | None
    cancel_window_hours: int | None
    refund_on_expiry: bool
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    for_member: RewardForMember | None = Field(description="With ?member_id=: what that member may do")


class RewardPage(BaseModel):
    data: list[Reward]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at the end")


class Delivery(BaseModel):
    """Where a gift goes. Personal data: shown only in the member's wallet and the exchange's answer, never in
    events, and erased with the member's personal data."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    address_lines: list[Name] = Field(min_length=1, max_length=4)
    postal_code: Annotated[str, StringConstraints(max_length=32)] | None = None
    city: Name
    region: Name | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = Field(description="ISO 3166-1 alpha-2")
    phone: Annotated[str, StringConstraints(max_length=64)] | None = None
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


class ExchangeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: MemberRef
    delivery: Delivery | None = Field(default=None, description="Gifts only: where to ship it")


class VoucherRefund(BaseModel):
    entry_id: str
    points: int
    available_points: int = Field(description="Came back spendable, into the lots they came from")
    expired_points: int = Field(description="Came back from lots that expired meanwhile: credited as expired")


class Voucher(BaseModel):
    id: str = Field(examples=["vch_9e2b6c0d4a1f7358"])
    code: str = Field(examples=["K7QM-3XDP-W9TF"])
    member_id: str
    reward_id: str
    name: str = Field(description="The reward's name at the exchange")
    kind: RewardKind
    status: VoucherStatus = Field(description="An issued voucher past expires_at reads as expired")
    points: int = Field(description="What the exchange cost")
    currency: str | None
    amount_off: DecimalText | None
    percent_off: DecimalText | None
    min_spend: DecimalText | None
    sku: str | None
    channels: list[Channel]
    issued_at: datetime
    expires_at: datetime | None
    cancellable_until: datetime | None = Field(description="Until then a redeem key may cancel it")
    resolved_at: datetime | None
    reference: str | None = Field(description="Redeemed: the order it was used on")
    entry_id: str = Field(description="The exchange entry")
    refund: VoucherRefund | None = Field(description="Cancelled, or expired with refund_on_expiry: the points back")
    partner_code: str | None = Field(description="Partner-code rewards: the code (only in the member's wallet and "
                                     "the exchange's answer)")
    delivery: Delivery | None = Field(description="Gifts: where it goes (only in the member's wallet and the "
                                      "exchange's answer)")


class VoucherWithBalance(BaseModel):
    voucher: Voucher
    balance: Balance


class VoucherResult(BaseModel):
    voucher: Voucher


class VoucherPage(BaseModel):
    data: list[Voucher]
    next_cursor: str | None


class VoucherRedeem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: Reference = Field(description="Your order id")
    member_id: MemberRef | None = Field(default=None, description="When given, the voucher must be this member's")
    channel: Channel | None = Field(default=None, description="When given, the voucher must be valid there")
    order_total: Money | None = Field(default=None, description="When given, checked against min_spend")


class VoucherCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None


class PartnerCodesUpload(BaseModel):
    """JSON form of an upload (or send ``text/csv``: one code per line, the first column; a header ``code`` is
    skipped)."""

    model_config = ConfigDict(extra="forbid")

    codes: list[PartnerCode] = Field(min_length=1, max_length=10_000)


class PartnerCodesResult(BaseModel):
    reward_id: str
    received: int
    added: int = Field(description="New codes")
    duplicates: int = Field(description="Codes the reward had already (uploads are idempotent per code)")
    stock: int = Field(description="Codes not handed out yet")


class OutstandingByReward(BaseModel):
    reward_id: str
    name: str
    kind: RewardKind
    count: int
    points: int
    value: DecimalText | None = Field(description="Amount-off vouchers: their total; else null")


class OutstandingVouchers(BaseModel):
    currency: str
    count: int = Field(description="Vouchers issued and not yet redeemed, cancelled or expired")
    points: int = Field(description="Points they cost")
    value: DecimalText = Field(description="Money off still to be granted by amount-off vouchers")
    percent_off_count: int = Field(description="Percentage vouchers among them (no value until used)")
    by_reward: list[OutstandingByReward]

