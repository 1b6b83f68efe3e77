"""Insight refresh at scale: one programme of N members (1,000,000 by default) with a few years of purchase days,
generated set-based in SQL, then timed refreshes.

    .venv/bin/python -m bench.insight [--members 1000000] [--days 8] [--quick]

The members and their daily purchase totals (``member_purchase_days``) are written directly by SQL (no purchases
behind them: this database is for the measurement only, ``verify`` would not hold on it). Each member gets a
random enrolment in the last 3 years and on average ``--days`` purchase days between its enrolment and today
(skewed: many members with few, some with many). Then:

1. the first refresh (no previous refresh: no movement, no events);
2. 5% of the members buy again today; the second refresh (movement, and ``member.segment_changed`` for every
   member whose segment changed, set-based).

Each refresh runs as the scheduler and ``points-ledger insight refresh`` do (``app.insight.service.refresh``).
Writes ``bench/results/insight-<run id>.json`` (timings, sizes, segments, ``uptime`` before and after) and prints
it. Nothing is asserted; the target (issue 17) is a refresh of 1,000,000 members within 60 s on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import pg as pgmod

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

PROGRAM = """
INSERT INTO programs (name, currency, timezone, settings) VALUES ('bench insight', 'EUR', 'UTC', '{}')
RETURNING id
"""

MEMBERS = """
INSERT INTO members (program_id, external_id, name, email, created_at, updated_at)
SELECT $1, 'm' || lpad(g.i::text, 7, '0'), 'Member ' || g.i, 'm' || g.i || '@example.com',
       now() - make_interval(days => (random() * 1095)::int), now()
  FROM generate_series(1, $2::int) AS g(i)
"""

# Per member: a count of purchase days skewed towards few (random()^2), at distinct days between its enrolment
# and today; one to three purchases a day of 5.00 to 120.00 each.
PURCHASE_DAYS = """
INSERT INTO member_purchase_days (member_id, day, points, qualifying_points, spend, purchases)
SELECT d.member_id, d.day, (d.spend * 2)::bigint, (d.spend * 2)::bigint, d.spend, d.purchases
  FROM (
      SELECT DISTINCT ON (m.id, x.day) m.id AS member_id, x.day, x.purchases,
             round((x.purchases * (5 + random() * 115))::numeric, 2) AS spend
        FROM members m
        CROSS JOIN LATERAL (
            SELECT current_date - (random() * (current_date - (m.created_at AT TIME ZONE 'UTC')::date))::int AS day,
                   1 + (random() * random() * 3)::int AS purchases
              FROM generate_series(1, (random() * random() * 3 * $2::int)::int + (m.id % 7 = 0)::int)
        ) x
       WHERE m.program_id = $1
       ORDER BY m.id, x.day
  ) d
"""

BUY_AGAIN = """
INSERT INTO member_purchase_days AS d (member_id, day, points, qualifying_points, spend, purchases)
SELECT m.id, current_date, 100, 100, 50.00, 1 FROM members m
 WHERE m.program_id = $1 AND random() < $2
ON CONFLICT (member_id, day) DO UPDATE SET purchases = d.purchases + 1, spend = d.spend + 50.00
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.insight", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=1_000_000, help="members of the programme (default 1,000,000)")
    p.add_argument("--days", type=int, default=8, help="average purchase days per member (default 8)")
    p.add_argument("--quick", action="store_true", help="2,000 members: proves the command works")
    p.add_argument("--keep", action="store_true", help="keep the database (default: dropped at the end)")
    p.add_argument("--data-dir", type=Path, default=ROOT / ".data" / "bench-pg",
                   help="embedded Postgres data directory (default .data/bench-pg; never the dev database)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})")
    args = p.parse_args(argv)
    if args.quick:
        args.members = 2_000
    return args


