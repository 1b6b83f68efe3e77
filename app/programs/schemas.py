"""Programs (tenants) and their API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.money import is_currency

Scope = Literal["earn", "redeem", "read", "admin"]


class ProgramCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    currency: Annotated[str, Field(description="ISO 4217 code", examples=["EUR"])]
    timezone: Annotated[str, Field(description="IANA time zone", examples=["Europe/Berlin"])] = "UTC"
    settings: dict[str, Any] = Field(default_factory=dict)

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
    settings: dict[str, Any]
    created_at: datetime


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
