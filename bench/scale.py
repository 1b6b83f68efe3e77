"""Scale check: the same purchase workload on a small and a large member base, in one command.

    .venv/bin/python -m bench.scale [--small 10000] [--large 1000000] [--duration 20] [--quick]

Each size is one full ``bench.run`` (its own fresh database, seeded through the ledger functions) limited
to the raw ceilings (one-row GET, INSERT+UPDATE), the purchase workload, the balance read and the
expiry sweep, so the two
runs differ only in the number of members (and so in the size of every table and index). The large run's
expiry sweep is the "sweep over 1M lots" figure: three lots per member, about a third of them due.

Writes ``bench/results/scale-<run id>.json`` with both runs' figures and the ratios (large / small), and
prints them. Nothing is asserted; the target (issue 6) is purchase throughput at 1M within 15% of 10k.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = "raw_get,raw_txn,purchase,balance_read,expire"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=10_000, help="members of the small run (default 10,000)")
    p.add_argument("--large", type=int, default=1_000_000, help="members of the large run (default 1,000,000)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per workload (default 20)")
    p.add_argument("--quick", action="store_true", help="1,000 and 3,000 members, 2 s: proves the command works")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})")
    args = p.parse_args(argv)
    if args.quick:
        args.small, args.large, args.duration = 1_000, 3_000, 2.0
    return args


def one_run(members: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.run", "--members", str(members), "--duration", str(args.duration),
            "--workloads", WORKLOADS, "--no-wrk", "--out", str(args.out)]
    if args.quick:
        argv += ["--quick"]
    print(f"[scale] {members:,} members: {' '.join(argv[1:])}", flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=4 * 3600)
    sys.stdout.write(proc.stdout[-3000:])
    match = re.search(r"^results: (.+\.json)$", proc.stdout, re.M)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"bench.run failed for {members} members (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    doc: dict[str, Any] = json.loads(Path(match.group(1)).read_text())
    doc["file"] = match.group(1)
    return doc


def _workload(doc: dict[str, Any], name: str) -> dict[str, Any]:
    r = doc["results"].get(name) or {}
    if not r or r.get("skipped"):
        return {}
    ops, lat = r["ops"], r.get("latency_ms") or r["ops"].get("latency_ms") or {}
    return {"ops_per_second": ops.get("throughput"), "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"),
            "errors": r.get("errors", ops.get("errors"))}


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    setup = doc.get("setup", {}).get("seed", {})
    sweep = doc.get("batch", {}).get("expiry_sweep")
    return {
        "run_id": doc["run_id"], "file": doc["file"], "members": doc["parameters"]["members"],
        "database_bytes": setup.get("database_bytes"), "seed_seconds": setup.get("ledger_seconds"),
        "raw_txn": _workload(doc, "raw_txn"), "purchase": _workload(doc, "purchase"),
        "balance_read": _workload(doc, "balance_read"),
        "expiry_sweep": sweep if isinstance(sweep, dict) else None,
        "verify_final": doc.get("batch", {}).get("verify_final"),
    }


def ratio(large: Any, small: Any) -> float | None:
    return round(large / small, 3) if large and small else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + ("-quick" if args.quick else "")
    small, large = summary(one_run(args.small, args)), summary(one_run(args.large, args))
    ratios = {
        f"{name}_large_vs_small": ratio(large[name].get("ops_per_second"), small[name].get("ops_per_second"))
        for name in ("purchase", "balance_read", "raw_txn")
    }
    # Purchase relative to its own ceiling in each run: cancels machine noise between the two runs.
    ratios["purchase_vs_raw_txn_small"] = ratio(small["purchase"].get("ops_per_second"),
                                                small["raw_txn"].get("ops_per_second"))
    ratios["purchase_vs_raw_txn_large"] = ratio(large["purchase"].get("ops_per_second"),
                                                large["raw_txn"].get("ops_per_second"))
    doc = {"run_id": started, "duration_s": args.duration, "small": small, "large": large, "ratios": ratios,
           "target": "purchase at the large size within 15% of the small size (ratio >= 0.85)"}
    path = args.out / f"scale-{started}.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print()
    for label, s in (("small", small), ("large", large)):
        p, b = s["purchase"], s["balance_read"]
        sweep = s["expiry_sweep"] or {}
        print(f"{label:>5}: {s['members']:>9,} members  purchase {p.get('ops_per_second')} ops/s "
              f"(p99 {p.get('p99_ms')} ms)  balance {b.get('ops_per_second')} ops/s  raw txn "
              f"{s['raw_txn'].get('ops_per_second')} ops/s  expiry sweep {sweep.get('lots')} lots at "
              f"{sweep.get('lots_per_second')} lots/s")
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
