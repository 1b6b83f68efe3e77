"""Offline tills: a batch of purchases and returns (``POST /v1/purchases/batch``), in one transaction.

Each item is posted exactly as its single request would be: by the same prepared evaluation (``PurchasePost``,
``ReturnPost`` of app/earning/service.py) and the same SQL function (``ledger.purchase``,
``ledger.purchase_return``), with its natural key (order id, return id) as its idempotency: a purchase posted
before with the same content is ``replayed``, with other content refused (``order_already_posted``). A refusal is
that item's result (its problem, as the single request would have answered it) and never touches the others.

1. The batch's members are found and locked first, together, in the service-wide order (``ledger.lock_batch`` ->
   ``ledger.lock_members``): a batch, group commit's batches, transfers and jobs never wait for each other in a
   cycle. Members the batch enrols are created inside its transaction: nobody else can see them before it commits.
2. Each member's items are applied in ``occurred_at`` order (ties: purchases before returns, then request order).
   The items go in rounds: round k posts the k-th item of every member. In a round every item is of another
   member, so their contexts are read in one pipeline (``fetchmany``), evaluated in Python, and posted in one
   pipeline: two round trips per round, not two per item. The facts an item was evaluated on cannot change before
   its post (the member is locked, and its previous item was posted in the previous round).
3. The whole answer is stored under the request's Idempotency-Key in the same transaction: a retry of the batch
   replays it. An error (not a refusal: a unique violation because a concurrent request posted the same order, a
   deadlock with a concurrent enrolment, a member merged meanwhile) rolls the whole transaction back, and the batch
   runs again: items that the other request posted meanwhile are then replays.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.api.problems import domain_error_body
from app.db.access import Db
from app.earning import queries as q
from app.earning.schemas import BatchPurchase, BatchReturn, PurchaseBatch, PurchaseCreate, ReturnCreate
from app.earning.service import PurchasePost, ReturnPost
from app.errors import DomainError
from app.ledger.writes import Answer, Write, busy_error, raise_for_status
from app.programs.context import Principal

# An item whose post answered 'stale' (its member was enrolled by a concurrent request meanwhile) goes again in the
# next round, this many times at most.
MAX_STALE = 3
ATTEMPTS = 3


@dataclass
class _Item:
    index: int
    kind: str  # purchase | return
    order_id: str
    return_id: str | None
    at: datetime
    prepared: PurchasePost | ReturnPost | None = None
    group: Any = None  # its member (see member_of)
    stale: int = 0
    outcome: str | None = None  # created | replayed | refused
    http_status: int = 0
    body: str | None = None  # the single request's answer (JSON text), or its problem

    def refuse(self, error: DomainError) -> None:
        self.outcome, self.http_status = "refused", error.status
        self.body = json.dumps(domain_error_body(error), separators=(",", ":"), default=str)

    def answer(self, answer: Answer) -> None:
        try:
            raise_for_status(answer.status, answer.detail)
        except DomainError as error:
            self.refuse(error)
            return
        assert answer.http_status is not None
        self.outcome = "replayed" if answer.replayed else "created"
        self.http_status, self.body = answer.http_status, answer.body

    def render(self) -> str:
        head = {"index": self.index, "type": self.kind, "order_id": self.order_id, "return_id": self.return_id,
                "status": self.outcome, "http_status": self.http_status}
        text = json.dumps(head, separators=(",", ":"))[:-1]
        slot = "problem" if self.outcome == "refused" else "result"
        other = "result" if slot == "problem" else "problem"
        return f'{text},"{slot}":{self.body},"{other}":null}}'


@dataclass
class _Groups:
    """Each member's items, in occurred_at order."""

    queues: dict[Any, deque[_Item]] = field(default_factory=dict)

    def add(self, key: Any, items: list[_Item]) -> None:
        for item in sorted(items, key=lambda i: (i.at, i.kind != "purchase", i.index)):
            item.group = key
            self.queues.setdefault(key, deque()).append(item)

    def next_round(self) -> list[_Item]:
        round_ = [queue.popleft() for queue in self.queues.values() if queue]
        self.queues = {k: v for k, v in self.queues.items() if v}
        return round_


def _purchase(item: BatchPurchase) -> PurchaseCreate:
    """The item as the single request's body (the same content hash, the same stored purchase)."""
    fields = {name: getattr(item, name) for name in PurchaseCreate.model_fields}
    return PurchaseCreate.model_construct(item.model_fields_set - {"type"}, **fields)


def _return(item: BatchReturn) -> ReturnCreate:
    fields = {name: getattr(item, name) for name in ReturnCreate.model_fields}
    return ReturnCreate.model_construct(item.model_fields_set - {"type", "order_id"}, **fields)


async def post_batch(db: Db, p: Principal, data: PurchaseBatch, key: str, fingerprint: bytes) -> Answer:
    for attempt in range(ATTEMPTS):
        try:
            async with db.pool.acquire() as conn, conn.transaction():
                return await _run(db, conn, p, data, key, fingerprint)
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if attempt == ATTEMPTS - 1:
                raise DomainError("member_busy", "The batch kept colliding with concurrent requests.") from None
        except asyncpg.LockNotAvailableError as exc:
            raise busy_error(exc) from None
    raise AssertionError("unreachable")


