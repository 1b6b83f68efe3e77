"""Bank-style invariant test (Jepsen's bank, TigerBeetle's strict invariants, Stripe's exactly-once).

Starts the service on a fresh database, runs K concurrent clients for T seconds against a few members (so
they collide) with a random mix of purchases, returns, redeems, holds with captures, voids and capture/void
races, adjustments, reversals, refunds, custom events, deliberate replays, concurrent duplicates, natural-key
retries and key reuse, logging every request and answer; then proves the invariants listed in
``reliability/checker.py`` from that log and the database. Exit 0 only with no anomaly.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from reliability.checker import check
from reliability.harness import FreshDatabase, Run, Service, common_parser, create_program, execute, open_server
from reliability.workload import ClientLog, RetryPolicy, Workload

QUICK = {"seconds": 8.0, "clients": 32, "members": 6}
FULL = {"seconds": 60.0, "clients": 32, "members": 8}


def parse(argv: list[str] | None) -> Any:
    parser = common_parser("bank", __doc__ or "")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 32)")
    parser.add_argument("--seconds", type=float, help="how long the clients run (default 60; --quick 8)")
    parser.add_argument("--members", type=int, help="members they share (default 8; --quick 6)")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


async def bank(args: Any, run: Run) -> str:
    server_url, close_server = await asyncio.to_thread(open_server, args, run)
    db = await FreshDatabase(server_url, "bank").create()
    service = Service(db.url, run.dir / "service.log", workers=args.workers)
    try:
        service.start()  # it boots while the program is created
        program_id, admin_key = await create_program(db.url, "reliability bank")
        run.figures["startup_seconds"] = round(await asyncio.to_thread(service.wait_ready), 2)
        members = [f"m{i:02d}" for i in range(args.members)]
        log = ClientLog(run.dir / "client.jsonl")
        async with Workload(service.base_url, admin_key, members, log, run.rng, policy=RetryPolicy(tries=8),
                            connections=args.clients + 8) as workload:
            await workload.setup()
            run.note(f"{args.clients} clients on {len(members)} members for {args.seconds:.0f}s "
                     f"against {service.base_url} (log {log.path})")
            steps = await workload.run(args.clients, args.seconds)
            left = await workload.reconcile()
            log.close()
            run.figures.update({"clients": args.clients, "members": len(members), "run_seconds": args.seconds,
                                "client_steps": steps, "requests": workload.stats.attempts,
                                "statuses": workload.stats.statuses,
                                "transport_errors": workload.stats.transport_errors,
                                "requests_per_second": round(workload.stats.attempts / args.seconds, 1),
                                "in_doubt_after_reconcile": left})
            run.note(f"{workload.stats.attempts} requests; checking")
            # Without faults every request is answered: nothing may stay in doubt.
            figures = await check(run, log.path, db.url, program_id, service.base_url, admin_key, members,
                                  allow_in_doubt=False, cli_verify=not args.quick)
            run.figures.update(figures)
        run.figures["service_log_warnings_and_errors"] = service.errors()
        run.check_service_log(service.log_path)
        return (f"operations={figures['operations']} requests={workload.stats.attempts} "
                f"outcomes={figures['outcomes']} replays_compared={figures['answers_compared']}")
    finally:
        service.stop()
        if not args.keep_database:
            await db.drop()
        await asyncio.to_thread(close_server)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run = Run("bank", args.out, args.seed)
    headline = execute(run, args, bank)
    per_kind = run.figures.get("per_kind", {})
    for kind, outcomes in per_kind.items():
        print(f"  {kind:15s} {outcomes}")
    return run.finish(headline)


if __name__ == "__main__":
    sys.exit(main())
