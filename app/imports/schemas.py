"""One row per member of a legacy export: profile, opening balance as lots, tier. The same model reads a JSONL
line, a CSV row (``lots`` and ``attributes`` as JSON text) and an item of ``POST /v1/imports``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.json_limits import FreeFormObject
from app.ledger.schemas import MemberRef
from app.members.schemas import IsoDate, MemberStatus

MAX_LOTS = 1000
MAX_ROWS_PER_REQUEST = 10_000


class ImportLot(BaseModel):
    """Points the member had in the legacy system, with their dates."""

    model_config = ConfigDict(extra="forbid")

    points: Annotated[int, Field(ge=1, le=10**12, strict=True)]
    earned_at: AwareDatetime = Field(description="When the legacy system credited them (not in the future)")
    expires_at: AwareDatetime | None = Field(
        default=None, description="When they expire (exclusive; after earned_at and after the import); null: never")
    available_at: AwareDatetime | None = Field(
        default=None, description="Still in a return window until then: imported as pending points, activated by the "
        "usual job. Default: available at once")

    @model_validator(mode="after")
    def _dates(self) -> ImportLot:
        if self.expires_at is not None and self.expires_at <= self.earned_at:
            raise ValueError("expires_at must be after earned_at")
        if self.available_at is not None and self.expires_at is not None and self.available_at >= self.expires_at:
            raise ValueError("available_at must be before expires_at")
        return self


class ImportRow(BaseModel):
    """A member to bring over. Rows are idempotent: the same row imported again changes nothing."""

    model_config = ConfigDict(extra="forbid")

    member_id: MemberRef
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    phone: Annotated[str, StringConstraints(max_length=40, pattern=r"^[0-9+()\-. ]{3,40}$")] | None = None
    birthday: IsoDate | None = None
    status: MemberStatus = "active"
    attributes: FreeFormObject = Field(default_factory=dict)
    lots: list[ImportLot] = Field(default_factory=list, max_length=MAX_LOTS,
                                  description="The opening balance, one item per legacy lot")
    tier: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="A tier of the program's tier configuration in force")
    tier_valid_until: AwareDatetime | None = Field(default=None, description="Until when the tier holds; null: "
                                                   "until the evaluation job decides")

    @model_validator(mode="after")
    def _tier(self) -> ImportRow:
        if self.tier_valid_until is not None and self.tier is None:
            raise ValueError("tier_valid_until needs a tier")
        return self


class ImportRejection(BaseModel):
    line: int = Field(description="The row's line in the file (1 = the first line; CSV: the header is line 1), or "
                      "its position in the request (1 = the first)")
    member_id: str | None = Field(description="The row's member_id, when it could be read")
    code: str = Field(description="An error code (README Errors): validation_error, malformed_request, "
                      "member_exists, import_conflict")
    detail: str
    errors: list[dict[str, Any]] | None = Field(default=None, description="validation_error: what is wrong, by field")


class ImportReport(BaseModel):
    rows: int = Field(description="Rows read")
    created: int = Field(description="Members imported by this run")
    replayed: int = Field(description="Rows imported before (the same row again): nothing changed")
    rejected: int = Field(description="Rows refused: nothing of them was written")
    points: int = Field(description="Points of the opening balances imported by this run")
    rejections: list[ImportRejection] = Field(description="Why each refused row was refused")