async def _run(db: Db, conn: asyncpg.Connection, p: Principal, data: PurchaseBatch, key: str,
               fingerprint: bytes) -> Answer:
    stored = Answer.of(await conn.fetchrow(q.STORED_ANSWER, p.program_id, key, fingerprint))
    if stored.status is not None:
        return stored
    now = datetime.now(UTC)
    items: list[_Item] = []
    for index, raw in enumerate(data.items):
        if isinstance(raw, BatchPurchase):
            item = _Item(index, "purchase", raw.order_id, None, raw.occurred_at or now)
            try:
                item.prepared = await PurchasePost(db, p, _purchase(raw), None, b"").load()
            except DomainError as error:
                item.refuse(error)
        else:
            item = _Item(index, "return", raw.order_id, raw.return_id, raw.occurred_at or now)
            try:
                item.prepared = ReturnPost(p, raw.order_id, _return(raw), None, b"")
            except DomainError as error:
                item.refuse(error)
        items.append(item)

    # 1. the members, locked together; each item's member (an order of this batch: its purchase's member)
    member_refs = sorted({raw.member_id for raw in data.items if isinstance(raw, BatchPurchase)})
    order_member: dict[str, str] = {}
    for raw in data.items:
        if isinstance(raw, BatchPurchase):
            order_member.setdefault(raw.order_id, raw.member_id)
    orders = sorted({raw.order_id for raw in data.items if isinstance(raw, BatchReturn)} - order_member.keys())
    by_ref: dict[str, int] = {}
    by_order: dict[str, int] = {}
    for row in await conn.fetch(q.LOCK_BATCH, p.program_id, member_refs, orders):
        if row["member_ref"] is not None:
            by_ref[row["member_ref"]] = row["member_pk"]
        else:
            by_order[row["order_id"]] = row["member_pk"]

    def member_of(item: _Item, raw: BatchPurchase | BatchReturn) -> Any:
        ref = raw.member_id if isinstance(raw, BatchPurchase) else order_member.get(raw.order_id)
        if ref is not None:
            return ("member", by_ref[ref]) if ref in by_ref else ("new", ref)
        pk = by_order.get(raw.order_id)
        return ("member", pk) if pk is not None else ("order", raw.order_id)

    grouped: dict[Any, list[_Item]] = {}
    for item, raw in zip(items, data.items, strict=True):
        if item.outcome is None:
            grouped.setdefault(member_of(item, raw), []).append(item)
    groups = _Groups()
    for group_key, group in grouped.items():
        groups.add(group_key, group)

    # 2. rounds: the next item of every member, read in one pipeline and posted in one pipeline
    while round_ := groups.next_round():
        again = await _post_round(conn, round_)
        for item in again:  # first again, before the member's next item
            groups.queues.setdefault(item.group, deque()).appendleft(item)

    # 3. the answer, stored under the key with the effects
    counts = {k: sum(1 for i in items if i.outcome == k) for k in ("created", "replayed", "refused")}
    body = (f'{{"created":{counts["created"]},"replayed":{counts["replayed"]},"refused":{counts["refused"]},'
            f'"results":[{",".join(i.render() for i in items)}]}}')
    return Answer.of(await conn.fetchrow(q.RESPOND, p.program_id, key, fingerprint, 200, body))


async def _post_round(conn: asyncpg.Connection, round_: list[_Item]) -> list[_Item]:
    """Post one round (items of distinct members); answers the items to post again (stale)."""
    purchases = [i for i in round_ if i.kind == "purchase"]
    returns = [i for i in round_ if i.kind == "return"]
    writes: list[tuple[_Item, Write]] = []
    if purchases:
        rows = await conn.fetchmany(q.PURCHASE_CONTEXT, [i.prepared.context_args() for i in purchases])  # type: ignore[union-attr]
        for item, row in zip(purchases, rows, strict=True):
            prepared = item.prepared
            assert isinstance(prepared, PurchasePost)
            try:
                writes.append((item, prepared.post(await prepared.accept(row))))
            except DomainError as error:
                item.refuse(error)
    if returns:
        rows = await conn.fetchmany(q.RETURN_CONTEXT_ROW, [i.prepared.context_args() for i in returns])  # type: ignore[union-attr]
        for item, row in zip(returns, rows, strict=True):
            prepared = item.prepared
            assert isinstance(prepared, ReturnPost)
            try:
                writes.append((item, prepared.post(prepared.accept(row))))
            except DomainError as error:
                item.refuse(error)
    by_sql: dict[str, list[tuple[_Item, Write]]] = {}
    for item, write in writes:
        by_sql.setdefault(write.sql(), []).append((item, write))
    again: list[_Item] = []
    for sql, batch in by_sql.items():
        answers = await conn.fetchmany(sql, [w.values() for _, w in batch])
        for (item, _), row in zip(batch, answers, strict=True):
            answer = Answer.of(row)
            if answer.status == "stale":
                item.stale += 1
                if item.stale > MAX_STALE:
                    item.refuse(DomainError("member_busy"))
                else:
                    again.append(item)
                continue
            item.answer(answer)
    return again
