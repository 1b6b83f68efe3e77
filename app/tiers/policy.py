"""Tier qualification: which tier a member holds, until when, and what they need for the next one.

Everything here is a pure function of plain data: no database, no HTTP, no clock. The caller supplies the
*metric value* (qualifying points, spend or purchase count in the qualifying window, see :func:`window_bounds`),
the time (``at`` / ``as_of``) and the programme time zone ``tz``. Every datetime argument must be timezone-aware
(``ValueError`` otherwise); instants are compared as instants (in UTC), calendar arithmetic is done on the local
wall time in ``tz``. Datetimes this module computes are returned in ``tz``.

Configuration (:class:`TierConfig`, the JSON of ``PUT /v1/program/tiers``)
========================================================================
* ``tiers``: 1 to 20 tiers, in order, with unique names and strictly increasing thresholds; the first threshold
  must be 0: that is the *base tier* every member has. A tier's *rank* is its position in the list.
  For the metrics ``points`` and ``purchases`` thresholds must be whole numbers.
* ``metric``: ``points`` (qualifying points earned in the window; ``include_bonuses`` tells the caller whether
  order bonuses count, and is only allowed with this metric), ``spend`` (money) or ``purchases`` (count).
  This module never computes the metric; it only compares it with the thresholds. A negative value (returns in
  the window outweighing purchases) is allowed and qualifies for the base tier only.
* ``earn_multiplier`` of a tier: applied by the caller to purchase points (:func:`tier_multiplier`).

Local time arithmetic
=====================
"N months after/before" keeps the local wall time and the day of the month, clamped to the month's last day
(Jan 31 + 1 month = Feb 29 in a leap year, Feb 28 otherwise; Feb 29 - 12 months = Feb 28). A wall time that
does not exist (skipped by a DST change) moves forward by the gap (02:30 on the spring-forward night in
Europe/Berlin becomes 03:30); an ambiguous one (repeated hour in autumn) takes its first occurrence.

Window (:func:`window_bounds`)
==============================
Half-open ``[start, end)`` with ``end = as_of``:
* ``rolling_months`` (``months`` = N, 1..60): ``start = as_of - N months``;
* ``calendar_year``: ``start`` = 1 January 00:00 local of ``as_of``'s *local* year (at 2024-12-31 23:30 UTC,
  which is 2025-01-01 00:30 in Europe/Berlin, the window is already 2025's). At exactly 1 January 00:00 the
  window is empty.
Because the window excludes ``end``, a caller computing the value for :func:`on_activity` must add the
purchase happening at ``at`` itself (or count ``occurred_at <= at``).

Retention (:func:`valid_until`)
===============================
When a member qualifies for a tier at ``t`` (upgrade, requalification, or a drop to a lower tier), the tier is
held until:
* ``end_of_next_year``: 1 January 00:00 local of (local year of ``t``) + 2, i.e. through the end of the next
  calendar year;
* ``months`` (``months`` = N, 1..120): ``t + N months``.
The base tier never lapses: its ``valid_until`` is always ``None``. ``valid_until`` is exclusive: at that instant
the tier has lapsed.

Decisions (:func:`on_activity`, :func:`evaluate`)
===============================================
Let ``Q`` be the qualifying tier (the highest tier whose threshold <= the metric value, :func:`qualifying_tier`)
and ``C`` the member's current tier (``state.tier``). In this order:

1. **New member** (``state is None``): the base tier, ``reason="initial"``, ``direction="same"``; or ``Q`` if
   it is higher, ``reason="qualified"``, ``direction="up"``, ``valid_until = valid_until(config, now)``.
2. **Unknown current tier** (``C`` is not in the configuration any more, the tiers were reconfigured): the
   member gets ``Q`` (``valid_until`` from now; ``None`` for the base tier), ``reason="lapsed"``,
   ``direction="down"`` (we cannot rank a tier that no longer exists; the member lost it). Both functions do
   this, so a purchase immediately moves such a member onto the current ladder. Run :func:`evaluate` over all
   members after changing the tiers.
3. **Upgrade** (``Q`` above ``C``): ``Q`` at once, ``valid_until = valid_until(config, now)``,
   ``reason="qualified"``. A member can jump several tiers.
4. **Requalification** (``Q == C``): ``valid_until`` becomes ``valid_until(config, now)`` (``None`` for the base
   tier, which counts as the latest possible date) if that is later than the current one, ``reason="requalified"``;
   otherwise nothing changes.
5. **Not qualifying** (``Q`` below ``C``): :func:`on_activity` never downgrades. :func:`evaluate` keeps ``C`` while
   ``now < state.valid_until`` (``valid_until=None`` on a non-base tier, which this module never produces, means it
   never lapses). At or after ``valid_until`` the member drops, ``reason="lapsed"``: with ``downgrade="one_step"``
   to the tier just below ``C``, with ``"to_qualifying"`` straight to ``Q``; never below ``Q`` (``one_step`` from a
   tier directly above ``Q`` lands on ``Q``). The new tier is held until ``valid_until(config, now)`` (``None`` for the
   base tier), so ``one_step`` drops at most one tier per retention period.
6. **Manual floor.** A manual assignment is *active* while ``state.manual_tier`` is set, names a tier of the
   configuration (an unknown one is ignored) and ``now < state.manual_until``. While active it is a floor: if
   the steps above give a tier below ``manual_tier``, the member gets ``manual_tier`` instead, held until
   ``manual_until`` (``reason="manual"``). It never lowers a tier (an admin demotion is a direct state change by
   the caller). Recommended way to assign: store ``manual_tier``/``manual_until`` and call :func:`evaluate`; it
   lifts the member with ``reason="manual"``. After ``manual_until`` the tier lapses (step 5) unless requalified.

``now`` is ``at`` for :func:`on_activity` and ``as_of`` for :func:`evaluate`. ``changed`` is true when the tier or
``valid_until`` (as an instant) differs from the state (always true for a new member); ``reason="unchanged"``
exactly when ``changed`` is false. ``direction`` compares the tiers' ranks (``"same"`` when only ``valid_until``
changed). The caller persists ``tier``/``valid_until`` (the manual fields are the caller's) and records history
when ``changed``.

Guarantees (property-tested): :func:`evaluate` is idempotent (evaluating the resulting state again with the same
metric value and ``as_of`` gives ``changed=False``); it never returns a tier below ``Q`` nor, while a manual
assignment is active, below ``manual_tier``; neither function lowers a known tier before its ``valid_until``, and
:func:`on_activity` never lowers one at all; a changed decision for a non-base tier has ``valid_until > now``.

The crossing purchase
=====================
The points metric includes the purchase's own points, so earning that purchase at the multiplier of the tier it
unlocks would be circular. Recommended: a purchase earns at the tier the member held *before* it (the tier at its
``occurred_at``); the upgrade applies from the next purchase on.

Progress (:func:`progress`)
===========================
Reports the tier :func:`evaluate` would decide at ``as_of`` (so a read never shows a lapsed tier, or misses an
upgrade, because the job has not run yet); it changes nothing. ``next_tier`` is the tier just above it (``None`` at
the top) and ``missing_to_next = next.threshold - metric_value``. ``needed_to_keep = max(0, tier.threshold -
metric_value)``: what the current window still needs to requalify for the tier (``None`` for the base tier). For a
rolling window this is today's shortfall; activity leaving the window later can raise it.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from app.money import DecimalText

Metric = Literal["points", "spend", "purchases"]
WindowKind = Literal["rolling_months", "calendar_year"]
RetentionKind = Literal["end_of_next_year", "months"]
Downgrade = Literal["one_step", "to_qualifying"]
Direction = Literal["up", "down", "same"]
Reason = Literal["qualified", "requalified", "lapsed", "manual", "unchanged", "initial"]

MAX_TIERS = 20
MAX_THRESHOLD = 10**12
MAX_MULTIPLIER = 1_000
MAX_WINDOW_MONTHS = 60
MAX_RETENTION_MONTHS = 120

TierName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Benefit = Annotated[str, StringConstraints(min_length=1, max_length=128)]


# --------------------------------------------------------------------------------------------------------------
# Configuration: the JSON a programme admin PUTs
# --------------------------------------------------------------------------------------------------------------


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TierName = Field(description="Unique within the configuration")
    threshold: Annotated[DecimalText, Field(ge=0, le=MAX_THRESHOLD, decimal_places=6)] = Field(
        description="Metric value in the window needed to qualify, inclusive; the first tier's must be 0"
    )
    benefits: list[Benefit] = Field(default_factory=list, max_length=100, description="Labels shown to members")
    earn_multiplier: Annotated[DecimalText, Field(ge=0, le=MAX_MULTIPLIER, decimal_places=6)] = Field(
        default=Decimal(1), description="Applied to purchase points by the earning engine"
    )


class TierWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: WindowKind = Field(description="rolling_months: the last N months; calendar_year: since 1 January local")
    months: int | None = Field(
        default=None, ge=1, le=MAX_WINDOW_MONTHS, description="N, required for rolling_months only"
    )

    @model_validator(mode="after")
    def _months_for_kind(self) -> TierWindow:
        if self.kind == "rolling_months" and self.months is None:
            raise ValueError("window.months is required for kind 'rolling_months'")
        if self.kind == "calendar_year" and self.months is not None:
            raise ValueError("window.months is not allowed for kind 'calendar_year'")
        return self


class TierRetention(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: RetentionKind = Field(
        description="end_of_next_year: held through the next calendar year; months: N months after qualifying"
    )
    months: int | None = Field(
        default=None, ge=1, le=MAX_RETENTION_MONTHS, description="N, required for kind 'months' only"
    )

    @model_validator(mode="after")
    def _months_for_kind(self) -> TierRetention:
        if self.kind == "months" and self.months is None:
            raise ValueError("retention.months is required for kind 'months'")
        if self.kind == "end_of_next_year" and self.months is not None:
            raise ValueError("retention.months is not allowed for kind 'end_of_next_year'")
        return self


class TierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiers: list[Tier] = Field(
        min_length=1, max_length=MAX_TIERS, description="Lowest first; strictly increasing thresholds, the first 0"
    )
    metric: Metric = Field(default="points", description="What the thresholds measure")
    include_bonuses: bool = Field(
        default=False, description="metric 'points' only: whether order bonuses count as qualifying points"
    )
    window: TierWindow
    retention: TierRetention
    downgrade: Downgrade = Field(
        default="to_qualifying", description="After valid_until: one tier down, or straight to the qualifying tier"
    )

    @field_validator("tiers")
    @classmethod
    def _ladder(cls, tiers: list[Tier]) -> list[Tier]:
        seen: set[str] = set()
        for tier in tiers:
            if tier.name in seen:
                raise ValueError(f"duplicate tier name {tier.name!r}")
            seen.add(tier.name)
        if tiers and tiers[0].threshold != 0:
            raise ValueError(f"the first tier ({tiers[0].name!r}) is the base tier: its threshold must be 0")
        for lower, upper in zip(tiers, tiers[1:], strict=False):
            if upper.threshold <= lower.threshold:
                raise ValueError(
                    f"thresholds must strictly increase: tier {upper.name!r} ({upper.threshold}) "
                    f"follows tier {lower.name!r} ({lower.threshold})"
                )
        return tiers

    @model_validator(mode="after")
    def _metric_coherent(self) -> TierConfig:
        if self.include_bonuses and self.metric != "points":
            raise ValueError(f"include_bonuses applies only to metric 'points', not {self.metric!r}")
        if self.metric in ("points", "purchases"):
            for tier in self.tiers:
                if tier.threshold != tier.threshold.to_integral_value():
                    raise ValueError(
                        f"tier {tier.name!r}: threshold {tier.threshold} must be a whole number for metric "
                        f"{self.metric!r}"
                    )
        return self

    def rank(self, name: str) -> int | None:
        """Position of the tier called ``name`` (0 = base tier), ``None`` if there is no such tier."""
        for index, tier in enumerate(self.tiers):
            if tier.name == name:
                return index
        return None


# --------------------------------------------------------------------------------------------------------------
# State, decisions, progress
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierState:
    """A member's stored tier. ``valid_until=None``: never lapses (the base tier).

    ``manual_tier``/``manual_until`` (both or neither): an admin assignment, a floor while ``now < manual_until``.
    """

    tier: str
    valid_until: datetime | None
    manual_until: datetime | None = None
    manual_tier: str | None = None

    def __post_init__(self) -> None:
        if (self.manual_tier is None) != (self.manual_until is None):
            raise ValueError("manual_tier and manual_until must be given together")
        _require_aware(self.valid_until, "valid_until")
        _require_aware(self.manual_until, "manual_until")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierDecision(_Out):
    tier: str
    valid_until: datetime | None = Field(description="Exclusive end of the tier; None: never lapses (base tier)")
    changed: bool = Field(description="tier or valid_until differs from the state: persist it and record history")
    direction: Direction
    reason: Reason


class TierProgress(_Out):
    tier: str = Field(description="The tier evaluate would give at as_of")
    valid_until: datetime | None
    metric: Metric
    metric_value: DecimalText
    window_start: datetime
    window_end: datetime = Field(description="Exclusive: as_of")
    next_tier: str | None = Field(description="The tier just above, None at the top")
    missing_to_next: DecimalText | None = Field(description="next_tier's threshold - metric_value")
    needed_to_keep: DecimalText | None = Field(
        description="Metric value still needed in the window to requalify; 0 if met; None for the base tier"
    )
    benefits: list[str]
    earn_multiplier: DecimalText


# --------------------------------------------------------------------------------------------------------------
# Time helpers
# --------------------------------------------------------------------------------------------------------------


def _require_aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _instant(value: datetime) -> datetime:
    """``value`` in UTC: datetimes sharing a tzinfo compare by wall time, so always compare these."""
    return value.astimezone(UTC)


def _localize(naive: datetime, tz: tzinfo) -> datetime:
    """A local wall time in ``tz``: first occurrence if ambiguous, moved forward by the gap if skipped."""
    return naive.replace(tzinfo=tz, fold=0).astimezone(UTC).astimezone(tz)


def _shift_months(moment: datetime, months: int, tz: tzinfo) -> datetime:
    local = moment.astimezone(tz)
    year, month0 = divmod(local.year * 12 + local.month - 1 + months, 12)
    month = month0 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return _localize(local.replace(tzinfo=None, year=year, month=month, day=day), tz)


def _start_of_year(year: int, tz: tzinfo) -> datetime:
    return _localize(datetime(year, 1, 1), tz)


def _metric(value: Decimal | int) -> Decimal:
    result = Decimal(value)
    if not result.is_finite():
        raise ValueError(f"metric_value must be a finite number, not {value}")
    return result


def _later(candidate: datetime | None, current: datetime | None) -> bool:
    """Whether ``candidate`` ends later than ``current`` (``None`` = never, the latest)."""
    if current is None:
        return False
    return candidate is None or _instant(candidate) > _instant(current)


def _same(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return _instant(a) == _instant(b)


# --------------------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------------------


def window_bounds(config: TierConfig, as_of: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """The qualifying window ``[start, end)`` ending at ``as_of``, both in ``tz``."""
    _require_aware(as_of, "as_of")
    end = as_of.astimezone(tz)
    if config.window.kind == "calendar_year":
        return _start_of_year(end.year, tz), end
    assert config.window.months is not None  # guaranteed by TierWindow
    return _shift_months(end, -config.window.months, tz), end


def qualifying_tier(config: TierConfig, metric_value: Decimal | int) -> Tier:
    """The highest tier whose threshold is at or below ``metric_value`` (the base tier for any value below 0)."""
    value = _metric(metric_value)
    best = config.tiers[0]
    for tier in config.tiers[1:]:
        if tier.threshold <= value:
            best = tier
    return best


def valid_until(config: TierConfig, qualified_at: datetime, tz: tzinfo) -> datetime:
    """Exclusive end of a (non-base) tier qualified for at ``qualified_at``, in ``tz``."""
    _require_aware(qualified_at, "qualified_at")
    if config.retention.kind == "end_of_next_year":
        return _start_of_year(qualified_at.astimezone(tz).year + 2, tz)
    assert config.retention.months is not None  # guaranteed by TierRetention
    return _shift_months(qualified_at, config.retention.months, tz)


def on_activity(
    config: TierConfig, state: TierState | None, metric_value: Decimal | int, at: datetime, tz: tzinfo
) -> TierDecision:
    """Decision in the purchase's transaction: upgrade or requalify at once, never downgrade.

    ``metric_value``: the window ending at ``at``, including the purchase at ``at``.
    """
    return _decide(config, state, metric_value, at, tz, may_lapse=False)


def evaluate(
    config: TierConfig, state: TierState | None, metric_value: Decimal | int, as_of: datetime, tz: tzinfo
) -> TierDecision:
    """Decision of the periodic job: as :func:`on_activity`, plus downgrades at or after ``valid_until``."""
    return _decide(config, state, metric_value, as_of, tz, may_lapse=True)


def progress(
    config: TierConfig, state: TierState | None, metric_value: Decimal | int, as_of: datetime, tz: tzinfo
) -> TierProgress:
    """The member's tier as :func:`evaluate` would decide it at ``as_of``, and the way to the next one."""
    value = _metric(metric_value)
    decision = evaluate(config, state, value, as_of, tz)
    rank = config.rank(decision.tier)
    assert rank is not None  # decisions always name a configured tier
    tier = config.tiers[rank]
    upper = config.tiers[rank + 1] if rank + 1 < len(config.tiers) else None
    start, end = window_bounds(config, as_of, tz)
    return TierProgress(
        tier=tier.name,
        valid_until=decision.valid_until,
        metric=config.metric,
        metric_value=value,
        window_start=start,
        window_end=end,
        next_tier=upper.name if upper is not None else None,
        missing_to_next=max(Decimal(0), upper.threshold - value) if upper is not None else None,
        needed_to_keep=max(Decimal(0), tier.threshold - value) if rank > 0 else None,
        benefits=list(tier.benefits),
        earn_multiplier=tier.earn_multiplier,
    )


