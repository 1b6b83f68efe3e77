"""Bulk import benchmark (issue 15): generate a legacy system's export and time `points-ledger import` on it.

    .venv/bin/python -m bench.imports                      # 1,000,000 members (the target: at most 5 minutes)
    .venv/bin/python -m bench.imports --members 20000      # a quick look
    .venv/bin/python -m bench.imports --generate-only FILE --members N [--format csv]   # just the file

Steps: Postgres (embedded in .data/bench-pg, or DATABASE_URL) -> fresh database -> migrate -> program with a tier
ladder -> generate the legacy file (JSONL) -> `points-ledger import FILE` (timed, wall clock) -> rerun (imports
nothing: every row replayed) -> `points-ledger verify`. The figures, the load of the machine (`uptime`) and the
file's size go to bench/results/imports-<time>.json and to stdout.

The file: one member per line, deterministic (seeded). Members carry a profile (name, email; a birthday and a phone
for some), 0-4 lots (mixed: never-expiring, expiring in 1-3 years, one in ten members with points still in a return
window), and a tier (Green, Gold or Platinum with a valid_until) for two members in three.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = str(ROOT / ".venv" / "bin" / "points-ledger")
TIERS = {"tiers": [{"name": "Green", "threshold": "0"}, {"name": "Gold", "threshold": "300"},
                   {"name": "Platinum", "threshold": "1000"}], "metric": "points",
         "window": {"kind": "rolling_months", "months": 12}, "retention": {"kind": "end_of_next_year"}}


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def legacy_rows(members: int, seed: int = 15, now: datetime | None = None,
                prefix: str = "L") -> Iterator[dict[str, Any]]:
    """A legacy export: ``members`` rows, mixed lots and tiers (see the module's docstring)."""
    rnd = random.Random(seed)
    now = now or datetime.now(UTC)
    for i in range(members):
        row: dict[str, Any] = {"member_id": f"{prefix}-{i:07d}", "name": f"Member {i}",
                               "email": f"member{i}@example.com"}
        if i % 3 == 0:
            row["birthday"] = f"19{50 + i % 50:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        if i % 5 == 0:
            row["phone"] = f"+49 30 {i:07d}"
        if i % 17 == 0:
            row["attributes"] = {"store": f"S{i % 40}", "legacy_card": f"C{i:09d}"}
        lots = []
        for _ in range(rnd.randint(0, 4)):
            earned = now - timedelta(days=rnd.randint(1, 900), seconds=rnd.randint(0, 86399))
            lot: dict[str, Any] = {"points": rnd.randint(1, 5000), "earned_at": _ts(earned)}
            kind = rnd.random()
            if kind < 0.6:
                lot["expires_at"] = _ts(now + timedelta(days=rnd.randint(30, 1100)))
            if kind > 0.9:
                lot["available_at"] = _ts(now + timedelta(days=rnd.randint(1, 30)))
                lot["earned_at"] = _ts(now - timedelta(days=rnd.randint(0, 20), seconds=1))
            lots.append(lot)
        if lots:
            row["lots"] = lots
        if i % 3 != 2:
            row["tier"] = ("Green", "Gold", "Platinum")[rnd.randint(0, 2)]
            if row["tier"] != "Green":
                row["tier_valid_until"] = _ts(now + timedelta(days=rnd.randint(30, 700)))
        yield row


def write_file(path: Path, members: int, fmt: str = "jsonl", seed: int = 15, prefix: str = "L") -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        if fmt == "csv":
            from app.imports.service import CSV_COLUMNS

            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for row in legacy_rows(members, seed, prefix=prefix):
                w.writerow([json.dumps(row[c]) if c in ("lots", "attributes") and c in row else row.get(c, "")
                            for c in CSV_COLUMNS])
        else:
            for row in legacy_rows(members, seed, prefix=prefix):
                f.write(json.dumps(row, separators=(",", ":")) + "\n")


def _cli(args: list[str], url: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=url, PL_LOG_LEVEL="WARNING")
    return subprocess.run([CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


async def _tiers(url: str, program_id: str) -> None:
    import asyncpg

    from app.db.pool import _init_connection
    from app.db.urls import asyncpg_dsn
    from app.programs import versions
    from app.tiers.policy import TierConfig

    conn = await asyncpg.connect(asyncpg_dsn(url))
    await _init_connection(conn)
    try:
        async with conn.transaction():
            await versions.append(conn, versions.TIERS, program_id, datetime(2020, 1, 1, tzinfo=UTC),
                                  TierConfig.model_validate(TIERS).model_dump(mode="json"))
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=1_000_000)
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--generate-only", type=Path, metavar="FILE")
    p.add_argument("--data-dir", type=Path, default=ROOT / ".data" / "bench-pg")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    if args.generate_only:
        write_file(args.generate_only, args.members, args.format)
        return 0
    from bench import pg

    server = pg.start(args.data_dir)
    name = f"{pg.DB_PREFIX}{os.getpid()}"
    pg.run(pg.fresh_database(server, name))
    url = server.url(name)
    doc: dict[str, Any] = {"members": args.members, "format": args.format, "chunk": args.chunk,
                           "parallel": args.parallel, "uptime_before": _uptime()}
    try:
        res = _cli(["migrate"], url)
        assert res.returncode == 0, res.stderr
        res = _cli(["create-program", "--name", "Legacy Coffee", "--currency", "EUR", "--json"], url)
        assert res.returncode == 0, res.stderr
        program_id = json.loads(res.stdout)["program"]["id"]
        asyncio.run(_tiers(url, program_id))
        path = args.data_dir.parent / f"legacy-{args.members}.{args.format}"
        t = time.perf_counter()
        write_file(path, args.members, args.format)
        doc["generate_seconds"] = round(time.perf_counter() - t, 1)
        doc["file_bytes"] = path.stat().st_size
        print(f"generated {args.members} members in {doc['generate_seconds']}s ({doc['file_bytes'] / 1e6:.0f} MB)")
        base = ["import", str(path), "--program", program_id, "--chunk", str(args.chunk),
                "--parallel", str(args.parallel)]
        t = time.perf_counter()
        res = _cli(base, url)
        doc["import_seconds"] = round(time.perf_counter() - t, 1)
        doc["uptime_after_import"] = _uptime()
        doc["import_output"] = res.stdout.strip()
        assert res.returncode == 0, res.stdout + res.stderr
        doc["members_per_second"] = round(args.members / doc["import_seconds"])
        # the largest child so far is the import (migrate and create-program are smaller): its peak memory
        doc["import_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        print(res.stdout.strip())
        print(f"import: {doc['import_seconds']}s, {doc['members_per_second']} members/s, peak RSS "
              f"{doc['import_peak_rss_mb']} MB ({doc['uptime_after_import']})")
        t = time.perf_counter()
        res = _cli(base, url)
        doc["rerun_seconds"] = round(time.perf_counter() - t, 1)
        doc["rerun_output"] = res.stdout.strip()
        print(f"rerun: {res.stdout.strip()}")
        t = time.perf_counter()
        res = _cli(["verify", "--program", program_id], url)
        doc["verify_seconds"] = round(time.perf_counter() - t, 1)
        doc["verify_ok"] = res.returncode == 0
        print(f"verify: {'ok' if res.returncode == 0 else 'FAILED'} in {doc['verify_seconds']}s")
        path.unlink()
    finally:
        pg.run(pg.drop_database(server, name))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"imports-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if doc.get("verify_ok") else 1


if __name__ == "__main__":
    sys.exit(main())
