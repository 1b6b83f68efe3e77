"""Backtest of the liability forecast (app/insight/forecast.py) on a generated multi-year history.

    .venv/bin/python -m bench.liability_backtest [--members 5000] [--years 5] [--at 36] [--seed 17] [--quick]

A programme is simulated month by month, in process (the same lot rules as the ledger: every credit is a lot that
expires at the end of its 24th month; debits take the soonest-expiring lots first; the sweep expires what is left):
members enrol over time, earn a member-specific number of points a month while active, go dormant for good with a
small monthly probability, and redeem in steps of 100 points when their balance allows, each with its own
propensity (lower once dormant). Behaviour drifts over the years (the share of dormant members grows), so the
history is not stationary.

At month T (``--at``) the forecast is made from what happened before T only: the cohort flows by lot age and the
points left in open lots at T. Then the simulation goes on, and the forecast is compared with what actually happened
to the points open at T, month by month and in total (every lot open at T expires within 24 months, so a 24-month
horizon sees their whole life).

Writes ``bench/results/liability-backtest-<run id>.json`` and prints the errors:
* total redeemed and total breakage: (forecast - actual) / actual;
* monthly WAPE: sum over months of |forecast - actual| (redeemed and breakage) / sum of actual.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.insight.forecast import CohortFlows, OpenPoints, forecast, redemption_rates

RESULTS = Path(__file__).resolve().parent / "results"
VALIDITY_MONTHS = 24


@dataclass
class Lot:
    cohort: int
    points: int
    left: int
    expires: int


@dataclass
class Member:
    enrolled: int
    earn: float
    propensity: float
    dormant: bool = False
    lots: list[Lot] = field(default_factory=list)


def simulate(members: int, months: int, seed: int) -> tuple[list[Lot], list[tuple[Lot, int, str, int]]]:
    """All lots, and every flow (lot, month, "redeemed" | "expired", points)."""
    rng = random.Random(seed)
    people = [Member(enrolled=int(rng.random() * months * 0.8), earn=rng.lognormvariate(5.0, 0.8),
                     propensity=rng.betavariate(2, 3)) for _ in range(members)]
    lots: list[Lot] = []
    flows: list[tuple[Lot, int, str, int]] = []
    for month in range(months):
        churn = 0.02 + 0.02 * month / months  # drifts upward
        for m in people:
            if month < m.enrolled:
                continue
            for lot in m.lots:  # the sweep: expire what is due this month
                if lot.left and lot.expires <= month:
                    flows.append((lot, month, "expired", lot.left))
                    lot.left = 0
            m.lots = [lot for lot in m.lots if lot.left]
            if not m.dormant and rng.random() < churn:
                m.dormant = True
            if not m.dormant and rng.random() < 0.7:
                points = max(1, int(rng.expovariate(1 / m.earn)))
                lot = Lot(cohort=month, points=points, left=points, expires=month + VALIDITY_MONTHS)
                lots.append(lot)
                m.lots.append(lot)
            balance = sum(lot.left for lot in m.lots)
            chance = m.propensity * (0.25 if m.dormant else 1.0)
            if balance >= 500 and rng.random() < chance:
                want = (balance * rng.uniform(0.5, 1.0)) // 100 * 100
                for lot in sorted(m.lots, key=lambda x: (x.expires, x.cohort)):
                    take = int(min(lot.left, want))
                    if take:
                        lot.left -= take
                        want -= take
                        flows.append((lot, month, "redeemed", take))
                    if not want:
                        break
    return lots, flows


def backtest(members: int, months: int, at: int, horizon: int, seed: int) -> dict[str, Any]:
    lots, flows = simulate(members, months, seed)
    # What was known at T: cohorts and their flows before T, and the points left in each lot at T.
    cohorts: dict[int, CohortFlows] = {}
    for lot in lots:
        if lot.cohort < at:
            c = cohorts.setdefault(lot.cohort, CohortFlows(lot.cohort, 0))
            cohorts[lot.cohort] = CohortFlows(lot.cohort, c.points + lot.points, c.redeemed, c.removed)
    left_at: dict[int, int] = {id(lot): lot.points for lot in lots if lot.cohort < at}
    for lot, month, kind, points in flows:
        if lot.cohort >= at:
            continue
        if month < at:
            target = cohorts[lot.cohort].redeemed if kind == "redeemed" else cohorts[lot.cohort].removed
            age = month - lot.cohort
            target[age] = target.get(age, 0) + points
            left_at[id(lot)] -= points
    groups: dict[tuple[int, int], int] = {}
    for lot in lots:
        if lot.cohort < at and left_at[id(lot)] > 0:
            key = (lot.cohort, lot.expires)
            groups[key] = groups.get(key, 0) + left_at[id(lot)]
    open_points = [OpenPoints(c, e, p) for (c, e), p in groups.items()]
    rates, tail = redemption_rates(cohorts.values(), at)
    f = forecast(open_points, rates, tail, at, horizon)
    # What happened to those points from T on.
    actual_redeemed = [0] * horizon
    actual_breakage = [0] * horizon
    for lot, month, kind, points in flows:
        if lot.cohort < at and at <= month < at + horizon:
            (actual_redeemed if kind == "redeemed" else actual_breakage)[month - at] += points
    outstanding = sum(groups.values())
    fr = [m.redeemed for m in f.months]
    fb = [m.breakage for m in f.months]
    total_actual = sum(actual_redeemed) + sum(actual_breakage)
    wape = (sum(abs(a - b) for a, b in zip(fr, actual_redeemed, strict=True))
            + sum(abs(a - b) for a, b in zip(fb, actual_breakage, strict=True))) / total_actual
    return {
        "members": members, "months": months, "forecast_at_month": at, "horizon_months": horizon, "seed": seed,
        "lots": len(lots), "outstanding_at_t": outstanding,
        "forecast": {"redeemed": round(sum(fr)), "breakage": round(sum(fb)),
                     "breakage_rate": round(sum(fb) / outstanding, 4)},
        "actual": {"redeemed": sum(actual_redeemed), "breakage": sum(actual_breakage),
                   "unresolved": outstanding - total_actual,
                   "breakage_rate": round(sum(actual_breakage) / outstanding, 4)},
        "error": {
            "redeemed": round((sum(fr) - sum(actual_redeemed)) / sum(actual_redeemed), 4),
            "breakage": round((sum(fb) - sum(actual_breakage)) / sum(actual_breakage), 4),
            "breakage_rate_points": round((sum(fb) - sum(actual_breakage)) / outstanding, 4),
            "monthly_wape": round(wape, 4),
        },
        "monthly": [{"month": i, "forecast_redeemed": round(fr[i]), "actual_redeemed": actual_redeemed[i],
                     "forecast_breakage": round(fb[i]), "actual_breakage": actual_breakage[i]}
                    for i in range(horizon)],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.liability_backtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=5000)
    p.add_argument("--years", type=int, default=5, help="length of the history (default 5)")
    p.add_argument("--at", type=int, default=36, help="forecast month T (default 36: after 3 years)")
    p.add_argument("--seed", type=int, action="append", help="random seed (repeatable; default 17, 18, 19)")
    p.add_argument("--quick", action="store_true", help="500 members, one seed")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    seeds = args.seed or ([17] if args.quick else [17, 18, 19])
    members = 500 if args.quick else args.members
    months = args.years * 12
    horizon = min(VALIDITY_MONTHS, months - args.at)
    runs = [backtest(members, months, args.at, horizon, seed) for seed in seeds]
    for r in runs:
        e = r["error"]
        print(f"seed {r['seed']}: outstanding at T {r['outstanding_at_t']:,} points; redeemed forecast "
              f"{r['forecast']['redeemed']:,} vs actual {r['actual']['redeemed']:,} ({e['redeemed']:+.1%}); breakage "
              f"{r['forecast']['breakage']:,} vs {r['actual']['breakage']:,} ({e['breakage']:+.1%}); monthly WAPE "
              f"{e['monthly_wape']:.1%}")
    doc = {"run_id": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"liability-backtest-{doc['run_id']}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
