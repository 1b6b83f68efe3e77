"""Earn rules: a purchase becomes points, with a breakdown that explains every point; returns claw them back.

Everything here is a pure function of plain data: no database, no HTTP, no clock (the purchase's
``occurred_at`` and the programme time zone ``tz`` are parameters). Points are ``int``; money is
``Decimal`` and is computed exactly (integers and ``Fraction`` internally, never ``float``).

Evaluation order of :func:`evaluate`
====================================
1. **Local time.** ``occurred_at`` is converted to ``tz``; every date, weekday (ISO 1 = Monday ... 7 = Sunday),
   time-of-day and birthday condition uses that local date and time.
2. **Line amounts.** ``net = quantity * unit_price - discount`` per line. **No purchase earns on more money than
   was paid**: when the nets add up to more than ``total`` (an order-level discount the lines do not show, or
   wrong lines), ``total`` is apportioned over all lines (excluded ones included) in proportion to their nets,
   by largest remainder in units of ``10**-d`` (``d`` = the most decimals among 2, ``total``,
   ``paid_with_points``, the unit prices and the discounts); each line's ``order_discount`` shows what it lost.
   Lines that add up to less than ``total`` (tax, shipping, tips not itemised) are left as they are. A line whose
   category is in ``exclusions.categories`` or whose SKU is in ``exclusions.skus`` is *excluded*: its eligible
   amount is 0.
3. **Paid with points.** ``paid_with_points`` (never above ``total``) never earns: it is taken off the eligible
   amounts proportionally to them, by largest remainder in units of ``10**-d``, so the reductions sum exactly to
   ``paid_with_points``. When it covers the whole eligible amount, every eligible amount is 0 (the excess, e.g.
   spent on excluded items, is ignored). So ``eligible_amount <= total - paid_with_points``, always.
4. **Base points.** ``eligible_amount * points_per_unit``, rounded with ``base.rounding``:
   ``round_per="line"`` rounds each line; ``round_per="order"`` rounds the order's sum once and apportions it to
   the lines by largest remainder (weights: each line's unrounded base points).
5. **Which rules apply**, decided once per order, rules taken in (``priority``, ``id``) order. A rule *applies
   to the order* when its order conditions hold (store, channel, tier, weekday, dates, times, RFM ``segments``
   and lifecycle ``stages`` of the last insight refresh, and ``birthday``:
   ``same_day``/``same_month`` as the member's birthday, a 29 February birthday matching 28 February in non-leap
   years and a member without a birthday never matching; ``not_same_day``/``not_same_month`` the opposite), it
   has at least one *basis line* (a non-excluded line with eligible amount > 0 that satisfies its line
   conditions, categories and skus), and its own test passes (``first_purchase_bonus``: the member's first
   purchase; ``birthday_bonus``: ``birthday_match``; ``threshold_bonus``: the basis lines' eligible amount is at
   or above ``min_total``). Then, in that order:

   a. **Limits.** A rule with ``limits`` (``times`` per ``day``, ``month``, ``year`` (local calendar periods of
      ``occurred_at``) or ``ever``) whose member count (``MemberFacts.rule_counts``) has reached one of them
      does not apply. Limits are checked ever, year, month, day; the first reached is listed in ``skipped``
      (``reason="limit"``). A rule that does not apply excludes nothing.
   b. **Exclusivity groups.** Of the rules with the same ``group`` that are still in, only the first applies;
      the others are listed in ``skipped`` (``reason="group"``, ``by_rule_id``). Groups span kinds: a birthday
      bonus and a multiplier in one group never both apply to an order ("Tuesday x2, but not on birthday
      orders").
6. **Multipliers** (kind ``multiplier``), per line with eligible amount > 0, among the rules still in whose line
   conditions the line satisfies. If any of them is ``exclusive``, only the first exclusive one applies on the
   line; otherwise all of them do (``stacking`` acts within the kind, ``group`` across kinds). Multipliers with
   ``applies_to="points"`` (the default) are applied first, in (``priority``, ``id``) order, with *cumulative*
   rounding: after rule k the line holds ``round(base * f1 * ... * fk)`` and rule k's contribution is the
   difference to the previous value, so contributions telescope to ``round(base * product) - base``. Then each
   multiplier with ``applies_to="base"`` adds ``round(base * f) - base`` (the base points times ``f - 1``,
   unaffected by the others: "the tier multiplier on the base rate only"), but never more than the line holds
   so far, so a line never goes below zero.
7. **Bonuses** (kinds ``fixed_bonus``, ``first_purchase_bonus``, ``birthday_bonus``, ``threshold_bonus``), among
   the rules still in: if any is ``exclusive``, only the first exclusive one applies and every other bonus is
   ignored; otherwise all ``stack`` bonuses add. A ``fixed_bonus`` with ``per="line"`` gives its points to each
   basis line, with ``per="unit"`` points x quantity to each basis line (both are *line* contributions); every
   other bonus is an *order bonus*.
8. **Caps**, in the order ``per_order``, ``per_member_per_day`` (allowance ``cap - earned_today``),
   ``per_member_per_month`` (allowance ``cap - earned_this_month``); allowances never go below 0. Each cap that
   lowers the award is recorded in ``capped`` with the points it removed. The removed points are taken from
   the order bonuses in reverse application order (the last-applied bonus first), then from the lines
   proportionally to their points (largest remainder), so a line never loses more than it earned.
9. The award is ``sum(line.points) + sum(order_bonus.points)``; it is never negative and never above any cap.
   An award above the ledger's per-operation maximum (``MAX_POINTS``) raises ``DomainError("points_out_of_range")``.

A rule *applied* to a purchase when it appears in the breakdown (a line contribution or an order bonus), whatever
caps removed afterwards: that is what its limits count (:func:`applied_rule_ids`). Counts are by rule ``id``,
across rule versions, and start when a rule gets limits (applications before that were not recorded).

Determinism: every largest-remainder tie is broken by the line's content (sku, category, quantity, unit price,
discount) and only then by its index, so the award does not depend on the order of the lines.

Returns (:func:`clawback`)
==========================
Each line keeps a *returned fraction* ``f`` (exact rational). Returning ``q`` of the line's ``k`` not yet returned
units gives ``f += (1 - f) * q / k`` (with quantity returns only, ``f`` is simply returned units / quantity). An
``amount`` return is spread over all lines, excluded ones included, proportionally to their not yet returned net
value ``net * (1 - f)`` (``net`` as paid: scaled down to ``total`` as in step 2); it cannot exceed the total not
yet returned net value. Points clawed back, cumulatively:
``round(line.points * f)`` per line, ``round(bonus.points * returned_eligible / basis_eligible)`` per order bonus,
and for a threshold bonus all of its points once the kept eligible amount of its basis lines is below
``min_total`` (nothing before). ``round`` is the award's rounding mode. A return claws back
``clawback_total(after) - clawback_total(before)``, so repeated partial returns never exceed the award.

A return *releases* a rule when, with it, everything the rule gave on the purchase is taken back: an order bonus
once all its points are clawed back (a threshold bonus once the kept amount falls below ``min_total``), or, if
caps left it none, once all its basis lines are returned; a line rule once every line it contributed to is
returned in full (``released_rule_ids``). A released rule no longer counts toward its limits, so the member can
earn it again in that period: a birthday bonus "once a year" comes back with a fully returned birthday order,
but not with a partial return that leaves part of it. Returns never change which rules applied.

Events (:func:`evaluate_event`)
===============================
A custom event earns a fixed number of points, unless the member has already reached one of the rule's limits
(awards counted ``ever``, this ``month`` or this ``day`` in the programme time zone, supplied by the caller).
Event points are not purchase points: they do not count toward the purchase caps.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from app.errors import DomainError
from app.insight.rfm import Segment, Stage
from app.ledger.schemas import MAX_POINTS
from app.money import DecimalText

Rounding = Literal["floor", "half_up", "ceil"]
RoundPer = Literal["line", "order"]
Channel = Literal["pos", "online", "app"]
RuleKind = Literal["multiplier", "fixed_bonus", "first_purchase_bonus", "birthday_bonus", "threshold_bonus"]
BonusKind = Literal["fixed_bonus", "first_purchase_bonus", "birthday_bonus", "threshold_bonus"]
Stacking = Literal["stack", "exclusive"]
BonusPer = Literal["order", "line", "unit"]
BirthdayMatch = Literal["same_day", "same_month"]
CapName = Literal["per_order", "per_member_per_day", "per_member_per_month"]
EventPeriod = Literal["day", "month", "ever"]
LimitPeriod = Literal["day", "month", "year", "ever"]
BirthdayCondition = Literal["same_day", "same_month", "not_same_day", "not_same_month"]
MultiplierBasis = Literal["points", "base"]
REDACTED = "redacted"  # the rule id and kind that replace a personal rule's in a stored award (erasure)

MAX_AMOUNT = 10**12  # money amounts (unit price, discount, totals) are at most a trillion currency units
MAX_QUANTITY = 1_000_000
MAX_LINES = 5_000
MAX_FACTOR = 1_000

RuleId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]
Code = Annotated[str, StringConstraints(min_length=1, max_length=128)]  # sku, category, store id, tier
Money = Annotated[DecimalText, Field(ge=0, le=MAX_AMOUNT, decimal_places=6)]
RulePoints = Annotated[int, Field(gt=0, le=MAX_POINTS)]
CapPoints = Annotated[int, Field(ge=0, le=MAX_POINTS)]
EventLimit = Annotated[int, Field(ge=1, le=MAX_POINTS)]
Description = Annotated[str, StringConstraints(max_length=500)]


def _no_empty(value: list[Any] | None, what: str) -> None:
    if value is not None and not value:
        raise ValueError(f"{what} must not be empty; omit it to match everything")


# --------------------------------------------------------------------------------------------------------------
# Rule set: the JSON a programme admin PUTs
# --------------------------------------------------------------------------------------------------------------


class BaseRate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points_per_unit: Annotated[DecimalText, Field(gt=0, le=1_000_000, decimal_places=6)] = Field(
        description="Points per 1.00 currency unit of eligible amount"
    )
    rounding: Rounding = Field(default="floor", description="How fractional points are rounded")
    round_per: RoundPer = Field(default="line", description="Round each line, or the order once")


class Conditions(BaseModel):
    """All optional; every condition given must hold. Dates and times are local to the programme time zone."""

    model_config = ConfigDict(extra="forbid")

    categories: list[Code] | None = Field(default=None, description="Line categories (line-level)")
    skus: list[Code] | None = Field(default=None, description="Line SKUs (line-level)")
    store_ids: list[Code] | None = None
    channels: list[Channel] | None = None
    tiers: list[Code] | None = Field(default=None, description="Member tiers; a member without a tier never matches")
    days_of_week: list[Annotated[int, Field(ge=1, le=7)]] | None = Field(
        default=None, description="ISO weekdays, 1 = Monday ... 7 = Sunday"
    )
    date_from: date | None = Field(default=None, description="First local date, inclusive")
    date_to: date | None = Field(default=None, description="Last local date, inclusive")
    time_from: time | None = Field(default=None, description="Local time of day, inclusive")
    time_to: time | None = Field(
        default=None, description="Local time of day, exclusive; before time_from means the window wraps midnight"
    )
    birthday: BirthdayCondition | None = Field(
        default=None, description="The member's birthday: same_day / same_month as the purchase's local date (a "
        "member without a birthday never matches), or not_same_day / not_same_month (a member without one always "
        "matches)")
    segments: list[Segment] | None = Field(
        default=None, description="The member's RFM segment at the last insight refresh (a member without one "
        "never matches)")
    stages: list[Stage] | None = Field(
        default=None, description="The member's lifecycle stage at the last insight refresh (a member "
        "without one never matches)")

    @model_validator(mode="after")
    def _coherent(self) -> Conditions:
        for name in ("categories", "skus", "store_ids", "channels", "tiers", "days_of_week", "segments", "stages"):
            _no_empty(getattr(self, name), name)
        if self.date_from is not None and self.date_to is not None and self.date_from > self.date_to:
            raise ValueError("date_from must not be after date_to")
        for name in ("time_from", "time_to"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is not None:
                raise ValueError(f"{name} is a local time of the programme time zone; drop the UTC offset")
        if self.time_from is not None and self.time_from == self.time_to:
            raise ValueError("time_from and time_to must differ")
        return self

    @property
    def has_line_conditions(self) -> bool:
        return self.categories is not None or self.skus is not None


class RuleLimit(BaseModel):
    """At most ``times`` awards of the rule per member per local ``day``, ``month``, ``year`` or ``ever``."""

    model_config = ConfigDict(extra="forbid")

    times: Annotated[int, Field(ge=1, le=MAX_POINTS)]
    per: LimitPeriod


class EarnRule(BaseModel):
    """One multiplier or bonus. Fields that do not belong to ``kind`` are rejected; defaults are filled in."""

    model_config = ConfigDict(extra="forbid")

    id: RuleId
    kind: RuleKind
    description: Description | None = None
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="Lower applies first")
    stacking: Stacking = "stack"
    factor: Annotated[DecimalText, Field(ge=0, le=MAX_FACTOR, decimal_places=6)] | None = Field(
        default=None, description="multiplier only: line base points are multiplied by it"
    )
    points: RulePoints | None = Field(default=None, description="bonus kinds only: the bonus points")
    per: BonusPer | None = Field(default=None, description="fixed_bonus only (default order): per order/line/unit")
    birthday_match: BirthdayMatch | None = Field(default=None, description="birthday_bonus only (default same_day)")
    min_total: Annotated[DecimalText, Field(gt=0, le=MAX_AMOUNT, decimal_places=6)] | None = Field(
        default=None, description="threshold_bonus only: eligible amount needed, inclusive"
    )
    conditions: Conditions = Field(default_factory=Conditions)
    group: RuleId | None = Field(
        default=None, description="Exclusivity group, across kinds: of the rules of one group that apply to an "
        "order, only the first (lowest priority, then id) does")
    limits: list[RuleLimit] | None = Field(
        default=None, max_length=4, description="Awards per member per local day, month, year or ever; a rule at "
        "a limit does not apply (and so does not exclude others)")
    applies_to: MultiplierBasis | None = Field(
        default=None, description="multiplier only: points (default; multiplies the line's points so far, "
        "compounding) or base (adds base_points x (factor - 1), whatever else applies)")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> EarnRule:
        if self.limits is not None:
            _no_empty(self.limits, "limits")
            _no_duplicates([limit.per for limit in self.limits], "limit period")
        allowed: dict[str, set[str]] = {
            "multiplier": {"factor", "applies_to"},
            "fixed_bonus": {"points", "per"},
            "first_purchase_bonus": {"points"},
            "birthday_bonus": {"points", "birthday_match"},
            "threshold_bonus": {"points", "min_total"},
        }
        required: dict[str, set[str]] = {
            "multiplier": {"factor"},
            "fixed_bonus": {"points"},
            "first_purchase_bonus": {"points"},
            "birthday_bonus": {"points"},
            "threshold_bonus": {"points", "min_total"},
        }
        for name in ("factor", "points", "per", "birthday_match", "min_total", "applies_to"):
            present = getattr(self, name) is not None
            if present and name not in allowed[self.kind]:
                raise ValueError(f"rule {self.id!r}: {name} is not allowed for kind {self.kind!r}")
            if not present and name in required[self.kind]:
                raise ValueError(f"rule {self.id!r}: {name} is required for kind {self.kind!r}")
        if self.kind == "fixed_bonus" and self.per is None:
            self.per = "order"
        if self.kind == "birthday_bonus" and self.birthday_match is None:
            self.birthday_match = "same_day"
        return self

    @property
    def kind_group(self) -> Literal["multiplier", "bonus"]:
        """``stacking: exclusive`` acts within the kind group; ``group`` (an exclusivity group) across kinds."""
        return "multiplier" if self.kind == "multiplier" else "bonus"

    @property
    def personal(self) -> bool:
        """Whether applying the rule depends on the member's birthday (so its appearance reveals it)."""
        return self.kind == "birthday_bonus" or self.conditions.birthday is not None


