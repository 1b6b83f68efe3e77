"""Scheduled jobs: one leader among many processes, jobs run by the leader only."""

from __future__ import annotations

import asyncio

from app.jobs.scheduler import Job, Scheduler


async def test_exactly_one_scheduler_leads_and_runs_jobs(database_url, db):
    runs: list[str] = []

    def job(name: str) -> Job:
        async def run(pool) -> int:
            runs.append(name)
            return 1

        return Job(name, 0.05, run)

    a = Scheduler(database_url, db, [job("a")], tick_seconds=0.05)
    b = Scheduler(database_url, db, [job("b")], tick_seconds=0.05)
    a.start()
    b.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if runs:
                break
        await asyncio.sleep(0.3)
        assert [a.is_leader, b.is_leader].count(True) == 1
        leader, follower = (a, b) if a.is_leader else (b, a)
        assert runs and set(runs) == {"a" if leader is a else "b"}
        # the leader goes away: the other one takes over
        await leader.stop()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if follower.is_leader:
                break
        assert follower.is_leader
    finally:
        await a.stop()
        await b.stop()


async def test_release_holds_cli(database_url):
    import os
    import subprocess
    import sys

    r = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "app.cli", "release-holds"],
                                env={**os.environ, "DATABASE_URL": database_url}, capture_output=True, text=True,
                                timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("released ")
