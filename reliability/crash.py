"""Crash faults: the bank workload while the service is SIGKILLed and restarted, and while Postgres is stopped
and started again under it.

The service runs against an embedded Postgres of this run's own (in the run directory), so stopping it
disturbs nobody else. Clients retry every request that got no definitive answer with the same
Idempotency-Key and body (bounded tries), and after the faults every operation still in doubt is retried
until answered. Then the checker of ``bank`` must find 0 lost acknowledged writes and 0 duplicates, with
nothing left in doubt.

Postgres faults: ``pg_ctl stop -m fast`` (and, in the long run, ``-m immediate``, a crash that Postgres
recovers from at start) with the load running. While it is down the service must answer API requests with
503 ``database_unavailable`` within ``--max-503-seconds`` (not hang), ``/readyz`` 503 and ``/healthz`` 200;
after Postgres is back it must serve again by itself (no restart) within ``--max-recovery-seconds``. The run
reports every fault with its timings: the time to a 503, the time from Postgres being back to the first 2xx,
and for kills the time to ready again.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import httpx

from reliability.checker import check
from reliability.harness import (
    RUNS_DIR,
    Deadline,
    FreshDatabase,
    OwnPostgres,
    Run,
    Service,
    common_parser,
    create_program,
    execute,
)
from reliability.workload import ClientLog, Op, RetryPolicy, Workload, definitive

QUICK = {"seconds": 6.0, "clients": 16, "members": 6, "kills": 2, "pg_stops": 1, "pg_down_seconds": 2.5}
FULL = {"seconds": 60.0, "clients": 32, "members": 8, "kills": 6, "pg_stops": 2, "pg_down_seconds": 5.0}


def parse(argv: list[str] | None) -> Any:
    parser = common_parser("crash", __doc__ or "")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 32; --quick 16)")
    parser.add_argument("--seconds", type=float, help="load between faults and after the last (default 60 in all)")
    parser.add_argument("--members", type=int, help="members the clients share (default 8)")
    parser.add_argument("--kills", type=int, help="SIGKILLs of the service (default 6; --quick 2)")
    parser.add_argument("--pg-stops", type=int, help="Postgres stops: fast, then immediate (default 2; --quick 1)")
    parser.add_argument("--pg-down-seconds", type=float, help="how long Postgres stays down (default 5)")
    parser.add_argument("--max-503-seconds", type=float, default=2.0,
                        help="longest acceptable wait for the 503 while Postgres is down (default 2)")
    parser.add_argument("--max-recovery-seconds", type=float, default=30.0,
                        help="longest acceptable time from Postgres back to the first 2xx (default 30)")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


class Faults:
    """Injects the planned faults one after the other, with load before, between and after them."""

    def __init__(self, args: Any, run: Run, service: Service, pg: OwnPostgres, workload: Workload,
                 admin_key: str) -> None:
        self.args = args
        self.run = run
        self.service = service
        self.pg = pg
        self.workload = workload
        self.admin_key = admin_key
        self.injected: list[dict[str, Any]] = []
        # Probes measure on a fresh connection each (a kept-alive one may have been closed by the server).
        self.probe_client = httpx.AsyncClient(base_url=service.base_url, timeout=15,
                                              limits=httpx.Limits(max_keepalive_connections=0))

    def plan(self) -> list[str]:
        kills, stops = self.args.kills, self.args.pg_stops
        modes = ["fast", "immediate"]
        plan: list[str] = []
        # Spread the Postgres stops among the kills: kill, pg stop, kill, kill, pg stop, kill...
        for i in range(max(kills, stops)):
            if i < kills:
                plan.append("kill")
            if i < stops:
                plan.append(f"pg_stop_{modes[i % 2]}")
        return plan

    async def run_plan(self, stop_clients: asyncio.Event) -> None:
        plan = self.plan()
        gap = self.args.seconds / (len(plan) + 1)
        try:
            for fault in plan:
                await asyncio.sleep(gap)
                if fault == "kill":
                    await self.kill()
                else:
                    await self.pg_stop(fault.removeprefix("pg_stop_"))
            await asyncio.sleep(gap)
        finally:
            stop_clients.set()
            await self.probe_client.aclose()

    async def kill(self) -> None:
        record: dict[str, Any] = {"fault": "sigkill_service", "at": time.time()}
        self.service.kill()
        await asyncio.sleep(0.3)
        self.service.start()
        record["restart_to_ready_seconds"] = round(await asyncio.to_thread(self.service.wait_ready, 180), 2)
        record["outage_seconds"] = round(time.time() - record["at"], 2)
        self.run.note(f"SIGKILL #{len([f for f in self.injected if f['fault'] == 'sigkill_service']) + 1}: "
                      f"ready again {record['outage_seconds']}s after the kill")
        self.injected.append(record)

    async def _probe(self, kind: str, pooled: bool = False) -> dict[str, Any]:
        """One request while Postgres is down, logged with the workload's: a read, or a write (an adjustment
        with its own key, which the clients then retry until acknowledged)."""
        member = self.workload.members[0]
        if kind == "read":
            op = Op(self.workload._new_id("read"), "read", "GET", f"/v1/members/{member}/balance", None, None,
                    member)
        else:
            op = self.workload.new_op("adjust", "POST", "/v1/adjustments", None, member)
            op.body = {"member_id": member, "points": 7, "reason": "probe during outage", "metadata": {"op": op.id}}
        started = time.monotonic()
        status, body = await self.workload.send(op, "probe", -3, http=None if pooled else self.probe_client)
        seconds = round(time.monotonic() - started, 3)
        if kind == "write":
            if definitive(status, body):
                assert status is not None
                self.workload._settle(op, status, body)
            else:
                self.workload.in_doubt.append(op)  # retried with its key after the faults
        return {"probe": kind if not pooled else f"{kind}_keepalive", "status": status,
                "code": body.get("code") if isinstance(body, dict) else None,
                "seconds": seconds, "request_id_in_body": isinstance(body, dict) and "request_id" in body}

    async def _plain(self, path: str) -> dict[str, Any]:
        started = time.monotonic()
        try:
            status: int | None = (await self.probe_client.get(path)).status_code
        except httpx.HTTPError:
            status = None
        return {"probe": path, "status": status, "seconds": round(time.monotonic() - started, 3)}

    async def pg_stop(self, mode: str) -> None:
        record: dict[str, Any] = {"fault": f"postgres_stop_{mode}", "at": time.time()}
        started = time.monotonic()
        await asyncio.to_thread(self.pg.stop, mode)
        record["stop_seconds"] = round(time.monotonic() - started, 2)
        probes: list[dict[str, Any]] = []
        down = Deadline(self.args.pg_down_seconds)
        while not down.expired or not probes:
            probes += [await self._probe("read"), await self._probe("write"), await self._plain("/readyz"),
                       await self._plain("/healthz"), await self._probe("read", pooled=True),
                       await self._probe("write", pooled=True)]
            await asyncio.sleep(0.3)
        record["probes_while_down"] = len(probes)
        kept = [p for p in probes if p["probe"].endswith("_keepalive")]
        record["keepalive_answers_while_down"] = sorted({f"{p['status']} {p['code']}" for p in kept})
        api = [p for p in probes if p["probe"] in ("read", "write")]
        record["answers_while_down"] = sorted({f"{p['status']} {p['code']}" for p in api})
        record["slowest_api_answer_seconds"] = max(p["seconds"] for p in api)
        record["first_api_answer_seconds"] = api[0]["seconds"]
        record["readyz_while_down"] = sorted({str(p["status"]) for p in probes if p["probe"] == "/readyz"})
        record["healthz_while_down"] = sorted({str(p["status"]) for p in probes if p["probe"] == "/healthz"})
        bad = [p for p in api if p["status"] != 503 or p["code"] != "database_unavailable"
               or p["seconds"] > self.args.max_503_seconds]
        if bad:
            self.run.anomaly("no_quick_503_while_postgres_down", mode=mode, bad=bad[:6], of=len(api))
        if any(p["status"] != 503 for p in probes if p["probe"] == "/readyz"):
            self.run.anomaly("readyz_not_503_while_postgres_down", mode=mode, answers=record["readyz_while_down"])
        record["request_id_in_503_bodies"] = all(p["request_id_in_body"] for p in api if p["status"] == 503)
        if not record["request_id_in_503_bodies"]:
            self.run.anomaly("error_without_request_id", subject="database_unavailable", mode=mode)
        dropped = [p for p in kept if p["status"] is None]
        if dropped:  # a kept-alive connection the server closed after answering a 5xx on it
            self.run.anomaly("connection_closed_after_5xx", subject="database_unavailable", mode=mode,
                             transport_errors=len(dropped), of=len(kept))
        started = time.monotonic()
        await asyncio.to_thread(self.pg.start)
        record["start_seconds"] = round(time.monotonic() - started, 2)
        back = time.monotonic()
        record["recovery"] = await self._recovery(back)
        self.run.note(f"Postgres stop ({mode}): answers while down {record['answers_while_down']} in at most "
                      f"{record['slowest_api_answer_seconds']}s; after start, first 2xx read "
                      f"{record['recovery'].get('first_2xx_read_seconds')}s, write "
                      f"{record['recovery'].get('first_2xx_write_seconds')}s")
        self.injected.append(record)

    async def _recovery(self, back: float) -> dict[str, Any]:
        """Time from Postgres accepting connections again to the service's first 2xx read and write, without
        any restart of the service."""
        out: dict[str, Any] = {}
        deadline = Deadline(self.args.max_recovery_seconds)
        seen: list[str] = []
        while not deadline.expired and ("first_2xx_read_seconds" not in out or "first_2xx_write_seconds" not in out):
            for kind in ("read", "write"):
                name = f"first_2xx_{kind}_seconds"
                if name in out:
                    continue
                probe = await self._probe(kind)
                seen.append(f"{probe['status']} {probe['code']}")
                if probe["status"] is not None and 200 <= probe["status"] < 300:
                    out[name] = round(time.monotonic() - back, 2)
            await asyncio.sleep(0.1)
        out["answers_until_recovered"] = dict(sorted((s, seen.count(s)) for s in set(seen)))
        if "first_2xx_read_seconds" not in out or "first_2xx_write_seconds" not in out:
            self.run.anomaly("no_recovery_after_postgres_restart", within_seconds=self.args.max_recovery_seconds,
                             answers=out["answers_until_recovered"], log=self.service.tail(15))
            # Restart the service so the rest of the run (and the checker) can go on.
            self.service.kill()
            self.service.start()
            await asyncio.to_thread(self.service.wait_ready, 180)
            out["service_restarted_to_recover"] = True
        return out


def client_visible_outages(log_path: Any, faults: list[dict[str, Any]]) -> list[float | None]:
    """For each fault: seconds from its injection to the first 2xx any client got for a request sent after it."""
    import json

    oks: list[float] = []
    with open(log_path) as f:
        for line in f:
            a = json.loads(line)
            if a["status"] is not None and 200 <= a["status"] < 300:
                oks.append(a["t0"])
    oks.sort()
    out: list[float | None] = []
    for fault in faults:
        after = next((t for t in oks if t > fault["at"]), None)
        out.append(round(after - fault["at"], 2) if after else None)
    return out


async def crash(args: Any, run: Run) -> str:
    # In the project, like the wheel's own data (as root it opens every parent directory to its user),
    # never under a private temporary directory; deleted at the end.
    pg = OwnPostgres(RUNS_DIR / f"pg-{os.getpid()}-{run.seed % 65536:04x}")
    server_url = await asyncio.to_thread(pg.start_first)
    db = await FreshDatabase(server_url, "crash").create()
    service = Service(db.url, run.dir / "service.log", workers=args.workers)
    try:
        service.start()  # it boots while the program is created
        program_id, admin_key = await create_program(db.url, "reliability crash")
        run.figures["startup_seconds"] = round(await asyncio.to_thread(service.wait_ready, 180), 2)
        members = [f"m{i:02d}" for i in range(args.members)]
        log = ClientLog(run.dir / "client.jsonl")
        policy = (RetryPolicy(tries=40, op_seconds=40, backoff_first=0.1, backoff_max=1.0) if args.quick
                  else RetryPolicy(tries=90, op_seconds=90, backoff_first=0.1, backoff_max=1.0))
        async with Workload(service.base_url, admin_key, members, log, run.rng, policy=policy, timeout=10,
                            connections=args.clients + 8) as workload:
            await workload.setup()
            faults = Faults(args, run, service, pg, workload, admin_key)
            run.note(f"{args.clients} clients on {len(members)} members; faults: {', '.join(faults.plan())}")
            stop = asyncio.Event()
            # Bounded: the clients stop when the plan is done, or at the latest after this long.
            limit = args.seconds + 240 * (args.kills + args.pg_stops) + 60
            steps, _ = await asyncio.gather(workload.run(args.clients, limit, stop=stop), faults.run_plan(stop))
            in_doubt_after_load = len(workload.in_doubt)
            left = await workload.reconcile()
            log.close()
            kills = [f for f in faults.injected if f["fault"] == "sigkill_service"]
            stops = [f for f in faults.injected if f["fault"].startswith("postgres_stop")]
            for fault, outage in zip(faults.injected, client_visible_outages(log.path, faults.injected), strict=True):
                fault["first_client_2xx_after_seconds"] = outage
            run.figures.update({
                "clients": args.clients, "members": len(members), "client_steps": steps,
                "requests": workload.stats.attempts, "statuses": workload.stats.statuses,
                "transport_errors": workload.stats.transport_errors, "in_doubt_after_load": in_doubt_after_load,
                "in_doubt_after_reconcile": left, "faults_injected": len(faults.injected),
                "faults": faults.injected,
                "service_kills": len(kills), "postgres_stops": len(stops),
                "kill_to_ready_seconds": [f["outage_seconds"] for f in kills],
                "postgres_first_503_seconds": [f["first_api_answer_seconds"] for f in stops],
                "postgres_recovery_read_seconds": [f["recovery"].get("first_2xx_read_seconds") for f in stops],
                "postgres_recovery_write_seconds": [f["recovery"].get("first_2xx_write_seconds") for f in stops],
            })
            run.note(f"{workload.stats.attempts} requests, {len(faults.injected)} faults, {in_doubt_after_load} "
                     f"operations in doubt after the load, {left} after retrying them; checking")
            figures = await check(run, log.path, db.url, program_id, service.base_url, admin_key, members,
                                  allow_in_doubt=False, cli_verify=not args.quick,
                                  allowed_5xx=frozenset({"database_unavailable"}))
            run.figures.update(figures)
        run.figures["service_log_warnings_and_errors"] = service.errors()
        run.check_service_log(service.log_path)
        lost = run.by_check["acknowledged_write_lost"]
        duplicates = sum(run.by_check[c] for c in ("write_duplicated", "executed_twice", "hold_resolved_twice"))
        run.figures.update({"lost_acknowledged_writes": lost, "duplicates": duplicates})
        return (f"operations={figures['operations']} requests={workload.stats.attempts} "
                f"faults={len(faults.injected)} (kills={len(kills)} postgres_stops={len(stops)}) "
                f"lost={lost} duplicates={duplicates} kill_to_ready_s={run.figures['kill_to_ready_seconds']} "
                f"first_503_s={run.figures['postgres_first_503_seconds']} "
                f"pg_recovery_s={run.figures['postgres_recovery_write_seconds']}")
    finally:
        service.stop()
        if not args.keep_database:
            await db.drop()
        await asyncio.to_thread(pg.destroy)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run = Run("crash", args.out, args.seed)
    headline = execute(run, args, crash)
    for fault in run.figures.get("faults", []):
        print("  fault " + ", ".join(f"{k}={v}" for k, v in fault.items() if k != "at"))
    return run.finish(headline)


if __name__ == "__main__":
    sys.exit(main())