class Exclusions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: list[Code] = Field(default_factory=list, description="Lines of these categories never earn")
    skus: list[Code] = Field(default_factory=list, description="Lines of these SKUs never earn")


class Caps(BaseModel):
    """Upper bounds on purchase points (bonuses included). ``None``: no cap."""

    model_config = ConfigDict(extra="forbid")

    per_order: CapPoints | None = None
    per_member_per_day: CapPoints | None = Field(default=None, description="Local calendar day of occurred_at")
    per_member_per_month: CapPoints | None = Field(default=None, description="Local calendar month of occurred_at")


class EventRule(BaseModel):
    """Fixed points for a named custom event (``review_written``, ``app_installed``...)."""

    model_config = ConfigDict(extra="forbid")

    name: RuleId
    points: RulePoints
    description: Description | None = None
    once: bool = Field(default=False, description="One-time only: the same as max_ever = 1")
    max_per_day: EventLimit | None = Field(default=None, description="Awards per member per local day")
    max_per_month: EventLimit | None = Field(default=None, description="Awards per member per local month")
    max_ever: EventLimit | None = Field(default=None, description="Awards per member, ever")

    @model_validator(mode="after")
    def _once(self) -> EventRule:
        if self.once:
            if self.max_ever not in (None, 1):
                raise ValueError(f"event {self.name!r}: once contradicts max_ever = {self.max_ever}")
            self.max_ever = 1
        return self


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: BaseRate
    rules: list[EarnRule] = Field(default_factory=list, max_length=500)
    exclusions: Exclusions = Field(default_factory=Exclusions)
    caps: Caps = Field(default_factory=Caps)
    events: list[EventRule] = Field(default_factory=list, max_length=500)
    tier_multiplier_applies_to: MultiplierBasis = Field(
        default="points", description="The tier's earn_multiplier as a multiplier rule applying to the line's "
        "points so far (points, the default) or to its base points only (base)")

    @field_validator("rules")
    @classmethod
    def _unique_rule_ids(cls, rules: list[EarnRule]) -> list[EarnRule]:
        _no_duplicates([rule.id for rule in rules], "rule id")
        return rules

    @field_validator("events")
    @classmethod
    def _unique_event_names(cls, events: list[EventRule]) -> list[EventRule]:
        _no_duplicates([event.name for event in events], "event name")
        return events


