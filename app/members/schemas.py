"""Members: identified by the program's own customer id."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from app.json_limits import MAX_JSON_DEPTH, FreeFormObject
from app.ledger.schemas import Balance

MemberStatus = Literal["active", "suspended", "closed"]
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _date_string(value: Any) -> Any:
    """A calendar date is a string ``YYYY-MM-DD`` (or a ``date`` in Python), never a number (pydantic alone
    would take ``0`` as 1970-01-01) nor a date-time."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("date_type", "Input should be a valid calendar date YYYY-MM-DD") from None
    raise PydanticCustomError("date_type", "Input should be a date as a string YYYY-MM-DD")


IsoDate = Annotated[date, BeforeValidator(_date_string)]


class MemberUpsert(BaseModel):
    """Fields present in the body are set (``null`` clears); fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    phone: Annotated[str, StringConstraints(max_length=40, pattern=r"^[0-9+()\-. ]{3,40}$")] | None = None
    birthday: IsoDate | None = None
    status: MemberStatus | None = None
    attributes: FreeFormObject | None = Field(
        default=None, description=f"Free-form JSON object, at most {MAX_JSON_DEPTH} levels deep")


class Member(BaseModel):
    member_id: str
    name: str | None
    email: str | None
    phone: str | None
    birthday: date | None
    status: MemberStatus
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    tier: str | None = Field(default=None, description="Current tier, if the program has tiers")


# --- merging members (issue 15) -------------------------------------------------------------------------------------


class MemberMergeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_member: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@+\-]+$")] = (
        Field(alias="from", description="The member merged away: its points, lots and tier move here, and its id "
              "becomes an alias of this member", examples=["card-2002"]))


class Merge(BaseModel):
    member_id: str = Field(description="The surviving member")
    merged_member_id: str = Field(description="The member merged away: now an alias of member_id")
    entry_id: str | None = Field(description="The merge entry (none when there was nothing to move)")
    available_points: int = Field(description="Available points moved (negative: a debt moved)")
    pending_points: int = Field(description="Pending points moved, with their activation times")
    tier_before: str | None = Field(description="The survivor's tier before the merge")
    tier: str | None = Field(description="The higher tier of the two, now the survivor's")
    created_at: datetime


class MergeResult(BaseModel):
    merge: Merge
    balance: Balance = Field(description="The survivor's balance")
    replayed: bool = Field(default=False, description="True when this member had been merged before")
