"""Group commit: the writes that reach this process at the same moment go to Postgres together.

A write is one statement (app/ledger/writes.py). Writes of the same function that arrive within
``window`` seconds of the first of them, up to ``max_batch``, are sent with asyncpg's ``fetchmany``: every execution
of the statement in one pipeline, so one round trip, and one implicit transaction, so one commit (one WAL flush)
for all of them. What that buys (ANCHORS.md, "Group commit"): the round trip and the commit, which cost far more
than the rows, are paid once per batch; and a hot member's writes apply one after another inside one transaction
instead of queueing on its row lock across transactions.

* **Order and deadlocks.** Each batched function locks exactly one member, the one its ``p_member_ref`` names. A
  batch executes its writes sorted by (program, member reference), so every transaction takes its members' locks
  in one global order and two batches (of this process or another worker) can never deadlock. The sort is stable:
  one member's writes apply in arrival order. Writes addressed by another id (capture, void, refund, return,
  reversal: the member is found in SQL) are not batched; they lock one member each and cannot deadlock either.
* **Isolation.** A refusal is an answer, not an error: it does not touch the other writes of its batch. An error
  (a unique violation from a concurrent duplicate, a lock timeout...) aborts the batch's transaction, so nothing of
  it is written; then each write of the batch runs again on its own, and only the one that failed fails.
* ``window`` 0: no wait; a write is sent at once unless a batch of its function is running already, and the
  writes that arrive meanwhile go together when it ends (at most ``max_inflight`` batches of a function at once).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.ledger.writes import Answer, Write, execute_alone

log = logging.getLogger(__name__)

# The write functions that lock exactly the member of their p_member_ref (and nothing of another member).
# issue-14: `exchange` too, but only for rewards without a stock: taking a unit of stock locks the reward's row as
# well, and two batches taking two rewards' rows in opposite orders could deadlock, so in a batch such an exchange
# answers 'stale' before writing anything and app/rewards/service.py runs it again alone (95_rewards.sql).
BATCHED = frozenset({"redeem", "adjust", "purchase", "event", "exchange"})


@dataclass
class _Queue:
    items: list[tuple[Write, asyncio.Future[Answer]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Batcher:
    def __init__(self, pool: asyncpg.Pool, window: float, max_batch: int = 64, max_inflight: int = 1) -> None:
        self.pool = pool
        self.window = window
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queues: dict[str, _Queue] = {}
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches committed, and the writes in them
        self.batched_writes = 0
        self.fallbacks = 0  # batches that failed and ran their writes one by one

    async def submit(self, write: Write) -> Answer:
        if write.function not in BATCHED:
            return await execute_alone(self.pool, write)
        sql = write.sql()
        queue = self._queues.setdefault(sql, _Queue())
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        queue.items.append((write, future))
        if len(queue.items) >= self.max_batch:
            self._flush(sql)
        elif self.window <= 0:
            if self._inflight.get(sql, 0) < self.max_inflight:
                self._flush(sql)
        elif queue.timer is None:
            queue.timer = asyncio.get_running_loop().call_later(self.window, self._flush, sql)
        return await future

    def _flush(self, sql: str) -> None:
        queue = self._queues.pop(sql, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        self._inflight[sql] = self._inflight.get(sql, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(sql, queue.items))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(sql, t))

    def _done(self, sql: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight[sql] -= 1
        if self.window <= 0 and sql in self._queues:
            self._flush(sql)

    async def _run(self, sql: str, items: list[tuple[Write, asyncio.Future[Answer]]]) -> None:
        if len(items) == 1:
            await self._alone(*items[0])
            return
        order = sorted(range(len(items)), key=lambda i: _lock_key(items[i][0]))
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetchmany(sql, [items[i][0].values() for i in order])
        except Exception as exc:  # nothing of the batch was written: each write again, on its own
            self.fallbacks += 1
            log.info("group commit: a batch of %d failed (%s); its writes run one by one", len(items),
                     type(exc).__name__)
            for i in order:
                await self._alone(*items[i])
            return
        self.batches += 1
        self.batched_writes += len(items)
        for i, row in zip(order, rows, strict=True):
            future = items[i][1]
            if not future.done():
                future.set_result(Answer.of(row))

    async def _alone(self, write: Write, future: asyncio.Future[Answer]) -> None:
        try:
            answer = await execute_alone(self.pool, write)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(answer)


def _lock_key(write: Write) -> tuple[str, str]:
    args: Any = write.args
    return str(args["p_program"]), str(args["p_member_ref"])