def _no_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)


# --------------------------------------------------------------------------------------------------------------
# Inputs: the purchase and what we know about the member
# --------------------------------------------------------------------------------------------------------------


class PurchaseLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Code
    category: Code | None = None
    quantity: int = Field(gt=0, le=MAX_QUANTITY)
    unit_price: Money
    discount: Money = Field(default=Decimal(0), description="Discount on the whole line, not per unit")

    @model_validator(mode="after")
    def _discount_fits(self) -> PurchaseLine:
        if self.discount > self.quantity * self.unit_price:
            raise ValueError(f"line {self.sku!r}: discount must not exceed quantity * unit_price")
        return self


class Purchase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    occurred_at: AwareDatetime
    channel: Channel
    store_id: Code | None = None
    total: Money = Field(description="What the order cost, all tenders included")
    paid_with_points: Money = Field(default=Decimal(0), description="Part of total paid with points; never earns")
    lines: list[PurchaseLine] = Field(min_length=1, max_length=MAX_LINES)

    @model_validator(mode="after")
    def _points_within_total(self) -> Purchase:
        if self.paid_with_points > self.total:
            raise ValueError("paid_with_points must not exceed total")
        return self


@dataclass(frozen=True)
class MemberFacts:
    """What the evaluation needs to know about the member, as of the purchase.

    ``earned_today`` / ``earned_this_month``: purchase points already awarded to the member in the local
    calendar day / month (programme time zone) of the purchase's ``occurred_at`` (see :func:`local_date`).

    ``rule_counts``: for each rule with ``limits``, by period (``"day"``, ``"month"``, ``"year"``, ``"ever"``),
    how many earlier purchases of the member in that local period of ``occurred_at`` the rule applied to (and
    that no return has taken all of it back from). Only the rules and periods :func:`rule_periods_needed`
    names are read; a missing one is a caller bug (``ValueError``).
    """

    tier: str | None
    birthday: date | None
    first_purchase: bool
    earned_today: int
    earned_this_month: int
    rule_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    segment: str | None = None  # the last insight refresh's RFM segment and lifecycle stage (issue 17)
    stage: str | None = None

    def __post_init__(self) -> None:
        if self.earned_today < 0 or self.earned_this_month < 0:
            raise ValueError("earned_today and earned_this_month must not be negative")
        if any(count < 0 for counts in self.rule_counts.values() for count in counts.values()):
            raise ValueError("rule counts must not be negative")


