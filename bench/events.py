"""Events in the benchmark: what the outbox costs the writes, and how fast webhooks are delivered.

Outbox cost: the write workloads run a second time with ``ledger.emit``/``ledger.emit_all`` replaced by functions
that do nothing (in the benchmark's own database, restored afterwards), so the two figures differ by exactly the
events' rows.

Delivery: a receiver on 127.0.0.1 (its own process: uvicorn, a bare ASGI app answering 200 at once, as a CRM's endpoint
that queues the work would) gets an endpoint; N events are written at once (copies of the run's own events, so
their size is real), and the service's workers deliver them. Reported: events/s from the first to the last
delivery, and each event's latency from its commit to its delivery.

    .venv/bin/python -m bench.events receiver --port 9000     (used by bench.run)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg

NO_OP = {
    "emit": "CREATE OR REPLACE FUNCTION ledger.emit(p_program uuid, p_member_pk bigint, p_type text, "
            "p_occurred_at timestamptz, p_data json) RETURNS void LANGUAGE sql AS $$ SELECT $$",
    "emit_all": "CREATE OR REPLACE FUNCTION ledger.emit_all(p_program uuid, p_member_pk bigint, p_types text[], "
                "p_occurred_at timestamptz, p_data json) RETURNS void LANGUAGE sql AS $$ SELECT $$",
}


async def _definitions(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT p.proname, pg_get_functiondef(p.oid) AS def FROM pg_proc p "
                                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                                "WHERE n.nspname = 'ledger' AND p.proname = ANY ($1)", list(NO_OP))
        return {r["proname"]: r["def"] for r in rows}
    finally:
        await conn.close()


async def _execute(url: str, statements: list[str]) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def outbox_off(url: str) -> Iterator[None]:
    """The service's SQL without its events (start the service inside: new sessions see the change)."""
    originals = asyncio.run(_definitions(url))
    if set(originals) != set(NO_OP):
        raise RuntimeError(f"ledger.emit functions not found: {sorted(originals)}")
    asyncio.run(_execute(url, list(NO_OP.values())))
    try:
        yield
    finally:
        asyncio.run(_execute(url, list(originals.values())))


# --- the receiver ------------------------------------------------------------------------------------------


async def receiver_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def receiver_main(port: int) -> None:
    import uvicorn

    uvicorn.run(receiver_app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off",
                http="httptools", loop="uvloop")


# --- the delivery workload -------------------------------------------------------------------------------


async def delivery(url: str, program_id: str, endpoint_id: str, events: int, wait_seconds: float) -> dict[str, Any]:
    """Write ``events`` events at once (copies of the program's latest ones, each for the member of the original),
    then wait until the endpoint has them all; the figures come from the deliveries' own times."""
    conn = await asyncpg.connect(url)
    try:
        # One member's events go out one after the other (by design), so a run of one hot member's events measures
        # its receiver's round trip, not the worker: the copies are spread over random members of the program.
        status = await conn.execute(
            """INSERT INTO changes (xid, program_id, member_id, type, occurred_at, data)
               SELECT ledger.change_position(m.member_id), c.program_id, m.member_id, c.type, now(), c.data
                 FROM (SELECT row_number() OVER () AS n, * FROM changes WHERE program_id = $1::uuid
                        ORDER BY id DESC LIMIT $2) c
                 JOIN (SELECT row_number() OVER () AS n, member_id FROM (
                           SELECT member_id FROM member_balances WHERE program_id = $1::uuid ORDER BY random()
                            LIMIT $2) r) m ON m.n = c.n""",
            program_id, events)
        events = int(status.split()[-1])  # as many as there were to copy (members, events)
        written = time.monotonic()
        deadline = written + wait_seconds
        delivered = 0
        while time.monotonic() < deadline:
            delivered = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1::uuid "
                                            "AND status = 'delivered'", endpoint_id)
            if delivered >= events:
                break
            await asyncio.sleep(0.25)
        row = await conn.fetchrow(
            """SELECT count(*) AS n, min(d.delivered_at) AS first, max(d.delivered_at) AS last,
                      percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
                          ORDER BY extract(epoch FROM d.delivered_at - c.recorded_at)) AS latency,
                      sum(d.attempts) AS attempts
                 FROM webhook_deliveries d JOIN changes c ON c.id = d.change_id
                WHERE d.endpoint_id = $1::uuid AND d.status = 'delivered'""", endpoint_id)
        failed = await conn.fetchval("SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d "
                                     "ON d.id = a.delivery_id WHERE d.endpoint_id = $1::uuid AND "
                                     "(a.status_code IS NULL OR a.status_code >= 300)", endpoint_id)
    finally:
        await conn.close()
    span = (row["last"] - row["first"]).total_seconds() if row["n"] else None
    latency = [round(x * 1000, 1) for x in row["latency"]] if row["latency"] else [None] * 3
    return {
        "events_written": events, "delivered": row["n"], "failed_attempts": failed,
        "attempts": row["attempts"], "complete": row["n"] >= events,
        "events_per_second": round(row["n"] / span, 1) if span else None,
        "delivery_seconds": round(span, 3) if span is not None else None,
        "latency_ms_from_commit": {"p50": latency[0], "p90": latency[1], "p99": latency[2]},
        "note": "events/s from the first delivery to the last; latency from the event's commit to its delivery "
                "(includes the wait behind the member's earlier events)",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.events")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("receiver", help="a webhook receiver answering 200 (for bench.run)")
    r.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    if args.command == "receiver":
        receiver_main(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