def tier_multiplier(config: TierConfig, tier_name: str | None) -> Decimal:
    """The earn multiplier of ``tier_name``; 1 for no tier or a tier the configuration does not have."""
    if tier_name is None:
        return Decimal(1)
    rank = config.rank(tier_name)
    return config.tiers[rank].earn_multiplier if rank is not None else Decimal(1)


# --------------------------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------------------------


def _decide(
    config: TierConfig,
    state: TierState | None,
    metric_value: Decimal | int,
    now: datetime,
    tz: tzinfo,
    *,
    may_lapse: bool,
) -> TierDecision:
    _require_aware(now, "at" if not may_lapse else "as_of")
    q_rank = config.rank(qualifying_tier(config, metric_value).name)
    assert q_rank is not None

    def held_from_now(rank: int) -> datetime | None:
        return None if rank == 0 else valid_until(config, now, tz)

    if state is None:
        name = config.tiers[q_rank].name
        if q_rank == 0:
            return TierDecision(tier=name, valid_until=None, changed=True, direction="same", reason="initial")
        return TierDecision(
            tier=name, valid_until=held_from_now(q_rank), changed=True, direction="up", reason="qualified"
        )

    current = config.rank(state.tier)
    rank: int
    until: datetime | None
    reason: Reason
    if current is None:
        rank, until, reason = q_rank, held_from_now(q_rank), "lapsed"
    elif q_rank > current:
        rank, until, reason = q_rank, held_from_now(q_rank), "qualified"
    elif q_rank == current and _later(held_from_now(q_rank), state.valid_until):
        rank, until, reason = current, held_from_now(q_rank), "requalified"
    elif (
        q_rank < current
        and may_lapse
        and state.valid_until is not None
        and _instant(now) >= _instant(state.valid_until)
    ):
        rank = max(current - 1, q_rank) if config.downgrade == "one_step" else q_rank
        until, reason = held_from_now(rank), "lapsed"
    else:
        rank, until, reason = current, state.valid_until, "unchanged"

    floor = _manual_floor(config, state, now)
    if floor is not None and rank < floor:
        assert state.manual_until is not None  # TierState: manual fields come together
        rank, until, reason = floor, state.manual_until.astimezone(tz), "manual"

    tier = config.tiers[rank].name
    changed = tier != state.tier or not _same(until, state.valid_until)
    if not changed:
        return TierDecision(tier=tier, valid_until=until, changed=False, direction="same", reason="unchanged")
    return TierDecision(tier=tier, valid_until=until, changed=True, direction=_direction(current, rank), reason=reason)


def _direction(before: int | None, after: int) -> Direction:
    """``before=None``: an unknown (removed) tier, reported as a loss."""
    if before is None or after < before:
        return "down"
    return "up" if after > before else "same"


def _manual_floor(config: TierConfig, state: TierState, now: datetime) -> int | None:
    """Rank of the active manual assignment, if any (an unknown manual tier is ignored)."""
    if state.manual_tier is None or state.manual_until is None:
        return None
    if _instant(now) >= _instant(state.manual_until):
        return None
    return config.rank(state.manual_tier)