def local_date(occurred_at: datetime, tz: tzinfo) -> date:
    """The programme-local calendar date of ``occurred_at``: the day and month the caps and events count in."""
    return occurred_at.astimezone(tz).date()


# --------------------------------------------------------------------------------------------------------------
# Output: the award and its breakdown (stored with the purchase, returned by the API)
# --------------------------------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleContribution(_Out):
    rule_id: str
    kind: Literal["multiplier", "fixed_bonus"]
    points: int = Field(description="Signed: a multiplier below 1 contributes negative points")


class LineAward(_Out):
    index: int = Field(description="Position of the line in the purchase")
    sku: str
    quantity: int
    excluded_by: Literal["category", "sku"] | None = Field(description="Why the line never earns, if it does not")
    eligible_amount: DecimalText = Field(description="Net amount that earns, after the paid-with-points share")
    order_discount: DecimalText = Field(
        default=Decimal(0), description="Taken off the line's net amount because the lines add up to more than the "
        "order's total (an order-level discount): its share of the difference")
    base_points: int
    contributions: list[RuleContribution] = Field(description="Multipliers, then per-line bonuses")
    capped_points: int = Field(description="Points removed from this line by caps")
    points: int = Field(description="base_points + sum(contributions) - capped_points")


class OrderBonus(_Out):
    rule_id: str
    kind: BonusKind | Literal["redacted"] = Field(description="redacted: a birthday rule, after erasure")
    points: int = Field(description="Awarded, after caps")
    capped_points: int = Field(description="Points of the bonus removed by caps")
    basis_eligible_amount: DecimalText = Field(description="Eligible amount of the lines the bonus was earned on")
    line_indexes: list[int] = Field(description="The bonus's basis lines (returns claw back in proportion)")
    min_total: DecimalText | None = Field(default=None, description="threshold_bonus: the threshold it cleared")


class CapApplied(_Out):
    cap: CapName
    limit: int = Field(description="The configured cap")
    allowance: int = Field(description="Points the cap still allowed for this purchase")
    points_removed: int


class SkippedRule(_Out):
    """A rule that would have applied to the order but did not."""

    rule_id: str
    reason: Literal["limit", "group"] = Field(
        description="limit: the member reached one of its limits; group: another rule of its exclusivity group "
        "applied")
    per: LimitPeriod | None = Field(default=None, description="limit: the period of the limit reached")
    times: int | None = Field(default=None, description="limit: the limit")
    count: int | None = Field(default=None, description="limit: the member's awards of the rule in that period")
    group: str | None = Field(default=None, description="group: the exclusivity group")
    by_rule_id: str | None = Field(default=None, description="group: the rule of the group that applied")


class Award(_Out):
    points: int = Field(description="Total awarded, >= 0")
    rounding: Rounding = Field(description="Rounding mode of the rule set; clawbacks round the same way")
    occurred_at_local: datetime = Field(description="occurred_at in the programme time zone")
    eligible_amount: DecimalText
    base_points: int
    lines: list[LineAward]
    order_bonuses: list[OrderBonus]
    capped: list[CapApplied] = Field(description="Caps that removed points, in the order applied")
    skipped: list[SkippedRule] = Field(
        default_factory=list, description="Rules that would have applied but for a limit or an exclusivity group")


# --------------------------------------------------------------------------------------------------------------
# Arithmetic helpers
# --------------------------------------------------------------------------------------------------------------


def _round(value: Fraction, mode: Rounding) -> int:
    """Round a non-negative exact value to whole points."""
    return _round_ratio(value.numerator, value.denominator, mode)


def _round_ratio(numerator: int, denominator: int, mode: Rounding) -> int:
    """Round ``numerator / denominator`` (>= 0, denominator > 0) to an integer, in integer arithmetic."""
    if mode == "floor":
        return numerator // denominator
    if mode == "ceil":
        return -(-numerator // denominator)
    return (2 * numerator + denominator) // (2 * denominator)


def _apportion(total: int, weights: Sequence[int], keys: Sequence[tuple[Any, ...]]) -> list[int]:
    """Split ``total`` (>= 0) in proportion to ``weights`` (>= 0) by largest remainder; ties go to the smallest key.

    Zero-weight items never receive anything, and when ``total <= sum(weights)`` no item receives more than its
    weight.
    """
    if total == 0:
        return [0] * len(weights)
    weight_sum = sum(weights)
    if weight_sum <= 0:
        raise ValueError("cannot apportion a positive total over zero weights")
    shares: list[int] = []
    remainders: list[int] = []
    for weight in weights:
        share, remainder = divmod(total * weight, weight_sum)
        shares.append(share)
        remainders.append(remainder)
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], keys[i]))
    for i in order[:left]:
        shares[i] += 1
    return shares


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def _from_units(units: int, decimals: int) -> Decimal:
    return Decimal(f"{units}E-{decimals}")


def _line_key(line: PurchaseLine, index: int) -> tuple[Any, ...]:
    return (line.sku, line.category or "", line.quantity, line.unit_price, line.discount, index)


# --------------------------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------------------------


def _in_window(now: time, start: time | None, end: time | None) -> bool:
    if start is None and end is None:
        return True
    if start is None:
        assert end is not None
        return now < end
    if end is None:
        return now >= start
    if start < end:
        return start <= now < end
    return now >= start or now < end  # wraps midnight


def _order_conditions_hold(cond: Conditions, purchase: Purchase, member: MemberFacts, local: datetime) -> bool:
    today = local.date()
    return (
        (cond.store_ids is None or purchase.store_id in cond.store_ids)
        and (cond.channels is None or purchase.channel in cond.channels)
        and (cond.tiers is None or member.tier in cond.tiers)
        and (cond.days_of_week is None or today.isoweekday() in cond.days_of_week)
        and (cond.date_from is None or today >= cond.date_from)
        and (cond.date_to is None or today <= cond.date_to)
        and _in_window(local.time(), cond.time_from, cond.time_to)
        and (cond.birthday is None or _birthday_condition_holds(cond.birthday, member.birthday, today))
        and (cond.segments is None or member.segment in cond.segments)
        and (cond.stages is None or member.stage in cond.stages)
    )


