"""Programme health: the summary of a period (members, purchases, points, rates, liability, cohorts).

Definitions (README "Insight", programme health):

* Periods are UTC days, ISO weeks (from Monday) or calendar months, cut to [from, to). Everything is dated by
  business time: purchases by their UTC day (the per-member daily totals), ledger entries by ``occurred_at``.
* ``issued`` = net points granted = -(postings to the system accounts ``issued`` and ``adjustments``); ``redeemed``
  and ``expired`` = the postings to those accounts. Reversals, clawbacks and refunds are netted where they post.
* ``outstanding`` at a period's end = issued - redeemed - expired to date. Since every entry sums to zero, this is
  exactly the members' available + pending + held (what ``verify`` checks for the books of today).
* ``redemption_rate`` = redeemed to date / issued to date, ``breakage_rate`` = expired to date / issued to date, both
  at the period's end (cumulative: a period's own ratio would mostly compare points issued and redeemed at
  different times). Redemption + breakage + outstanding share = 1.
* ``repeat_purchase_rate`` = of the members who purchased in the period, the share whose purchases to the period's
  end are two or more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from app.errors import DomainError
from app.insight import queries as q
from app.insight.forecast import CohortFlows, OpenPoints, forecast, month_index, month_text, redemption_rates
from app.insight.rfm import thresholds
from app.insight.schemas import (
    AgeRate,
    Cohort,
    ForecastLater,
    ForecastMonth,
    Granularity,
    LiabilityForecast,
    MemberCounts,
    PointsFigures,
    Summary,
    SummaryPeriod,
)
from app.money import MINOR_UNITS
from app.programs.context import Principal
from app.redemption.conversion import points_value

MAX_PERIODS = 400
# The summary and the forecast read a programme's whole history: longer than a request's statement timeout may
# allow at a million members (README "Insight", measured figures).
ANALYTICS_TIMEOUT_SECONDS = 120.0
_SHARE = Decimal("0.0001")


def share(part: int | Decimal, whole: int | Decimal) -> Decimal:
    return (Decimal(part) / Decimal(whole)).quantize(_SHARE) if whole else Decimal("0.0000")


def periods_between(start: date, end: date, granularity: Granularity) -> int:
    if granularity == "day":
        return (end - start).days
    if granularity == "week":
        first = start - timedelta(days=start.weekday())
        return -(-(end - first).days // 7)
    return (end.year - start.year) * 12 + end.month - start.month + (1 if end.day > 1 else 0)


def _months(first: date, last: date) -> list[str]:
    out, y, m = [], first.year, first.month
    while (y, m) <= (last.year, last.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


@asynccontextmanager
async def _analytics(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a read-only REPEATABLE READ transaction (every figure of one answer from one snapshot),
    allowed ANALYTICS_TIMEOUT_SECONDS instead of the requests' statement timeout."""
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        await conn.execute(f"SET LOCAL statement_timeout = {int(ANALYTICS_TIMEOUT_SECONDS * 1000)}")
        yield conn


async def lapsed_days_for(conn: asyncpg.Connection | asyncpg.Pool, p: Principal) -> int:
    last = await conn.fetchval(q.LAST_LAPSED_DAYS, p.program_id)
    if last is not None:
        return int(last)
    s = p.settings
    return thresholds(None, s.lifecycle_new_days, s.lifecycle_at_risk_days, s.lifecycle_lapsed_days).lapsed_days


async def summary(pool: asyncpg.Pool, p: Principal, start: date | None, end: date | None, granularity: Granularity,
                  today: date | None = None) -> Summary:
    """The programme's health per period (see the module docstring), in one read-only snapshot."""
    async with _analytics(pool) as conn:
        return await _summary(conn, p, start, end, granularity, today)


