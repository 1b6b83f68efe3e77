"""Members: identified by the program's own customer id."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MemberStatus = Literal["active", "suspended", "closed"]


class MemberUpsert(BaseModel):
    """Fields present in the body are set (``null`` clears); fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    phone: Annotated[str, StringConstraints(max_length=40, pattern=r"^[0-9+()\-. ]{3,40}$")] | None = None
    birthday: date | None = None
    status: MemberStatus | None = None
    attributes: dict[str, Any] | None = Field(default=None, description="Free-form JSON object")


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