def _line_conditions_hold(cond: Conditions, line: PurchaseLine) -> bool:
    return (cond.categories is None or line.category in cond.categories) and (
        cond.skus is None or line.sku in cond.skus
    )


def _birthday_matches(birthday: date, today: date, match: BirthdayMatch) -> bool:
    if match == "same_month":
        return birthday.month == today.month
    if (birthday.month, birthday.day) == (2, 29) and not calendar.isleap(today.year):
        return (today.month, today.day) == (2, 28)
    return (birthday.month, birthday.day) == (today.month, today.day)


def _birthday_condition_holds(condition: BirthdayCondition, birthday: date | None, today: date) -> bool:
    match: BirthdayMatch = "same_month" if condition.endswith("same_month") else "same_day"
    matches = birthday is not None and _birthday_matches(birthday, today, match)
    return matches if condition.startswith("same") else not matches


def _first_exclusive_or_all(applicable: list[EarnRule]) -> list[EarnRule]:
    """``applicable`` is in (priority, id) order: the first exclusive rule alone, or every stacking rule."""
    for rule in applicable:
        if rule.stacking == "exclusive":
            return [rule]
    return applicable


# Limits are checked in this order; the first reached is the one reported.
_LIMIT_ORDER: tuple[LimitPeriod, ...] = ("ever", "year", "month", "day")


def _limit_reached(rule: EarnRule, member: MemberFacts) -> SkippedRule | None:
    if not rule.limits:
        return None
    counts = member.rule_counts.get(rule.id, {})
    by_period = {limit.per: limit.times for limit in rule.limits}
    for per in _LIMIT_ORDER:
        if per not in by_period:
            continue
        if per not in counts:
            raise ValueError(f"rule {rule.id!r} is limited per {per}: its count for that period is required")
        if counts[per] >= by_period[per]:
            return SkippedRule(rule_id=rule.id, reason="limit", per=per, times=by_period[per], count=counts[per])
    return None


def rule_periods_needed(rules: RuleSet) -> dict[str, set[LimitPeriod]]:
    """The rules with limits and the periods whose counts :func:`evaluate` needs for them."""
    return {rule.id: {limit.per for limit in rule.limits} for rule in rules.rules if rule.limits}


# --------------------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Line:
    index: int
    line: PurchaseLine
    key: tuple[Any, ...]
    excluded_by: Literal["category", "sku"] | None
    eligible_units: int = 0
    base_points: int = 0
    contributions: list[RuleContribution] = field(default_factory=list)
    capped_points: int = 0

    @property
    def gross(self) -> int:
        return self.base_points + sum(c.points for c in self.contributions)


@dataclass
class _Bonus:
    rule: EarnRule
    points: int
    basis: list[int]
    basis_units: int
    capped_points: int = 0


def _amount_decimals(purchase: Purchase) -> int:
    """The decimals every amount of ``purchase`` is computed in: the most among 2 and the amounts given."""
    return max(
        [2, _decimals(purchase.total), _decimals(purchase.paid_with_points)]
        + [max(_decimals(line.unit_price), _decimals(line.discount)) for line in purchase.lines]
    )


def _paid_net_units(purchase: Purchase, decimals: int, keys: Sequence[tuple[Any, ...]]) -> tuple[list[int], list[int]]:
    """Each line's net amount and the part of it paid for, in units of ``10**-decimals``.

    Lines that add up to more than ``total`` (an order-level discount or coupon the lines do not show, or lines
    that are simply wrong) are scaled down to it: the total is apportioned over them in proportion to their net
    amounts (largest remainder), so no purchase earns on more money than was paid for it."""
    net = [line.quantity * _to_units(line.unit_price, decimals) - _to_units(line.discount, decimals)
           for line in purchase.lines]
    total = _to_units(purchase.total, decimals)
    if sum(net) <= total:
        return net, net
    return net, _apportion(total, net, keys)


