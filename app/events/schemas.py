"""HTTP shapes of the change feed and of webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints


class EventType(StrEnum):
    """Every type of change the service announces (tests/test_changes.py checks the SQL emits only these)."""

    POINTS_EARNED = "points.earned"
    POINTS_AVAILABLE = "points.available"
    POINTS_REDEEMED = "points.redeemed"
    POINTS_REFUNDED = "points.refunded"
    POINTS_REVERSED = "points.reversed"
    POINTS_ADJUSTED = "points.adjusted"
    POINTS_EXPIRED = "points.expired"
    POINTS_EXPIRING = "points.expiring"
    POINTS_TRANSFERRED_OUT = "points.transferred_out"  # issue-15: the sender's side of a transfer
    POINTS_TRANSFERRED_IN = "points.transferred_in"  # issue-15: the receiver's side
    HOLD_CREATED = "hold.created"
    HOLD_CAPTURED = "hold.captured"
    HOLD_VOIDED = "hold.voided"
    HOLD_EXPIRED = "hold.expired"
    PURCHASE_RETURNED = "purchase.returned"
    TIER_CHANGED = "tier.changed"
    MEMBER_CREATED = "member.created"
    MEMBER_UPDATED = "member.updated"
    MEMBER_ERASED = "member.erased"
    MEMBER_SEGMENT_CHANGED = "member.segment_changed"
    MEMBER_MERGED = "member.merged"  # issue-15: another member merged into this one
    REWARD_EXCHANGED = "reward.exchanged"
    REWARD_STOCK_LOW = "reward.stock_low"
    VOUCHER_ISSUED = "voucher.issued"
    VOUCHER_REDEEMED = "voucher.redeemed"
    VOUCHER_EXPIRED = "voucher.expired"
    VOUCHER_CANCELLED = "voucher.cancelled"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)


class Change(BaseModel):
    """One change, as the feed lists it and a webhook delivers it."""

    id: str = Field(description="Unique and stable: the `webhook-id` of its deliveries", examples=["evt_5c0e..."])
    type: EventType
    occurred_at: datetime = Field(description="When it happened (business time)")
    recorded_at: datetime
    member_id: str | None = Field(description="The member it is about (none: the program itself)")
    data: dict[str, Any] = Field(description="The objects in the shapes the API answers with")


class ChangePage(BaseModel):
    data: list[Change]
    next_cursor: str | None = Field(description="Pass as `after` for the next page (the same when nothing new)")
    has_more: bool = Field(description="More changes are there already: ask again at once")


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(min_length=8, max_length=2000)] = Field(examples=["https://crm.example/hook"])
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    event_types: list[EventType] = Field(default_factory=list, max_length=len(EventType),
                                         description="Types to deliver; empty: every type")
    enabled: bool = True


class WebhookEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(min_length=8, max_length=2000)] | None = None
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    event_types: list[EventType] | None = Field(default=None, max_length=len(EventType))
    enabled: bool | None = Field(default=None, description="Enabling a disabled endpoint clears its failure state")


class WebhookEndpoint(BaseModel):
    id: UUID
    url: str
    description: str | None
    event_types: list[EventType]
    enabled: bool
    disabled_reason: str | None = Field(description="Why the service disabled it (failing too long)")
    failing_since: datetime | None = Field(description="First failed attempt since the last success")
    previous_secret_valid_until: datetime | None = Field(
        description="After a rotation, the old secret still signs deliveries until then")
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(description="The signing secret (whsec_...). Shown once, never again.")


class WebhookEndpointList(BaseModel):
    data: list[WebhookEndpoint]


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: Annotated[int, Field(ge=0, le=7 * 86400, strict=True)] = Field(
        default=86400, description="How long the old secret keeps signing deliveries too (default one day)")


class SecretRotated(BaseModel):
    secret: str = Field(description="The new signing secret. Shown once.")
    previous_secret_valid_until: datetime | None


class WebhookAttempt(BaseModel):
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; none: no answer")
    latency_ms: int | None
    response_snippet: str | None
    error: str | None


class WebhookDelivery(BaseModel):
    id: str
    event_id: str
    event_type: str | None = Field(description="None: the event is past the feed's retention")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None = Field(description="When it is tried again (pending)")
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[WebhookAttempt] = Field(description="Every attempt, newest first (at most 20)")


class WebhookDeliveryPage(BaseModel):
    data: list[WebhookDelivery]
    next_cursor: str | None


class DeliveryRecover(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime = Field(description="Deliveries made since then that failed for good are sent again")


class DeliveriesRequeued(BaseModel):
    requeued: int = Field(description="How many deliveries are due again")
