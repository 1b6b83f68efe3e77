"""Expiration policies: when a lot of points stops being spendable. Pure functions; time is a parameter.

``expires_at`` is the first instant at which the points are no longer available (an exclusive end):
"valid through 31 March" is ``expires_at = 1 April 00:00`` in the programme's time zone. All calendar
arithmetic happens in that zone.

Kinds
-----
* ``none``: points never expire.
* ``fixed``: ``days`` or ``months`` after the lot's ``occurred_at`` (months keep the local wall-clock time and
  clamp to the month's last day: 31 Jan + 1 month = 28/29 Feb). With ``round_to_end_of_month`` the points
  stay valid through the end of that month (Square's "end of the month" rounding).
* ``end_of_period``: valid through the end of the calendar ``quarter`` or ``year`` that is ``periods`` periods
  after the one the lot was earned in (``periods = 0``: the end of the earning period itself).
* ``activity``: all of a member's points expire ``months`` after the member's last qualifying activity
  (``activities``: purchases and/or events); each activity pushes the date out. Lots earned under this
  policy carry no date of their own: they follow the member's activity date.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, tzinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PolicyKind = Literal["none", "fixed", "end_of_period", "activity"]
Activity = Literal["purchase", "event"]
_ALL_ACTIVITIES: list[Activity] = ["purchase", "event"]


class ExpirationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: PolicyKind
    days: int | None = Field(default=None, ge=1, le=36_500, description="fixed: days after occurred_at")
    months: int | None = Field(default=None, ge=1, le=1_200,
                               description="fixed: months after occurred_at; activity: months after last activity")
    round_to_end_of_month: bool = Field(default=False, strict=True,  # true or false, never 0/1 or "true"
                                        description="fixed: valid through the end of that month")
    period: Literal["quarter", "year"] | None = Field(default=None, description="end_of_period: the period")
    periods: int = Field(default=0, ge=0, le=100, description="end_of_period: periods after the earning one")
    activities: list[Activity] = Field(default_factory=lambda: _ALL_ACTIVITIES.copy(),
                                       description="activity: what counts as activity")

    @model_validator(mode="after")
    def _consistent(self) -> ExpirationPolicy:
        if self.kind == "fixed" and (self.days is None) == (self.months is None):
            raise ValueError("fixed: give exactly one of days or months")
        if self.kind == "end_of_period" and self.period is None:
            raise ValueError("end_of_period: period (quarter or year) is required")
        if self.kind == "activity" and (self.months is None or not self.activities):
            raise ValueError("activity: months and at least one activity are required")
        return self


NEVER = ExpirationPolicy(kind="none")


def add_months(moment: datetime, months: int) -> datetime:
    """Same local wall-clock time ``months`` later, clamped to the last day of the target month."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _start_of_month_after(local: datetime) -> datetime:
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return add_months(first, 1)


def _localize(local_naive: datetime, tz: tzinfo) -> datetime:
    return local_naive.replace(tzinfo=tz)


def lot_expires_at(policy: ExpirationPolicy, occurred_at: datetime, tz: tzinfo) -> datetime | None:
    """The expiry of a lot earned at ``occurred_at``; None for ``none`` and ``activity`` lots."""
    local = occurred_at.astimezone(tz).replace(tzinfo=None)
    if policy.kind == "fixed":
        end = local + timedelta(days=policy.days) if policy.days is not None else add_months(local, policy.months or 0)
        if policy.round_to_end_of_month:
            end = _start_of_month_after(end)
        return _localize(end, tz)
    if policy.kind == "end_of_period":
        size = 3 if policy.period == "quarter" else 12
        start_month = ((local.month - 1) // size) * size + 1
        period_start = local.replace(month=start_month, day=1, hour=0, minute=0, second=0, microsecond=0)
        return _localize(add_months(period_start, size * (policy.periods + 1)), tz)
    return None


def activity_expires_at(policy: ExpirationPolicy, activity_at: datetime, kind: Activity, tz: tzinfo) -> datetime | None:
    """The member-wide expiry an activity sets under the ``activity`` policy (None: no effect)."""
    if policy.kind != "activity" or kind not in policy.activities:
        return None
    local = activity_at.astimezone(tz).replace(tzinfo=None)
    return _localize(add_months(local, policy.months or 0), tz)
