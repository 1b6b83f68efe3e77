"""In-process scheduler for periodic jobs, safe with many replicas and workers.

Every process runs a ``Scheduler``; exactly one of them at a time is the leader: the one holding a
session-level Postgres advisory lock on its own dedicated connection. If the leader dies its
connection closes, the lock is released, and another process takes over on its next attempt. Jobs are
idempotent anyway (a hold resolves at most once), so a brief overlap could not double-apply anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from app.config import Settings
from app.db.urls import asyncpg_dsn

log = logging.getLogger(__name__)

LEADER_LOCK_KEY = 0x706C5F6A6F6273  # "pl_jobs"


@dataclass
class Job:
    name: str
    every_seconds: float
    run: Callable[[asyncpg.Pool], Awaitable[int]]
    next_run: float = 0.0


class Scheduler:
    def __init__(self, database_url: str, pool: asyncpg.Pool, jobs: list[Job], tick_seconds: float = 1.0) -> None:
        self.database_url = database_url
        self.pool = pool
        self.jobs = jobs
        self.tick_seconds = tick_seconds
        self.is_leader = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
                while not self._stopping.is_set():
                    if not self.is_leader:
                        self.is_leader = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY))
                        if self.is_leader:
                            log.info("scheduler: this process is the job leader")
                    else:
                        await conn.fetchval("SELECT 1")  # notice a lost connection, and with it the lock
                    if self.is_leader:
                        await self.run_due_jobs()
                    await asyncio.sleep(self.tick_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost, database restarting...: retry later
                log.warning("scheduler: %s: %s", type(exc).__name__, exc)
                self.is_leader = False
                await asyncio.sleep(self.tick_seconds * 5)
            finally:
                self.is_leader = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def run_due_jobs(self) -> None:
        now = time.monotonic()
        for job in self.jobs:
            if now < job.next_run:
                continue
            job.next_run = now + job.every_seconds
            started = time.perf_counter()
            try:
                count = await job.run(self.pool)
            except Exception:
                log.exception("scheduler: job %s failed", job.name)
                continue
            if count:
                log.info("scheduler: job %s processed %d in %.3fs", job.name, count,
                         time.perf_counter() - started)


def default_jobs(settings: Settings) -> list[Job]:
    from app.api.idempotency import purge_expired
    from app.earning.service import activate_due_pending
    from app.events.service import purge_changes
    from app.expiry.service import announce_expiring, expire_now
    from app.insight.service import refresh_due
    from app.redemption.service import release_expired_holds
    from app.rewards.service import expire_vouchers
    from app.tiers.service import evaluate_now

    async def purge(pool: asyncpg.Pool) -> int:
        return await purge_expired(pool, settings.idempotency_retention_days)

    async def purge_feed(pool: asyncpg.Pool) -> int:
        return await purge_changes(pool, settings.changes_retention_days)

    async def refresh_insight(pool: asyncpg.Pool) -> int:
        return await refresh_due(pool, settings.insight_refresh_hours)

    return [
        Job("release-holds", 5.0, release_expired_holds),
        Job("release-pending", 30.0, activate_due_pending),
        Job("expire", 60.0, expire_now),
        Job("announce-expiring", 3600.0, announce_expiring),
        Job("expire-vouchers", 60.0, expire_vouchers),
        Job("evaluate-tiers", 3600.0, evaluate_now),
        Job("purge-idempotency-keys", 3600.0, purge),
        Job("purge-changes", 3600.0, purge_feed),
        Job("insight-refresh", 600.0, refresh_insight),
    ]
