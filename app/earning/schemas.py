"""HTTP shapes of earning: rule versions, purchases, returns, events. The rule set itself and the award
breakdown are the pure models of ``app.earning.rules``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

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


def _readable_in_a_path(value: str) -> str:
    """issue-12 F9: an order id must be readable back as ``GET /v1/purchases/{order_id}``. A ``/`` (also sent as
    ``%2F``, which the server decodes before routing) or a ``\\`` (browsers read it as ``/``) splits the path,
    ``.`` and ``..`` are removed by clients as dot segments, and control characters are not sent at all: such an
    id could be posted but never read or returned, so it is refused at posting."""
    if value in (".", "..") or any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise PydanticCustomError(
            "order_id_unreadable", "an order id must not contain '/', '\\' or control characters, nor be '.' or '..'"
            " (it must be readable back as GET /v1/purchases/{order_id})")
    return value


OrderId = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_readable_in_a_path)]
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

    @field_validator("paid_with_points")
    @classmethod
    def _points_within_total(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        # issue-12 F4: checked with the request's validation (422 naming the field), not only by the
        # evaluator's own model, where it surfaced as an unhandled error (500).
        total = info.data.get("total")
        if total is not None and value > total:
            raise PydanticCustomError("paid_with_points_above_total",
                                      "paid_with_points must not exceed total ({paid} > {total})",
                                      {"paid": str(value), "total": str(total)})
        return value


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
    occurred_at: datetime = Field(description="When the return happened (default: when it was recorded)")


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
    occurred_at: AwareDatetime | None = Field(
        default=None, description="When the return happened (an offline POS sends returns late); default now. Not "
        "before the purchase, not in the future. The clawback entry is dated then, and the return window is judged "
        "then: a return inside it takes the points from the purchase's pending points")


class ReturnResult(BaseModel):
    order_id: str
    return_id: str
    occurred_at: datetime = Field(description="When the return happened")
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


# --- offline tills: a batch of purchases and returns (POST /v1/purchases/batch) -------------------------------------

MAX_BATCH_ITEMS = 1000


class BatchPurchase(PurchaseCreate):
    """A purchase of a batch: the body of ``POST /v1/purchases`` with ``"type": "purchase"``."""

    type: Literal["purchase"]
    voucher_codes: list[VoucherCode] = Field(
        default_factory=list, max_length=0, description="Not in a batch: vouchers are redeemed at the till, online "
        "(POST /v1/purchases), where a failed lookup of a code is bounded per key")


class BatchReturn(ReturnCreate):
    """A return of a batch: the body of ``POST /v1/purchases/{order_id}/returns`` with ``"type": "return"`` and the
    ``order_id``."""

    type: Literal["return"]
    order_id: OrderId = Field(description="The purchase returned (posted before, or earlier in this batch)")


BatchItem = Annotated[BatchPurchase | BatchReturn, Field(discriminator="type")]


class PurchaseBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchItem] = Field(
        min_length=1, max_length=MAX_BATCH_ITEMS,
        description=f"Up to {MAX_BATCH_ITEMS} purchases and returns, in any order: each member's are applied in "
        "occurred_at order")


class BatchItemProblem(BaseModel):
    """Why an item was refused: the problem the single request would have answered (its extra fields included)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    request_id: str | None = None


class BatchItemResult(BaseModel):
    index: int = Field(description="The item's position in the request")
    type: Literal["purchase", "return"]
    order_id: str
    return_id: str | None = None
    status: Literal["created", "replayed", "refused"]
    http_status: int = Field(description="What the single request would have answered: 201, 200 (replayed), or the "
                             "problem's status")
    result: PurchaseResult | ReturnResult | None = Field(
        default=None, description="The single request's answer (created or replayed)")
    problem: BatchItemProblem | None = Field(default=None, description="Refused: the single request's problem")


class PurchaseBatchResult(BaseModel):
    created: int
    replayed: int
    refused: int
    results: list[BatchItemResult] = Field(description="One per item, in the request's order")
