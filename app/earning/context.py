"""The typed contracts between the earning use cases and their SQL: what ``ledger.purchase_context``,
``ledger.return_context`` and ``ledger.event_context`` answer (migrations/functions/80_purchases.sql and
85_events.sql). The quote and the post of a purchase read the same context. tests/test_sql_home.py checks that
each dataclass has exactly the attributes of its SQL type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Self


class _FromRecord:
    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Self:
        return cls(**{f.name: record[f.name] for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PurchaseContext(_FromRecord):
    member_pk: int | None
    member_status: str | None
    birthday: date | None
    facts_version: int | None
    first_purchase: bool
    earned_today: int
    earned_this_month: int
    tier_then: str | None
    tier: str | None
    tier_valid_until: datetime | None
    manual_tier: str | None
    manual_until: datetime | None
    metric_points: Decimal
    metric_spend: Decimal
    metric_purchases: int
    existing_hash: bytes | None
    rule_counts: Any
    segment: str | None
    stage: str | None


@dataclass(frozen=True, slots=True)
class ReturnContext(_FromRecord):
    purchase_pk: int
    member_pk: int
    facts_version: int
    purchase: Any
    award: Any
    earlier_requests: list[Any]
    existing_hash: bytes | None


@dataclass(frozen=True, slots=True)
class EventContext(_FromRecord):
    member_pk: int | None
    facts_version: int | None
    count_today: int
    count_this_month: int
    count_ever: int
    existing_member_ref: str | None
    existing_name: str | None
