"""The bank workload: K concurrent clients issue a random mix of ledger writes against a few members, so they
collide, and log every request and answer as one JSON line (``client.jsonl``) for the checker.

Every write is a logical *operation* with its own Idempotency-Key (and, where the API takes ``metadata``, the
operation id in it, so its entry can be found in the ledger). A client sends an operation until it gets a
*definitive* answer (2xx, or a 4xx other than the retryable 409s) or its tries run out; transport errors, 5xx
and ``member_busy``/``request_in_progress`` are retried with the same key and body. On top of that, clients
deliberately replay finished operations (same key, same body), send new operations twice at once,
re-post purchases under a new key (the order id is a natural key), reuse a key for a different request,
and race a capture against a void of the same hold.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from reliability.harness import Deadline

RETRYABLE_409 = {"member_busy", "request_in_progress"}

# (sku, category, unit price): a small café.
SKUS = [("LATTE", "drinks", "4.50"), ("BEANS-1KG", "coffee-beans", "19.90"), ("CAKE", "food", "3.80"),
        ("MUG", "merch", "12.00"), ("WATER", "drinks", "1.99")]

DEFAULT_MIX = {
    "purchase": 18, "return": 7, "redeem": 11, "hold": 10, "capture": 7, "void": 4, "race": 2, "adjust": 10,
    "refund": 6, "event": 3, "reverse": 2, "replay": 9, "dup": 4, "natural": 3, "misuse": 2, "read": 4,
}

EARN_RULES = {"base": {"points_per_unit": "2"}, "events": [{"name": "survey_completed", "points": 5}]}


def definitive(status: int | None, body: Any) -> bool:
    """An answer the client may act on: 2xx, or a 4xx that is not one of the 'retry later' 409s."""
    if status is None or status >= 500 or status == 429:
        return False
    if status == 409 and isinstance(body, dict) and body.get("code") in RETRYABLE_409:
        return False
    return 200 <= status < 500


@dataclass
class Op:
    id: str
    kind: str
    method: str
    path: str
    body: dict[str, Any] | None
    key: str | None
    member: str | None
    ref: Any = None  # hold id, redemption id, order id, entry id or original operation id
    answer: tuple[int, Any] | None = None  # the first definitive answer

    @property
    def acked(self) -> bool:
        return self.answer is not None and 200 <= self.answer[0] < 300


@dataclass
class RetryPolicy:
    tries: int = 8
    op_seconds: float = 30.0
    backoff_first: float = 0.05
    backoff_max: float = 1.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return min(self.backoff_max, self.backoff_first * 2 ** attempt) * (0.5 + rng.random())


@dataclass
class Stats:
    attempts: int = 0
    transport_errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class ClientLog:
    """The client log: one JSON line per request sent, with its answer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", buffering=1 << 16)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")

    def close(self) -> None:
        self._file.close()