async def measure(url: str, args: argparse.Namespace, doc: dict[str, Any]) -> None:
    from app.db.pool import create_pool
    from app.insight.service import refresh

    pool = await create_pool(url, min_size=1, max_size=2, statement_timeout_ms=0)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET statement_timeout = 0")
            program = await conn.fetchval(PROGRAM)
            t = time.perf_counter()
            await conn.execute(MEMBERS, program, args.members, timeout=3600)
            doc["setup"]["members_seconds"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            await conn.execute(PURCHASE_DAYS, program, args.days, timeout=3600)
            doc["setup"]["purchase_days_seconds"] = round(time.perf_counter() - t, 1)
            await conn.execute("VACUUM ANALYZE members", timeout=3600)
            await conn.execute("VACUUM ANALYZE member_purchase_days", timeout=3600)
            doc["setup"]["purchase_days"] = await conn.fetchval("SELECT count(*) FROM member_purchase_days")
        print(f"[insight] {args.members:,} members, {doc['setup']['purchase_days']:,} purchase days", flush=True)
        for name, buy_again in (("first_refresh", None), ("second_refresh", 0.05)):
            if buy_again is not None:
                await pool.execute(BUY_AGAIN, program, buy_again, timeout=3600)
                await pool.execute("ANALYZE member_purchase_days", timeout=3600)
            before = uptime()
            steps: list[tuple[str, float]] = []
            started = time.perf_counter()
            def record(_: Any, step: str, steps: list[tuple[str, float]] = steps, started: float = started) -> None:
                steps.append((step, time.perf_counter() - started))

            result = await refresh(pool, datetime.now(UTC), program, progress=record)
            doc["results"][name] = {
                "seconds": round(result.seconds, 2), "members": result.members,
                "segment_changes": result.segment_changes,
                "steps_cumulative_seconds": {s: round(at, 2) for s, at in steps},
                "uptime_before": before, "uptime_after": uptime(),
            }
            print(f"[insight] {name}: {result.members:,} members in {result.seconds:.1f}s, "
                  f"{result.segment_changes:,} segment changes ({before})", flush=True)
        doc["reads"] = await reads(pool, program)
        summary = await pool.fetchval("SELECT summary FROM insight_refreshes WHERE program_id = $1 "
                                      "ORDER BY id DESC LIMIT 1", program)
        doc["segments"] = {str(s["segment"]): s["members"] for s in summary["segments"]}
        doc["stages"] = {s["stage"]: s["members"] for s in summary["stages"]}
    finally:
        await pool.close()


async def reads(pool: Any, program: Any) -> dict[str, Any]:
    """The reads over the refreshed programme, each once (seconds): the segments overview, a page, a whole segment
    exported, the summary by month over a year and by day over 30 days, the liability forecast."""
    from datetime import timedelta

    from app.insight import health, service
    from app.insight.rfm import Segment
    from app.programs.context import Principal
    from app.programs.schemas import ProgramSettings

    p = Principal(key_id=program, program_id=program, scopes=frozenset({"admin"}), currency="EUR", timezone="UTC",
                  settings=ProgramSettings())
    out: dict[str, Any] = {}
    today = datetime.now(UTC).date()

    async def timed(name: str, work: Any) -> Any:
        started = time.perf_counter()
        result = await work
        out[name] = round(time.perf_counter() - started, 3)
        return result

    await timed("segments_overview", service.segments_overview(pool, p))
    await timed("segment_page_100", service.segment_page(pool, p, Segment.CHAMPIONS, None, 100))

    async def export() -> int:
        size = 0
        async for chunk in service.export_rows(pool, program, "EUR", Segment.CHAMPIONS, "csv"):
            size += len(chunk)
        return size

    out["export_champions_bytes"] = await timed("export_champions_csv", export())
    await timed("summary_month_12", health.summary(pool, p, today - timedelta(days=365), today + timedelta(days=1),
                                                   "month", today))
    await timed("summary_day_30", health.summary(pool, p, None, None, "day", today))
    await timed("liability_forecast", health.liability_forecast(pool, p, 12))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc: dict[str, Any] = {"run_id": run_id, "members": args.members, "avg_purchase_days": args.days,
                           "machine": {"cpus": os.cpu_count(), "uptime_at_start": uptime()},
                           "setup": {}, "results": {}}
    pg = pgmod.start(args.data_dir)
    dbname = f"{pgmod.DB_PREFIX}insight_{os.getpid()}"
    asyncio.run(pgmod.fresh_database(pg, dbname))
    url = pg.url(dbname)
    try:
        from app.db.migrate import upgrade

        upgrade(url)
        doc["postgres"] = asyncio.run(pgmod.describe(url))
        asyncio.run(measure(url, args, doc))
    finally:
        if not args.keep:
            asyncio.run(pgmod.drop_database(pg, dbname))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"insight-{run_id}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(json.dumps(doc["results"], indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
