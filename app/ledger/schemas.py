"""Request and response models of the ledger core."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from app.json_limits import MAX_JSON_DEPTH, FreeFormObject

# One operation moves at most a trillion points: far beyond any programme, far below int64 overflow
# of a balance.
MAX_POINTS = 1_000_000_000_000

MemberRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@+\-]+$"),
]
# strict: a JSON boolean or a string is not a number of points
Points = Annotated[int, Field(ge=1, le=MAX_POINTS, strict=True, description="Whole points, at most 10^12")]
SignedPoints = Annotated[
    int, Field(ge=-MAX_POINTS, le=MAX_POINTS, strict=True, description="Whole points, non-zero, |points| <= 10^12")
]
ExternalRef = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# issue-12 F4: at most MAX_JSON_DEPTH levels deep (app/json_limits.py); deeper is 422, never a 500.
Metadata = Annotated[FreeFormObject, Field(description="Free-form JSON object, stored with the entry, at most "
                                                       f"{MAX_JSON_DEPTH} levels deep")]
Account = Literal["available", "pending", "held", "issued", "redeemed", "expired", "adjustments"]


class Balance(BaseModel):
    member_id: str
    available: int = Field(description="Spendable now")
    pending: int = Field(description="Earned, not yet spendable (return window)")
    held: int = Field(description="Reserved by open checkout holds")
    lifetime_earned: int = Field(description="Net points granted by earning and adjustments")
    lifetime_redeemed: int = Field(description="Net points spent")
    next_expiry_at: datetime | None = Field(default=None, description="When the next points expire")
    next_expiry_points: int = Field(default=0, description="How many points expire then")
    tier: str | None = Field(default=None, description="Current tier (null until the first purchase or evaluation)")


_NUMBER = re.compile(r"^\s*[-+]?[0-9]+(\.[0-9]*)?\s*$")


def _not_a_number(value: Any) -> Any:
    """An instant in a query is an ISO 8601 date-time with its offset; pydantic alone would also take a number as
    seconds since 1970 (``as_of=0``), which the documented ``date-time`` format does not allow."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 date-time with its offset")
    return value


# An instant a client names in a query (as_of, since, until): ISO 8601 with its offset, never a number.
Instant = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]


class BalanceAsOf(BaseModel):
    """A member's balances as recorded by `as_of`, from the ledger's postings alone (README "Balances as of an
    instant")."""

    member_id: str
    as_of: datetime = Field(description="The instant: entries recorded at or before it count")
    available: int = Field(description="Spendable then")
    pending: int = Field(description="Earned, not yet spendable then (return window)")
    held: int = Field(description="Reserved by open checkout holds then")
    expired: int = Field(description="Points expired by then (all time)")
    lifetime_earned: int = Field(description="Net points granted by then")
    lifetime_redeemed: int = Field(description="Net points spent by then")
    tier: str | None = Field(description="The tier last recorded by then (null before the first)")


class Liability(BaseModel):
    """The programme's outstanding points as recorded by `as_of`: what its members could still spend."""

    as_of: datetime
    available: int
    pending: int
    held: int
    outstanding: int = Field(description="available + pending + held")
    members: int = Field(description="Members enrolled by then")


class Posting(BaseModel):
    account: Account
    points: int = Field(description="Signed: positive credits the account")


# Public ids are opaque: `<prefix>_<16 hex digits>`, revealing no count (see migrations/functions/00_base.sql).
EntryId = Annotated[str, StringConstraints(pattern=r"^ent_[0-9a-f]{16}$")]


class Entry(BaseModel):
    id: str = Field(description="Opaque entry id", examples=["ent_3f9c2a7d1e4b8c60"])
    kind: str
    member_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    external_ref: str | None
    description: str | None
    metadata: dict[str, Any]
    reverses_entry_id: str | None
    reversed_by_entry_id: str | None
    postings: list[Posting]


class EntryWithBalance(BaseModel):
    entry: Entry
    balance: Balance


class AdjustmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: MemberRef
    points: SignedPoints
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    occurred_at: AwareDatetime | None = Field(default=None, description="Business time; default now")
    external_ref: ExternalRef | None = Field(default=None, description="Unique per program among adjustments")
    expires_at: AwareDatetime | None = Field(default=None, description="Expiry of credited points")
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("points")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("points must not be zero")
        return value


class ReverseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    metadata: Metadata = Field(default_factory=dict)


class ActivityPage(BaseModel):
    data: list[Entry]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null at the end")


class Discrepancy(BaseModel):
    check: str
    detail: dict[str, Any]


class VerifyReport(BaseModel):
    ok: bool
    checked: dict[str, int]
    discrepancies: list[Discrepancy]


# --- transfers (issue 15) -------------------------------------------------------------------------------------------


class TransferCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_member_id: MemberRef = Field(description="The sender: its available points, soonest-expiring first")
    to_member_id: MemberRef = Field(description="The receiver: the points arrive with the expiry they had")
    points: Points
    reference: ExternalRef | None = Field(default=None, description="Your own reference, stored with the transfer")
    description: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None


class Transfer(BaseModel):
    id: str = Field(description="Opaque transfer id", examples=["trf_0c4f9a1e27d3b865"])
    from_member_id: str
    to_member_id: str
    points: int
    reference: str | None
    description: str | None
    entry_id: str = Field(description="The one entry: the sender's available -points, the receiver's +points")
    created_at: datetime


class TransferResult(BaseModel):
    transfer: Transfer
    entry: Entry
    from_balance: Balance
    to_balance: Balance