def evaluate(rules: RuleSet, purchase: Purchase, member: MemberFacts, tz: tzinfo) -> Award:
    """Points for ``purchase``, with a breakdown. See the module docstring for the exact evaluation order.

    Raises ``DomainError("points_out_of_range")`` if the award would exceed the ledger's per-operation maximum.
    """
    local = purchase.occurred_at.astimezone(tz)
    exclusions = rules.exclusions
    lines: list[_Line] = []
    for index, line in enumerate(purchase.lines):
        excluded_by: Literal["category", "sku"] | None = None
        if line.category is not None and line.category in exclusions.categories:
            excluded_by = "category"
        elif line.sku in exclusions.skus:
            excluded_by = "sku"
        lines.append(_Line(index=index, line=line, key=_line_key(line, index), excluded_by=excluded_by))
    keys = [item.key for item in lines]

    # 2-3. Net amounts in integer units of 10**-decimals, scaled down to the total, less the paid-with-points share.
    decimals = _amount_decimals(purchase)
    net, paid_net = _paid_net_units(purchase, decimals, keys)
    pre = [0 if item.excluded_by else units for item, units in zip(lines, paid_net, strict=True)]
    paid = _to_units(purchase.paid_with_points, decimals)
    if paid >= sum(pre):
        eligible = [0] * len(lines)
    else:
        reductions = _apportion(paid, pre, keys)
        eligible = [units - cut for units, cut in zip(pre, reductions, strict=True)]
    for item, units in zip(lines, eligible, strict=True):
        item.eligible_units = units

    # 4. Base points.
    # Unrounded base points of a line: eligible_units * rate_num / (10**decimals * rate_den).
    rate = Fraction(rules.base.points_per_unit)
    mode = rules.base.rounding
    denominator = 10**decimals * rate.denominator
    if rules.base.round_per == "line":
        base = [_round_ratio(units * rate.numerator, denominator, mode) for units in eligible]
    else:
        # The unrounded line points are proportional to the eligible units: apportion by those.
        base = _apportion(_round_ratio(sum(eligible) * rate.numerator, denominator, mode), eligible, keys)
    for item, points in zip(lines, base, strict=True):
        item.base_points = points

    # 5. Which rules apply to the order: conditions, basis lines and own tests, then limits, then groups.
    ordered = sorted(rules.rules, key=lambda rule: (rule.priority, rule.id))
    earning = [item for item in lines if not item.excluded_by and item.eligible_units > 0]
    applicable: list[tuple[EarnRule, list[int]]] = []
    skipped: list[SkippedRule] = []
    for rule in ordered:
        if not _order_conditions_hold(rule.conditions, purchase, member, local):
            continue
        basis = [item.index for item in earning if _line_conditions_hold(rule.conditions, item.line)]
        if not basis:
            continue
        if rule.kind == "first_purchase_bonus" and not member.first_purchase:
            continue
        if rule.kind == "birthday_bonus":
            assert rule.birthday_match is not None
            if member.birthday is None or not _birthday_matches(member.birthday, local.date(), rule.birthday_match):
                continue
        if rule.kind == "threshold_bonus":
            assert rule.min_total is not None
            if Fraction(sum(lines[i].eligible_units for i in basis), 10**decimals) < Fraction(rule.min_total):
                continue
        reached = _limit_reached(rule, member)
        if reached is not None:
            skipped.append(reached)
            continue
        applicable.append((rule, basis))
    group_winner: dict[str, str] = {}
    surviving: list[tuple[EarnRule, list[int]]] = []
    for rule, basis in applicable:
        if rule.group is not None:
            winner = group_winner.setdefault(rule.group, rule.id)
            if winner != rule.id:
                skipped.append(SkippedRule(rule_id=rule.id, reason="group", group=rule.group, by_rule_id=winner))
                continue
        surviving.append((rule, basis))

    # 6. Multipliers, per line.
    multipliers = [(rule, set(basis)) for rule, basis in surviving if rule.kind == "multiplier"]
    for item in earning:
        chosen = _first_exclusive_or_all([rule for rule, basis in multipliers if item.index in basis])
        product = Fraction(1)
        previous = item.base_points
        for rule in chosen:
            if rule.applies_to == "base":
                continue
            assert rule.factor is not None
            product *= Fraction(rule.factor)
            current = _round(item.base_points * product, mode)
            item.contributions.append(RuleContribution(rule_id=rule.id, kind="multiplier", points=current - previous))
            previous = current
        for rule in chosen:
            if rule.applies_to != "base":
                continue
            assert rule.factor is not None
            # base points x (factor - 1), as round(base x factor) - base (rounding a non-negative value); never
            # more than the line holds so far, so a line never goes below zero
            points = max(_round(item.base_points * Fraction(rule.factor), mode) - item.base_points, -item.gross)
            item.contributions.append(RuleContribution(rule_id=rule.id, kind="multiplier", points=points))

    # 7. Bonuses, decided once per order.
    applicable_bonuses = [
        _Bonus(rule=rule, points=rule.points, basis=basis, basis_units=sum(lines[i].eligible_units for i in basis))
        for rule, basis in surviving if rule.kind_group == "bonus" and rule.points is not None
    ]
    chosen_bonuses = {rule.id for rule in _first_exclusive_or_all([bonus.rule for bonus in applicable_bonuses])}
    order_bonuses: list[_Bonus] = []
    for bonus in applicable_bonuses:
        if bonus.rule.id not in chosen_bonuses:
            continue
        if bonus.rule.kind == "fixed_bonus" and bonus.rule.per in ("line", "unit"):
            for i in bonus.basis:
                points = bonus.points * (lines[i].line.quantity if bonus.rule.per == "unit" else 1)
                lines[i].contributions.append(
                    RuleContribution(rule_id=bonus.rule.id, kind="fixed_bonus", points=points)
                )
        else:
            order_bonuses.append(bonus)

    # 8. Caps.
    line_gross = [item.gross for item in lines]
    gross = sum(line_gross) + sum(bonus.points for bonus in order_bonuses)
    allowed = gross
    capped: list[CapApplied] = []
    caps = rules.caps
    cap_checks: list[tuple[CapName, int | None, int]] = [
        ("per_order", caps.per_order, 0),
        ("per_member_per_day", caps.per_member_per_day, member.earned_today),
        ("per_member_per_month", caps.per_member_per_month, member.earned_this_month),
    ]
    for name, limit, used in cap_checks:
        if limit is None:
            continue
        allowance = max(0, limit - used)
        if allowed > allowance:
            capped.append(CapApplied(cap=name, limit=limit, allowance=allowance, points_removed=allowed - allowance))
            allowed = allowance
    to_remove = gross - allowed
    for bonus in reversed(order_bonuses):
        take = min(to_remove, bonus.points)
        bonus.capped_points = take
        to_remove -= take
    if to_remove:
        kept = _apportion(sum(line_gross) - to_remove, line_gross, keys)
        for item, g, k in zip(lines, line_gross, kept, strict=True):
            item.capped_points = g - k

    # 9. The award.
    if allowed > MAX_POINTS:
        raise DomainError("points_out_of_range", f"the purchase would earn {allowed} points, more than {MAX_POINTS}")
    line_awards = [
        LineAward(
            index=item.index,
            sku=item.line.sku,
            quantity=item.line.quantity,
            excluded_by=item.excluded_by,
            eligible_amount=_from_units(item.eligible_units, decimals),
            order_discount=_from_units(n - p, decimals),
            base_points=item.base_points,
            contributions=item.contributions,
            capped_points=item.capped_points,
            points=item.gross - item.capped_points,
        )
        for item, n, p in zip(lines, net, paid_net, strict=True)
    ]
    bonus_awards = [
        OrderBonus(
            rule_id=bonus.rule.id,
            kind=_bonus_kind(bonus.rule.kind),
            points=bonus.points - bonus.capped_points,
            capped_points=bonus.capped_points,
            basis_eligible_amount=_from_units(bonus.basis_units, decimals),
            line_indexes=bonus.basis,
            min_total=bonus.rule.min_total,
        )
        for bonus in order_bonuses
    ]
    award = Award(
        points=allowed,
        rounding=mode,
        occurred_at_local=local,
        eligible_amount=_from_units(sum(eligible), decimals),
        base_points=sum(base),
        lines=line_awards,
        order_bonuses=bonus_awards,
        capped=capped,
        skipped=skipped,
    )
    assert award.points == sum(line.points for line in line_awards) + sum(b.points for b in bonus_awards)
    return award


def applied_rule_ids(award: Award) -> set[str]:
    """The rules that applied to the purchase of ``award``: every rule in its breakdown (a line contribution or an
    order bonus), whatever caps removed afterwards."""
    return {c.rule_id for line in award.lines for c in line.contributions} | {b.rule_id for b in award.order_bonuses}


def _bonus_kind(kind: RuleKind) -> BonusKind:
    if kind == "multiplier":
        raise AssertionError("a multiplier is never an order bonus")
    return kind


