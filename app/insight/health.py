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

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from app.errors import DomainError
from app.insight import queries as q
from app.insight.rfm import thresholds
from app.insight.schemas import Cohort, Granularity, MemberCounts, PointsFigures, Summary, SummaryPeriod
from app.money import MINOR_UNITS
from app.programs.context import Principal
from app.redemption.conversion import points_value

MAX_PERIODS = 400
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


async def lapsed_days_for(conn: asyncpg.Connection | asyncpg.Pool, p: Principal) -> int:
    last = await conn.fetchval(q.LAST_LAPSED_DAYS, p.program_id)
    if last is not None:
        return int(last)
    s = p.settings
    return thresholds(None, s.lifecycle_new_days, s.lifecycle_at_risk_days, s.lifecycle_lapsed_days).lapsed_days


async def summary(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, start: date | None, end: date | None,
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
    rows = await conn.fetch(q.SUMMARY, p.program_id, start, end, granularity, lapsed_days, today)
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
    for c in await conn.fetch(q.COHORTS, p.program_id, start, end):
        active_by_month: dict[str, Any] = c["active"]
        months = _months(c["cohort"], last_month)
        active = [int(active_by_month.get(m, 0)) for m in months]
        cohorts.append(Cohort(cohort=months[0], members=c["members"], active=active,
                              retention=[share(a, c["members"]) for a in active]))
    return Summary(start=start, end=end, granularity=granularity, currency=p.currency, lapsed_days=lapsed_days,
                   periods=periods, cohorts=cohorts)
