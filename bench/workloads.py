"""The workload registry: what each benchmark run sends.

An *operation* (``OPS``) is one business action, one or more HTTP requests, judged ok or not; a
*workload* (``WORKLOADS``) is a weighted choice of operations, on chosen members, at a fixed concurrency
(closed loop) or a fixed arrival rate (open loop, see ``bench.loadgen``). Adding a workload is adding one
``Workload(...)`` line; adding an operation is one small async function plus its entry in ``OPS``.

Operations that need a route not (yet) in the service name it in ``ROUTES``: before the load, the runner
probes it and a 404/405 marks the operation *not available*; a workload whose operations are all
unavailable is skipped and reported so, and a mix falls back (``fallback``) to another operation.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bench.members import member_ref

if TYPE_CHECKING:
    from bench.httpclient import Connection
    from bench.loadgen import Runner

Op = Callable[["Runner", "Connection", str], Awaitable[bool]]

_seq = itertools.count(1)


def _unique(runner: Runner, what: str) -> str:
    return f"{runner.run_tag}-{what}-{next(_seq)}"


# --- operations on the service ------------------------------------------------------------------------

async def op_balance(r: Runner, conn: Connection, member: str) -> bool:
    res = await r.call(conn, "balance", "GET", f"/v1/members/{member}/balance")
    return res is not None and res.status == 200


async def op_redeem(r: Runner, conn: Connection, member: str) -> bool:
    body = {"member_id": member, "points": r.rng.randint(1, 10), "reference": _unique(r, "order")}
    res = await r.call(conn, "redeem", "POST", "/v1/redemptions", body, key=_unique(r, "redeem"))
    return res is not None and res.status == 201


async def op_adjust(r: Runner, conn: Connection, member: str) -> bool:
    body = {"member_id": member, "points": r.rng.randint(1, 10), "reason": "bench goodwill credit"}
    res = await r.call(conn, "adjust", "POST", "/v1/adjustments", body, key=_unique(r, "adjust"))
    return res is not None and res.status == 201


async def op_hold_capture(r: Runner, conn: Connection, member: str) -> bool:
    """Reserve at checkout, then capture all of it (two requests, one operation)."""
    body = {"member_id": member, "points": r.rng.randint(1, 10), "reference": _unique(r, "checkout"),
            "expires_in_seconds": 600}
    res = await r.call(conn, "hold", "POST", "/v1/holds", body, key=_unique(r, "hold"))
    if res is None or res.status != 201:
        return False
    hold_id = res.json()["hold"]["id"]
    res = await r.call(conn, "capture", "POST", f"/v1/holds/{hold_id}/capture", {}, key=_unique(r, "capture"))
    return res is not None and res.status == 200


# PLACEHOLDER: purchases (POST /v1/purchases) are being built; the body follows the earning issue
# (member_id, order_id, occurred_at, currency, total, lines of sku/category/quantity/unit_price, store_id,
# channel). Until the route answers something other than 404/405 this operation is reported "not
# available" and the mix uses adjustments instead. When it lands, check the body and the success status.
SKUS = (("SKU-COFFEE-1", "coffee", "3.50"), ("SKU-CAKE-7", "bakery", "4.20"), ("SKU-MUG-2", "merchandise", "12.00"))


def _purchase_body(r: Runner, member: str) -> dict[str, Any]:
    quantities = [r.rng.randint(1, 3) for _ in SKUS]
    lines = [{"sku": sku, "category": cat, "quantity": q, "unit_price": price}
             for (sku, cat, price), q in zip(SKUS, quantities, strict=True)]
    total = sum((Decimal(price) * q for (_, _, price), q in zip(SKUS, quantities, strict=True)), Decimal(0))
    body = {
        "member_id": member, "order_id": _unique(r, "order"), "occurred_at": datetime.now(UTC).isoformat(),
        "currency": r.currency, "total": str(total), "store_id": "store-001", "channel": "pos",
        "lines": lines,
    }
    return body


async def op_purchase(r: Runner, conn: Connection, member: str) -> bool:
    res = await r.call(conn, "purchase", "POST", "/v1/purchases", _purchase_body(r, member),
                       key=_unique(r, "purchase"))
    return res is not None and 200 <= res.status < 300


# An offline till's batch (POST /v1/purchases/batch): BATCH_SIZE purchases of the same shape as op_purchase. Each
# connection is one till (a store) with its own customers: the members of till k are those whose index is k modulo
# BATCH_CONNECTIONS, drawn uniformly among them (a day's sales at one store are mostly different customers), so two
# tills never wait for each other's members (a batch holds its members' locks for its whole transaction). One
# operation is one request of BATCH_SIZE purchases: purchases/s = ops/s x BATCH_SIZE (the workload's items_per_op).
BATCH_SIZE = 100
# Tills coming back online a few at a time: 8 x 100 purchases in flight against the purchase workload's 32 x 1.
BATCH_CONNECTIONS = 8


def _till_member(r: Runner, conn: Connection) -> str:
    tills: dict[int, int] = r.context.setdefault("_tills", {})
    till = tills.setdefault(id(conn), len(tills)) % BATCH_CONNECTIONS
    slots = max(1, r.picker.n // BATCH_CONNECTIONS)
    return member_ref(r.rng.randrange(slots) * BATCH_CONNECTIONS + till + 1)


async def op_purchase_batch(r: Runner, conn: Connection, member: str) -> bool:
    items = [{"type": "purchase", **_purchase_body(r, _till_member(r, conn))} for _ in range(BATCH_SIZE)]
    res = await r.call(conn, "purchase_batch", "POST", "/v1/purchases/batch", {"items": items},
                       key=_unique(r, "batch"))
    return res is not None and res.status == 200 and res.json()["created"] == BATCH_SIZE


async def op_exchange(r: Runner, conn: Connection, member: str) -> bool:
    """Points for a reward (issue 14): the runner creates an unlimited 'free coffee' for 10 points before the load
    (``context["reward_id"]``), so every exchange is one debit, one voucher, two events, group-committed."""
    reward = r.context["reward_id"]
    res = await r.call(conn, "exchange", "POST", f"/v1/rewards/{reward}/exchanges", {"member_id": member},
                       key=_unique(r, "exchange"))
    return res is not None and res.status == 201


# --- operations on the raw ceiling app (bench/rawapp.py) ----------------------------------------------

async def op_ping(r: Runner, conn: Connection, member: str) -> bool:
    res = await r.call(conn, "ping", "GET", "/ping")
    return res is not None and res.status == 200


async def op_raw_get(r: Runner, conn: Connection, member: str) -> bool:
    res = await r.call(conn, "raw_get", "GET", f"/accounts/{r.member_index(member)}")
    return res is not None and res.status == 200


async def op_raw_txn(r: Runner, conn: Connection, member: str) -> bool:
    body = {"account_id": r.member_index(member), "amount": r.rng.randint(1, 10)}
    res = await r.call(conn, "raw_txn", "POST", "/txn", body)
    return res is not None and res.status == 200


OPS: dict[str, Op] = {
    "balance": op_balance,
    "redeem": op_redeem,
    "adjust": op_adjust,
    "hold_capture": op_hold_capture,
    "purchase": op_purchase,
    "purchase_batch": op_purchase_batch,
    "exchange": op_exchange,
    "ping": op_ping,
    "raw_get": op_raw_get,
    "raw_txn": op_raw_txn,
}

# Operations that need a route which may not exist yet: (method, path, body) sent once as a probe.
ROUTES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "purchase": ("POST", "/v1/purchases", {}),
    "purchase_batch": ("POST", "/v1/purchases/batch", {}),
}


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    ops: dict[str, float]
    target: str = "service"          # "service" or "raw" (the ceiling app)
    members: str = "pick"            # "pick": Zipf/uniform over all members; "hot": the one hot member
    replay_share: float = 0.0        # share of operations that resend an earlier request (same key and body)
    fallback: dict[str, str] = field(default_factory=dict)  # unavailable op -> op used instead
    ceiling: bool = False            # a reference, not a feature of the service
    items_per_op: int = 1            # business items per operation (a batch request: its purchases)
    connections: int | None = None   # concurrent connections, when not the run's (--connections)
    note: str = ""

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "ops": self.ops, "target": self.target,
                "members": self.members, "replay_share": self.replay_share, "fallback": self.fallback,
                "items_per_op": self.items_per_op}


WORKLOADS: list[Workload] = [
    # calibration and ceilings (the raw app: plain asyncpg under uvicorn, same workers)
    Workload("raw_ping", "Trivial endpoint (client check)", {"ping": 1}, target="raw", ceiling=True,
             note="no database: the most the HTTP stack + this client can do"),
    Workload("raw_get", "Raw one-row GET", {"raw_get": 1}, target="raw", ceiling=True),
    Workload("raw_txn", "Raw INSERT+UPDATE txn", {"raw_txn": 1}, target="raw", ceiling=True),
    # the service
    Workload("balance_read", "Balance read", {"balance": 1}),
    Workload("redeem", "Redeem (1-10 points)", {"redeem": 1}),
    Workload("hold_capture", "Hold then capture", {"hold_capture": 1}, note="an operation is two requests"),
    Workload("adjustment", "Adjustment (admin credit)", {"adjust": 1}),
    Workload("exchange", "Exchange (points for a voucher)", {"exchange": 1},
             note="an unlimited reward of 10 points: debit, voucher and events in one write"),
    Workload("purchase", "Purchase (3 lines)", {"purchase": 1}, note="placeholder until POST /v1/purchases lands"),
    Workload("purchase_batch", f"Offline batch ({BATCH_SIZE} purchases)", {"purchase_batch": 1},
             items_per_op=BATCH_SIZE, connections=BATCH_CONNECTIONS,
             note=f"POST /v1/purchases/batch, {BATCH_SIZE} purchases per request, {BATCH_CONNECTIONS} tills "
             "(connections) with their own members: its purchases/s (ops/s x items_per_op) against purchase's"),
    Workload("hot_member", "Hot member (all redeems on one)", {"redeem": 1}, members="hot"),
    Workload("replay_10pct", "Redeem with 10% replays", {"redeem": 1}, replay_share=0.10),
    Workload("mix", "Mix 60/30/10", {"purchase": 60, "balance": 30, "hold_capture": 10},
             fallback={"purchase": "adjust"}, note="60% purchase (adjustment until purchases exist), "
             "30% balance read, 10% hold+capture"),
]

BY_NAME = {w.name: w for w in WORKLOADS}
OPEN_LOOP_OF = "mix"        # the open-loop run replays this workload at a fixed arrival rate
OPEN_LOOP_SHARE = 0.70      # of its measured closed-loop maximum


def resolve_ops(workload: Workload, unavailable: set[str]) -> tuple[dict[str, float], list[str]]:
    """The operations a workload really runs, given the unavailable ones; and notes on substitutions."""
    ops: dict[str, float] = {}
    notes: list[str] = []
    for op, weight in workload.ops.items():
        if op in unavailable:
            sub = workload.fallback.get(op)
            if sub and sub not in unavailable:
                ops[sub] = ops.get(sub, 0) + weight
                notes.append(f"{op} not available: {sub} instead")
            else:
                notes.append(f"{op} not available")
            continue
        ops[op] = ops.get(op, 0) + weight
    return ops, notes