class Workload:
    def __init__(self, base_url: str, admin_key: str, members: list[str], log: ClientLog, rng: random.Random, *,
                 policy: RetryPolicy | None = None, mix: dict[str, int] | None = None, timeout: float = 10.0,
                 connections: int = 64, tag: str = "") -> None:
        self.base_url = base_url
        self.admin_key = admin_key
        self.members = members
        self.log = log
        self.rng = rng
        self.policy = policy or RetryPolicy()
        self.mix = mix or DEFAULT_MIX
        self.timeout = timeout
        self.connections = connections
        self.tag = tag or f"{rng.randrange(16**6):06x}"
        self.http: httpx.AsyncClient | None = None
        self.stats = Stats()
        self._seq = 0
        # What the clients know, to pick targets for follow-up operations.
        self.ops: dict[str, Op] = {}
        self.finished: list[Op] = []  # operations with a definitive answer (replay candidates)
        self.purchases: list[Op] = []  # acknowledged purchases
        self.open_holds: dict[int, Op] = {}  # acknowledged holds not known to be resolved
        self.redemptions: dict[int, int] = {}  # acknowledged redemption id -> points
        self.adjust_entries: list[int] = []  # entry ids of acknowledged adjustments
        self.in_doubt: list[Op] = []  # operations whose tries ran out without a definitive answer

    # --- plumbing ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Workload:
        limits = httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections)
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, limits=limits)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.aclose()

    def _new_id(self, kind: str) -> str:
        self._seq += 1
        return f"{self.tag}-{self._seq:06d}-{kind}"

    def new_op(self, kind: str, method: str, path: str, body: dict[str, Any] | None, member: str | None,
               ref: Any = None, key: str | None = "new", op_id: str | None = None) -> Op:
        op_id = op_id or self._new_id(kind)
        op = Op(op_id, kind, method, path, body, op_id if key == "new" else key, member, ref)
        self.ops[op_id] = op
        return op

    async def send(self, op: Op, purpose: str, client: int, attempt: int = 0,
                   http: httpx.AsyncClient | None = None) -> tuple[int | None, Any]:
        http = http or self.http
        assert http is not None
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        if op.key:
            headers["Idempotency-Key"] = op.key
        started = time.time()
        status: int | None = None
        body: Any = None
        replayed = False
        error = None
        try:
            r = await http.request(op.method, op.path, json=op.body, headers=headers)
            status = r.status_code
            replayed = r.headers.get("idempotent-replayed") == "true"
            try:
                body = r.json()
            except ValueError:
                body = r.text[:2000]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            self.stats.transport_errors += 1
        elapsed = time.time() - started
        self.stats.attempts += 1
        label = str(status) if status is not None else "error"
        self.stats.statuses[label] = self.stats.statuses.get(label, 0) + 1
        self.log.write({
            "op": op.id, "kind": op.kind, "purpose": purpose, "client": client, "attempt": attempt,
            "method": op.method, "path": op.path, "key": op.key, "member": op.member, "ref": op.ref,
            "body": op.body, "t0": round(started, 6), "t1": round(started + elapsed, 6), "status": status,
            "replayed": replayed, "resp": body, "error": error,
        })
        return status, body

    async def execute(self, op: Op, client: int, purpose: str = "original") -> tuple[int, Any] | None:
        """Send until a definitive answer or the tries run out (then the operation is in doubt)."""
        deadline = Deadline(self.policy.op_seconds)
        for attempt in range(self.policy.tries):
            status, body = await self.send(op, purpose if attempt == 0 else "retry", client, attempt)
            if definitive(status, body):
                assert status is not None
                self._settle(op, status, body)
                return status, body
            if deadline.expired or attempt == self.policy.tries - 1:
                break
            await asyncio.sleep(min(self.policy.backoff(attempt, self.rng), max(deadline.left, 0)))
        if op.answer is None and op not in self.in_doubt:
            self.in_doubt.append(op)
        return None

    def _settle(self, op: Op, status: int, body: Any) -> None:
        if op.answer is not None:
            return
        op.answer = (status, body)
        if op in self.in_doubt:
            self.in_doubt.remove(op)
        if op.key and op.kind not in ("misuse",):
            self.finished.append(op)
        if not 200 <= status < 300:
            if op.kind in ("capture", "void") and isinstance(body, dict) and body.get("code") in (
                    "hold_not_open", "hold_expired", "hold_not_found"):
                self.open_holds.pop(op.ref, None)
            return
        if op.kind == "purchase":
            self.purchases.append(op)
        elif op.kind == "hold":
            self.open_holds[body["hold"]["id"]] = op
        elif op.kind in ("capture", "void"):
            self.open_holds.pop(op.ref, None)
            redemption = body.get("redemption")
            if redemption:
                self.redemptions[redemption["id"]] = redemption["points"]
        elif op.kind == "redeem":
            self.redemptions[body["redemption"]["id"]] = body["redemption"]["points"]
        elif op.kind == "adjust":
            self.adjust_entries.append(body["entry"]["id"])

    # --- setup ---------------------------------------------------------------------------------------------

    async def setup(self, opening_points: int = 3000) -> None:
        """Earn rules with a custom event, the members, and an opening credit for each (logged operations)."""
        assert self.http is not None
        auth = {"Authorization": f"Bearer {self.admin_key}"}
        r = await self.http.put("/v1/program/earn-rules", json=EARN_RULES, headers=auth)
        r.raise_for_status()
        for member in self.members:
            r = await self.http.put(f"/v1/members/{member}", json={"name": None}, headers=auth)
            r.raise_for_status()
            op = self.new_op("adjust", "POST", "/v1/adjustments", None, member)
            op.body = {"member_id": member, "points": opening_points, "reason": "opening balance",
                       "metadata": {"op": op.id}}
            if await self.execute(op, -1, "setup") is None:
                raise RuntimeError(f"setup adjustment for {member} got no answer")

    # --- operations ----------------------------------------------------------------------------------------

    def _member(self) -> str:
        return self.rng.choice(self.members)

    def op_purchase(self) -> Op:
        member = self._member()
        op = self.new_op("purchase", "POST", "/v1/purchases", None, member)
        lines = []
        total = Decimal(0)
        for sku, category, price in self.rng.sample(SKUS, self.rng.randint(1, 3)):
            quantity = self.rng.randint(1, 4)
            lines.append({"sku": sku, "category": category, "quantity": quantity, "unit_price": price})
            total += Decimal(price) * quantity
        op.body = {"member_id": member, "order_id": f"order-{op.id}", "currency": "EUR", "total": str(total),
                   "channel": "pos", "store_id": "rel-store", "lines": lines}
        op.ref = op.body["order_id"]
        return op

    def op_return(self) -> Op:
        purchase = self.rng.choice(self.purchases)
        assert purchase.body is not None
        order_id = purchase.body["order_id"]
        op = self.new_op("return", "POST", f"/v1/purchases/{order_id}/returns", None, purchase.member, order_id)
        if self.rng.random() < 0.6:
            line = self.rng.choice(purchase.body["lines"])
            op.body = {"return_id": f"ret-{op.id}", "lines": [{"sku": line["sku"], "quantity": 1}]}
        else:
            amount = (Decimal(purchase.body["total"]) * Decimal(self.rng.randint(5, 60)) / 100).quantize(
                Decimal("0.01"))
            op.body = {"return_id": f"ret-{op.id}", "amount": str(amount)}
        return op

    def op_redeem(self) -> Op:
        member = self._member()
        op = self.new_op("redeem", "POST", "/v1/redemptions", None, member)
        op.body = {"member_id": member, "points": self.rng.randint(1, 400), "reference": op.id,
                   "metadata": {"op": op.id}}
        return op

    def op_hold(self) -> Op:
        member = self._member()
        op = self.new_op("hold", "POST", "/v1/holds", None, member)
        # Most holds outlive the run; some expire within seconds, so captures and voids race the expiry and
        # the scheduler's release job.
        seconds = 3600 if self.rng.random() < 0.85 else self.rng.randint(1, 6)
        op.body = {"member_id": member, "points": self.rng.randint(1, 400), "reference": op.id,
                   "expires_in_seconds": seconds, "metadata": {"op": op.id}}
        return op

    def op_capture(self, hold_id: int, hold: Op) -> Op:
        op = self.new_op("capture", "POST", f"/v1/holds/{hold_id}/capture", None, hold.member, hold_id)
        held = hold.answer[1]["hold"]["points"] if hold.answer else 1
        op.body = {"points": self.rng.randint(1, held)} if self.rng.random() < 0.4 else {}
        return op

    def op_void(self, hold_id: int, hold: Op) -> Op:
        op = self.new_op("void", "POST", f"/v1/holds/{hold_id}/void", None, hold.member, hold_id)
        op.body = {"reason": f"void {op.id}"}
        return op

    def op_adjust(self) -> Op:
        member = self._member()
        op = self.new_op("adjust", "POST", "/v1/adjustments", None, member)
        points = self.rng.randint(1, 500) if self.rng.random() < 0.7 else -self.rng.randint(1, 300)
        op.body = {"member_id": member, "points": points, "reason": "bank test", "metadata": {"op": op.id}}
        return op

    def op_refund(self) -> Op:
        redemption_id, points = self.rng.choice(list(self.redemptions.items()))
        op = self.new_op("refund", "POST", f"/v1/redemptions/{redemption_id}/refunds", None, None, redemption_id)
        # Usually part of it; sometimes up to all of it, which partial refunds before may have exceeded.
        most = points if self.rng.random() < 0.2 else max(1, points * 2 // 3)
        op.body = {"points": self.rng.randint(1, most), "metadata": {"op": op.id}}
        return op

    def op_event(self) -> Op:
        member = self._member()
        op = self.new_op("event", "POST", "/v1/events", None, member)
        op.body = {"member_id": member, "event_id": f"ev-{op.id}", "name": "survey_completed",
                   "metadata": {"op": op.id}}
        op.ref = op.body["event_id"]
        return op

    def op_reverse(self) -> Op:
        entry_id = self.rng.choice(self.adjust_entries)
        op = self.new_op("reverse", "POST", f"/v1/entries/{entry_id}/reverse", None, None, entry_id)
        op.body = {"reason": "bank test reversal", "metadata": {"op": op.id}}
        return op

    def op_natural(self) -> Op:
        original = self.rng.choice(self.purchases)
        return self.new_op("purchase_retry", "POST", original.path, original.body, original.member, original.id)

    def op_misuse(self) -> Op | None:
        candidates = [o for o in self.finished[-200:] if o.acked and o.kind != "purchase_retry"]
        if not candidates:
            return None
        original = self.rng.choice(candidates)
        member = self._member()
        op = self.new_op("misuse", "POST", "/v1/adjustments", None, member, original.id, key=original.key)
        op.body = {"member_id": member, "points": 1, "reason": "key reuse", "metadata": {"op": op.id}}
        return op

    # --- clients -------------------------------------------------------------------------------------------

    def _pick(self) -> str:
        kinds = list(self.mix)
        return self.rng.choices(kinds, weights=[self.mix[k] for k in kinds])[0]

    async def step(self, client: int) -> None:
        kind = self._pick()
        if kind == "return" and not self.purchases or kind == "natural" and not self.purchases:
            kind = "purchase"
        if kind in ("capture", "void", "race") and not self.open_holds:
            kind = "hold"
        if kind == "refund" and not self.redemptions:
            kind = "redeem"
        if kind == "reverse" and not self.adjust_entries:
            kind = "adjust"
        if kind == "replay" and not self.finished:
            kind = "adjust"
        if kind == "replay":
            original = self.rng.choice(self.finished[-300:])
            await self.send(original, "replay", client)
            return
        if kind == "read":
            member = self._member()
            op = Op(self._new_id("read"), "read", "GET", f"/v1/members/{member}/balance", None, None, member)
            await self.send(op, "read", client)
            return
        if kind in ("capture", "void", "race"):
            hold_id, hold = self.rng.choice(list(self.open_holds.items()))
            if kind == "race":
                capture, void = self.op_capture(hold_id, hold), self.op_void(hold_id, hold)
                await asyncio.gather(self.execute(capture, client, "race"), self.execute(void, client, "race"))
                return
            op = self.op_capture(hold_id, hold) if kind == "capture" else self.op_void(hold_id, hold)
            await self.execute(op, client)
            return
        if kind == "dup":
            op = self.rng.choice([self.op_adjust, self.op_redeem, self.op_hold, self.op_purchase])()
            results = await asyncio.gather(self.send(op, "dup", client, 0), self.send(op, "dup", client, 0))
            for status, body in results:
                if definitive(status, body):
                    assert status is not None
                    self._settle(op, status, body)
            if op.answer is None:
                await self.execute(op, client, "retry")
            return
        if kind == "misuse":
            misuse = self.op_misuse()
            if misuse is not None:
                await self.execute(misuse, client)
            return
        builder = {"purchase": self.op_purchase, "return": self.op_return, "redeem": self.op_redeem,
                   "hold": self.op_hold, "adjust": self.op_adjust, "refund": self.op_refund,
                   "event": self.op_event, "reverse": self.op_reverse, "natural": self.op_natural}[kind]
        await self.execute(builder(), client)

    async def client_loop(self, client: int, deadline: Deadline, max_ops: int, stop: asyncio.Event | None) -> int:
        done = 0
        while not deadline.expired and done < max_ops and not (stop is not None and stop.is_set()):
            await self.step(client)
            done += 1
        return done

    async def run(self, clients: int, seconds: float, max_ops_per_client: int = 100_000,
                  stop: asyncio.Event | None = None) -> int:
        """Run the clients for ``seconds`` (or until ``stop`` is set, if sooner); return their steps."""
        deadline = Deadline(seconds)
        counts = await asyncio.gather(*(self.client_loop(c, deadline, max_ops_per_client, stop)
                                        for c in range(clients)))
        return sum(counts)

    async def reconcile(self, client: int = -2, rounds: int = 2) -> int:
        """Send every in-doubt operation again with its key until it gets a definitive answer (bounded, all
        at once): what a real client does after an outage. Returns how many stay in doubt."""
        for _ in range(rounds):
            if not self.in_doubt:
                break
            await asyncio.gather(*(self.execute(op, client, "reconcile") for op in list(self.in_doubt)))
        return len(self.in_doubt)
