"""The liability forecast: of the points outstanding now, how many will be redeemed and how many will break
(expire, or stay unredeemed), and when. Pure functions of plain data; no database, no clock.

**Method (by lot age).** Every credit is a lot; its points leave it by allocations (a redemption, hold, capture or
exchange consumes them; a refund, void or release gives them back; the sweep expires them). Lots are grouped by
their credit month (the *cohort*) and every allocation is placed at the lot's *age* in whole calendar months when it
happened. From the programme's own history before the forecast month T:

* exposure ``E[k]`` = the points still in the lots at the start of age k, over the cohorts observed through all of
  age k (credited at least k + 1 months before T);
* redemption rate ``r[k] = R[k] / E[k]``, R[k] the net points redeemed from those lots during age k (refunds and
  voids net out).

Ages with no exposure take the mean rate of the last three ages observed (the *tail rate*); with no history at all
the rate is 0, and everything outstanding is forecast to break.

Each group of open points (cohort, expiry month, points left at T) is walked month by month from its age at T: in
each month before its expiry month, ``points × r[age]`` are expected to be redeemed and leave the group; in its
expiry month what is left is expected to expire (breakage then). Points without an expiry (or under the activity
policy, whose date depends on the member) that are still left after ``LIFETIME_MONTHS`` (10 years) are reported as
``never_redeemed`` and counted as breakage. Held points (reserved by an open checkout hold) are forecast as redeemed
in the first month. Months after the horizon are summed as ``later``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

TAIL_AGES = 3


@dataclass(frozen=True, slots=True)
class CohortFlows:
    """A credit month's lots: their points, and per age (months) the points redeemed (net) and otherwise removed
    (expired, clawed back, debited by an adjustment) during that age."""

    cohort: int  # month index: year * 12 + month - 1
    points: int
    redeemed: dict[int, int] = field(default_factory=dict)
    removed: dict[int, int] = field(default_factory=dict)  # everything else that left the lots (expiry included)


@dataclass(frozen=True, slots=True)
class OpenPoints:
    cohort: int
    expires_month: int | None  # month index of the expiry; None: no date of its own
    points: int


@dataclass(frozen=True, slots=True)
class MonthForecast:
    month: int
    redeemed: float
    breakage: float


@dataclass(frozen=True, slots=True)
class Forecast:
    months: list[MonthForecast]  # the horizon, month by month
    redeemed: float  # over the points' whole life (LIFETIME_MONTHS at most)
    breakage: float  # expiries, and what is still left after LIFETIME_MONTHS
    later_redeemed: float  # after the horizon
    later_breakage: float
    never_redeemed: float  # points without an expiry still left after LIFETIME_MONTHS (part of breakage)
    rates: list[float]  # the redemption rate by age used (observed ages; later ages use the tail rate)
    tail_rate: float


LIFETIME_MONTHS = 120


def redemption_rates(cohorts: Iterable[CohortFlows], as_of: int) -> tuple[list[float], float]:
    """Redemption rate by age from the cohorts' flows before month ``as_of`` (see the module docstring), and the
    tail rate."""
    cohorts = [c for c in cohorts if c.cohort < as_of]
    if not cohorts:
        return [], 0.0
    max_age = as_of - min(c.cohort for c in cohorts) - 1
    exposure = [0.0] * (max_age + 1)
    redeemed = [0.0] * (max_age + 1)
    for c in cohorts:
        left = float(c.points)
        for k in range(as_of - c.cohort):  # ages fully observed before as_of
            exposure[k] += max(left, 0.0)
            r = c.redeemed.get(k, 0)
            redeemed[k] += r
            left -= r + c.removed.get(k, 0)
    rates = [min(max(r / e, 0.0), 1.0) if e > 0 else -1.0 for r, e in zip(redeemed, exposure, strict=True)]
    observed = [r for r in rates if r >= 0]
    tail = sum(observed[-TAIL_AGES:]) / len(observed[-TAIL_AGES:]) if observed else 0.0
    return [r if r >= 0 else tail for r in rates], tail


def forecast(open_points: Iterable[OpenPoints], rates: list[float], tail_rate: float, as_of: int, horizon: int,
             held: int = 0) -> Forecast:
    """Expected redemptions and breakage per month from ``as_of`` for ``horizon`` (at least 1) months, and after."""
    if horizon < 1:
        raise ValueError("the horizon is at least one month")
    redeemed = [0.0] * horizon
    breakage = [0.0] * horizon
    later_redeemed = later_breakage = never = 0.0
    redeemed[0] += held
    for g in open_points:
        left = float(g.points)
        for i in range(LIFETIME_MONTHS):
            month = as_of + i
            if g.expires_month is not None and month >= g.expires_month:
                if i < horizon:
                    breakage[i] += left
                else:
                    later_breakage += left
                left = 0.0
                break
            age = month - g.cohort
            r = left * (rates[age] if 0 <= age < len(rates) else tail_rate)
            if i < horizon:
                redeemed[i] += r
            else:
                later_redeemed += r
            left -= r
        never += left
    months = [MonthForecast(as_of + i, redeemed[i], breakage[i]) for i in range(horizon)]
    return Forecast(months=months, redeemed=sum(redeemed) + later_redeemed,
                    breakage=sum(breakage) + later_breakage + never, later_redeemed=later_redeemed,
                    later_breakage=later_breakage + never, never_redeemed=never, rates=rates, tail_rate=tail_rate)


def month_index(year: int, month: int) -> int:
    return year * 12 + month - 1


def month_text(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