def _to_units(value: Decimal, decimals: int) -> int:
    """``value * 10**decimals`` as an exact integer (``value`` has at most ``decimals`` decimals)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int) and exponent + decimals >= 0, "amount has more decimals than expected"
    units = int("".join(map(str, digits)) + "0" * (exponent + decimals))
    return -units if sign else units


# --------------------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------------------


class EventAward(_Out):
    event_name: str
    points: int = Field(description="Points to award now; 0 when a limit is reached")
    limited_by: EventPeriod | None = Field(description="The limit that stopped the award, if any")
    limit: int | None = Field(default=None, description="That limit's value")


def evaluate_event(rules: RuleSet, event_name: str, member_event_count_in_period: Mapping[str, int]) -> EventAward:
    """Points for one occurrence of the custom event ``event_name``.

    ``member_event_count_in_period`` holds how many times this member was already awarded this event, by period:
    ``"ever"``, ``"month"`` and ``"day"`` (local calendar month and day of the event in the programme time
    zone). Only the periods the rule limits are read (see :func:`event_periods_needed`); a missing one is a
    caller bug (``ValueError``). Limits are checked ever, then month, then day; the first reached is reported.
    An unknown event name is ``DomainError("validation_error")``.
    """
    rule = _event_rule(rules, event_name)
    limits: list[tuple[EventPeriod, int | None]] = [
        ("ever", rule.max_ever),
        ("month", rule.max_per_month),
        ("day", rule.max_per_day),
    ]
    for period, limit in limits:
        if limit is None:
            continue
        if period not in member_event_count_in_period:
            raise ValueError(f"event {event_name!r} is limited per {period}: its count for that period is required")
        count = member_event_count_in_period[period]
        if count < 0:
            raise ValueError(f"the {period} count of event {event_name!r} must not be negative")
        if count >= limit:
            return EventAward(event_name=event_name, points=0, limited_by=period, limit=limit)
    return EventAward(event_name=event_name, points=rule.points, limited_by=None)


def event_periods_needed(rules: RuleSet, event_name: str) -> set[EventPeriod]:
    """The periods whose counts :func:`evaluate_event` needs for ``event_name``."""
    rule = _event_rule(rules, event_name)
    needed: set[EventPeriod] = set()
    if rule.max_ever is not None:
        needed.add("ever")
    if rule.max_per_month is not None:
        needed.add("month")
    if rule.max_per_day is not None:
        needed.add("day")
    return needed


def _event_rule(rules: RuleSet, event_name: str) -> EventRule:
    for rule in rules.events:
        if rule.name == event_name:
            return rule
    raise DomainError("validation_error", f"event {event_name!r} is not defined in this programme")


# --------------------------------------------------------------------------------------------------------------
# Returns and clawback
# --------------------------------------------------------------------------------------------------------------


class ReturnedLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Code
    quantity: int = Field(gt=0, le=MAX_QUANTITY)
    line_index: int | None = Field(
        default=None, ge=0, lt=MAX_LINES,
        description="The purchase line; default: lines of this SKU in order, first unreturned",
    )


class ReturnRequest(BaseModel):
    """Either returned ``lines`` or a refunded ``amount`` (net of line discounts, spread over the lines)."""

    model_config = ConfigDict(extra="forbid")

    lines: list[ReturnedLine] | None = Field(default=None, min_length=1, max_length=MAX_LINES)
    amount: Annotated[DecimalText, Field(gt=0, le=MAX_AMOUNT, decimal_places=6)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ReturnRequest:
        if (self.lines is None) == (self.amount is None):
            raise ValueError("give exactly one of lines or amount")
        return self


class LineClawback(_Out):
    index: int
    sku: str
    points: int = Field(description="Clawed back by this return")
    cumulative_points: int = Field(description="Clawed back from this line by all returns so far")
    returned_quantity: int = Field(description="Units of the line returned so far (amount returns not counted)")


class BonusClawback(_Out):
    rule_id: str
    kind: BonusKind | Literal["redacted"]
    points: int
    cumulative_points: int


class ClawbackResult(_Out):
    points: int = Field(description="Points to claw back for this return, >= 0")
    lines: list[LineClawback] = Field(description="Lines this return touched")
    order_bonuses: list[BonusClawback] = Field(description="Order bonuses this return claws back from")
    cumulative_points: int = Field(description="Clawed back by all returns so far, this one included")
    remaining_points: int = Field(description="award.points - cumulative_points")
    released_rule_ids: list[str] = Field(
        default_factory=list, description="Rules of the award this return took back entirely (everything they gave "
        "on this purchase): they no longer count toward their limits")


@dataclass
class _Returns:
    """Cumulative state of the returns of one purchase."""

    purchase: Purchase
    nets: list[Fraction]  # each line's net amount, as paid (scaled down to the total, see _paid_net_units)
    units: list[int]
    fraction: list[Fraction]

    @classmethod
    def start(cls, purchase: Purchase) -> _Returns:
        decimals = _amount_decimals(purchase)
        keys = [_line_key(line, i) for i, line in enumerate(purchase.lines)]
        _, paid = _paid_net_units(purchase, decimals, keys)
        size = len(purchase.lines)
        return cls(purchase=purchase, nets=[Fraction(units, 10**decimals) for units in paid], units=[0] * size,
                   fraction=[Fraction(0)] * size)

    def apply(self, request: ReturnRequest, where: str) -> None:
        if request.amount is not None:
            self._apply_amount(request.amount, where)
        else:
            assert request.lines is not None
            for returned in request.lines:
                self._apply_line(returned, where)

    def _apply_line(self, returned: ReturnedLine, where: str) -> None:
        lines = self.purchase.lines
        if returned.line_index is not None:
            if returned.line_index >= len(lines) or lines[returned.line_index].sku != returned.sku:
                raise DomainError(
                    "validation_error",
                    f"{where}: line {returned.line_index} of the purchase is not SKU {returned.sku!r}",
                )
            candidates = [returned.line_index]
        else:
            candidates = [i for i, line in enumerate(lines) if line.sku == returned.sku]
            if not candidates:
                raise DomainError("validation_error", f"{where}: SKU {returned.sku!r} is not in the purchase")
        available = sum(lines[i].quantity - self.units[i] for i in candidates)
        if returned.quantity > available:
            raise DomainError(
                "validation_error",
                f"{where}: returning {returned.quantity} of SKU {returned.sku!r}, but only {available} "
                "bought and not yet returned",
                sku=returned.sku,
                available_quantity=available,
            )
        left = returned.quantity
        for i in candidates:
            unreturned = lines[i].quantity - self.units[i]
            take = min(left, unreturned)
            if take:
                self.fraction[i] += (1 - self.fraction[i]) * Fraction(take, unreturned)
                self.units[i] += take
                left -= take

    def _apply_amount(self, amount: Decimal, where: str) -> None:
        kept = [net * (1 - f) for net, f in zip(self.nets, self.fraction, strict=True)]
        kept_total = sum(kept, Fraction(0))
        if amount > kept_total:
            available = _approx(kept_total)
            raise DomainError(
                "validation_error",
                f"{where}: returning an amount of {amount}, more than the {available} bought and not yet returned",
                available_amount=str(available),
            )
        keep_share = 1 - Fraction(amount) / kept_total
        for i, value in enumerate(kept):
            if value > 0:
                self.fraction[i] = 1 - (1 - self.fraction[i]) * keep_share


def _approx(value: Fraction) -> Decimal:
    """``value`` for a message: exact with 2 to 6 decimals if possible, else rounded down to 6 decimals."""
    approx = Decimal(value.numerator) / Decimal(value.denominator)
    for places in range(2, 7):
        candidate = approx.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)
        if Fraction(candidate) == value:
            return candidate
    return candidate


def _clawed(award: Award, state: _Returns) -> tuple[list[int], list[int]]:
    """Cumulative points clawed back per line and per order bonus, for the returns in ``state``."""
    mode = award.rounding
    per_line = [_round(line.points * f, mode) for line, f in zip(award.lines, state.fraction, strict=True)]
    per_bonus: list[int] = []
    for bonus in award.order_bonuses:
        basis = Fraction(bonus.basis_eligible_amount)
        returned = sum(
            (Fraction(award.lines[i].eligible_amount) * state.fraction[i] for i in bonus.line_indexes), Fraction(0)
        )
        if bonus.kind == "threshold_bonus":
            assert bonus.min_total is not None
            per_bonus.append(bonus.points if basis - returned < Fraction(bonus.min_total) else 0)
        elif basis > 0:
            per_bonus.append(_round(bonus.points * returned / basis, mode))
        else:
            per_bonus.append(0)
    return per_line, per_bonus


def _released(award: Award, state: _Returns, clawed_bonuses: list[int]) -> set[str]:
    """The rules everything of which the returns in ``state`` took back: an order bonus once all its points are
    clawed back (or, if caps left it none, once all its basis lines are returned), a line rule (multiplier, bonus
    per line or unit) once every line it contributed to is returned in full."""
    released: set[str] = set()
    for bonus, clawed in zip(award.order_bonuses, clawed_bonuses, strict=True):
        lines_back = all(state.fraction[i] == 1 for i in bonus.line_indexes)
        if (bonus.points > 0 and clawed >= bonus.points) or lines_back:
            released.add(bonus.rule_id)
    on_lines: dict[str, bool] = {}
    for line in award.lines:
        for contribution in line.contributions:
            back = state.fraction[line.index] == 1
            on_lines[contribution.rule_id] = on_lines.get(contribution.rule_id, True) and back
    return released | {rule_id for rule_id, back in on_lines.items() if back}


def clawback(
    award: Award,
    purchase: Purchase,
    returned: ReturnRequest,
    already_returned: Sequence[ReturnRequest] = (),
) -> ClawbackResult:
    """Points to take back for ``returned``, given the earlier returns of the same purchase.

    ``award`` is the stored award of ``purchase``; ``already_returned`` are the earlier return requests of this
    purchase, in the order they were accepted (the caller stores them). Returning more than was bought, counted
    cumulatively, raises ``DomainError("validation_error")``. The clawbacks of all returns of a purchase never
    sum to more than ``award.points``; returning everything claws back exactly ``award.points``.
    """
    if len(award.lines) != len(purchase.lines) or any(
        line.index != i or line.sku != purchase.lines[i].sku for i, line in enumerate(award.lines)
    ):
        raise DomainError("validation_error", "the award does not belong to this purchase")
    state = _Returns.start(purchase)
    for k, earlier in enumerate(already_returned):
        state.apply(earlier, f"already_returned[{k}]")
    before_fraction = list(state.fraction)
    lines_before, bonuses_before = _clawed(award, state)
    released_before = _released(award, state, bonuses_before)
    state.apply(returned, "return")
    lines_after, bonuses_after = _clawed(award, state)
    released_after = _released(award, state, bonuses_after)

    line_claws = [
        LineClawback(
            index=i,
            sku=award.lines[i].sku,
            points=lines_after[i] - lines_before[i],
            cumulative_points=lines_after[i],
            returned_quantity=state.units[i],
        )
        for i in range(len(award.lines))
        if state.fraction[i] != before_fraction[i]
    ]
    bonus_claws = [
        BonusClawback(
            rule_id=bonus.rule_id,
            kind=bonus.kind,
            points=bonuses_after[j] - bonuses_before[j],
            cumulative_points=bonuses_after[j],
        )
        for j, bonus in enumerate(award.order_bonuses)
        if bonuses_after[j] != bonuses_before[j]
    ]
    cumulative = sum(lines_after) + sum(bonuses_after)
    now = cumulative - sum(lines_before) - sum(bonuses_before)
    assert now >= 0 and cumulative <= award.points
    return ClawbackResult(
        points=now,
        lines=line_claws,
        order_bonuses=bonus_claws,
        cumulative_points=cumulative,
        remaining_points=award.points - cumulative,
        released_rule_ids=sorted(released_after - released_before),
    )


# --------------------------------------------------------------------------------------------------------------
# Erasure: what reveals the birthday
# --------------------------------------------------------------------------------------------------------------


def personal_rule_ids(rules: RuleSet) -> set[str]:
    """The rules whose applying depends on the member's birthday (a ``birthday_bonus``, or any rule with a
    ``birthday`` condition): where such a rule shows in an award, the award reveals the birthday."""
    return {rule.id for rule in rules.rules if rule.personal}


def redact_award(award: Award, personal: set[str]) -> Award:
    """``award`` without what names the ``personal`` rules: their line contributions and order bonuses get the
    ``rule_id`` ``"redacted"`` (a ``birthday_bonus`` also the ``kind`` ``"redacted"``), and skipped entries for
    them go. Every number stays, so the breakdown still adds up to the points and returns claw back exactly as
    before (a birthday bonus is clawed back in proportion, as any other order bonus that is not a threshold
    bonus). Idempotent."""
    if not personal:
        return award
    lines = [
        line.model_copy(update={"contributions": [
            c.model_copy(update={"rule_id": REDACTED}) if c.rule_id in personal else c for c in line.contributions]})
        for line in award.lines
    ]
    bonuses = [_redact_bonus(b) if b.rule_id in personal else b for b in award.order_bonuses]
    skipped = [s for s in award.skipped if s.rule_id not in personal and s.by_rule_id not in personal]
    return award.model_copy(update={"lines": lines, "order_bonuses": bonuses, "skipped": skipped})


def redact_clawback(result: ClawbackResult, personal: set[str]) -> ClawbackResult:
    """A return's clawback without what names the ``personal`` rules (see :func:`redact_award`)."""
    if not personal:
        return result
    bonuses = [_redact_bonus(b) if b.rule_id in personal else b for b in result.order_bonuses]
    released = [r for r in result.released_rule_ids if r not in personal]
    return result.model_copy(update={"order_bonuses": bonuses, "released_rule_ids": released})


Bonus = TypeVar("Bonus", OrderBonus, BonusClawback)


def _redact_bonus(bonus: Bonus) -> Bonus:
    # The kind stays unless it is the birthday's own: a threshold bonus keeps being clawed back as one.
    kind = REDACTED if bonus.kind == "birthday_bonus" else bonus.kind
    return bonus.model_copy(update={"rule_id": REDACTED, "kind": kind})