async def _summary(conn: asyncpg.Connection, p: Principal, start: date | None, end: date | None,
                   granularity: Granularity, today: date | None = None) -> Summary:
    today = today or datetime.now(UTC).date()
    end = end or today + timedelta(days=1)
    start = start or end - timedelta(days=30)
    if start >= end:
        raise DomainError("validation_error", "`from` must be before `to`.")
    if periods_between(start, end, granularity) > MAX_PERIODS:
        raise DomainError("validation_error", f"At most {MAX_PERIODS} periods: choose a coarser granularity or a "
                          "shorter range.")
    lapsed_days = await lapsed_days_for(conn, p)
    rows = await conn.fetch(q.SUMMARY, p.program_id, start, end, granularity, lapsed_days, today,
                            timeout=ANALYTICS_TIMEOUT_SECONDS)
    quantum = Decimal(1).scaleb(-MINOR_UNITS[p.currency])
    periods = []
    for r in rows:
        outstanding = r["issued_to_date"] - r["redeemed_to_date"] - r["expired_to_date"]
        periods.append(SummaryPeriod(
            start=r["start"], end=r["stop"],
            members=MemberCounts(new=r["new_members"], active=r["active_members"], lapsed=r["lapsed_members"],
                                 repeat=r["repeat_members"]),
            purchases=r["purchases"], spend=Decimal(r["spend"]).quantize(quantum),
            repeat_purchase_rate=share(r["repeat_members"], r["active_members"]),
            points=PointsFigures(issued=r["issued"], redeemed=r["redeemed"], expired=r["expired"],
                                 outstanding=outstanding,
                                 outstanding_value=points_value(max(outstanding, 0), p.settings, p.currency)),
            redemption_rate=share(r["redeemed_to_date"], r["issued_to_date"]),
            breakage_rate=share(r["expired_to_date"], r["issued_to_date"]),
        ))
    cohorts = []
    last_month = end - timedelta(days=1)
    for c in await conn.fetch(q.COHORTS, p.program_id, start, end, timeout=ANALYTICS_TIMEOUT_SECONDS):
        active_by_month: dict[str, Any] = c["active"]
        months = _months(c["cohort"], last_month)
        active = [int(active_by_month.get(m, 0)) for m in months]
        cohorts.append(Cohort(cohort=months[0], members=c["members"], active=active,
                              retention=[share(a, c["members"]) for a in active]))
    return Summary(start=start, end=end, granularity=granularity, currency=p.currency, lapsed_days=lapsed_days,
                   periods=periods, cohorts=cohorts)


# --- the liability forecast ---------------------------------------------------------------------------------


def _rate(value: float) -> Decimal:
    return Decimal(repr(round(value, 6))).quantize(Decimal("0.000001"))


async def liability_forecast(pool: asyncpg.Pool, p: Principal, horizon: int,
                             now: datetime | None = None) -> LiabilityForecast:
    """The outstanding points now, and when they are expected to be redeemed or break (``app/insight/forecast.py``
    has the method), in one read-only snapshot."""
    async with _analytics(pool) as conn:
        return await _liability_forecast(conn, p, horizon, now)


async def _liability_forecast(conn: asyncpg.Connection, p: Principal, horizon: int,
                              now: datetime | None = None) -> LiabilityForecast:
    now = now or datetime.now(UTC)
    as_of = month_index(now.year, now.month)
    flows: dict[int, CohortFlows] = {}
    for row in await conn.fetch(q.LOT_COHORTS, p.program_id, now, timeout=ANALYTICS_TIMEOUT_SECONDS):
        flows[row["cohort"]] = CohortFlows(cohort=row["cohort"], points=int(row["points"]))
    for row in await conn.fetch(q.LOT_FLOWS, p.program_id, now, q.REDEEMING_KINDS, timeout=ANALYTICS_TIMEOUT_SECONDS):
        c = flows.get(row["cohort"])
        if c is not None:
            c.redeemed[row["age"]] = int(row["redeemed"])
            c.removed[row["age"]] = int(row["removed"])
    # The current month is not fully observed: rates come from the months before it.
    rates, tail = redemption_rates(flows.values(), as_of)
    groups = [OpenPoints(cohort=r["cohort"], expires_month=r["expires_month"], points=int(r["points"]))
              for r in await conn.fetch(q.OPEN_POINTS, p.program_id, timeout=ANALYTICS_TIMEOUT_SECONDS)]
    totals = await conn.fetchrow(q.LIABILITY_NOW, p.program_id, timeout=ANALYTICS_TIMEOUT_SECONDS)
    held = int(totals["held"])
    f = forecast(groups, rates, tail, as_of, horizon, held=held)

    def value(points: int) -> Decimal:
        return points_value(max(points, 0), p.settings, p.currency)

    covered = sum(g.points for g in groups) + held
    months = [ForecastMonth(month=month_text(m.month), redeemed=round(m.redeemed), breakage=round(m.breakage),
                            redeemed_value=value(round(m.redeemed)), breakage_value=value(round(m.breakage)))
              for m in f.months]
    later_redeemed = round(f.later_redeemed)
    redeemed = sum(m.redeemed for m in months) + later_redeemed
    breakage = covered - redeemed  # exact: every point is redeemed or breaks
    outstanding = int(totals["outstanding"])
    return LiabilityForecast(
        as_of=now, currency=p.currency, outstanding=outstanding, outstanding_value=value(outstanding),
        forecast_points=covered, expected_redeemed=redeemed, expected_breakage=breakage,
        expected_breakage_rate=share(breakage, covered), expected_redeemed_value=value(redeemed),
        expected_breakage_value=value(breakage), never_redeemed=round(f.never_redeemed), horizon_months=horizon,
        months=months,
        later=ForecastLater(redeemed=later_redeemed, breakage=breakage - sum(m.breakage for m in months)),
        rates=[AgeRate(age_months=k, redemption_rate=_rate(r)) for k, r in enumerate(rates)],
        tail_rate=_rate(tail))
