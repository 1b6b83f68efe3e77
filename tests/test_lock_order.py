"""One lock order for the whole service: a job (or anything) locking several members takes them in the order group
commit's batches take theirs, (program, member reference), so the two never wait for each other in a cycle."""

from __future__ import annotations

import asyncio

import asyncpg

from app.ledger.batch import _lock_key
from app.ledger.writes import Write


async def test_jobs_lock_members_in_the_order_batches_do(tenant, db, database_url):
    from app.db.urls import asyncpg_dsn

    # member ids (pks) in the opposite order of the references: 'lo-b' is created first
    await tenant.member("lo-b")
    await tenant.member("lo-a")
    pks = {r["external_id"]: r["id"] for r in await db.fetch(
        "SELECT external_id, id FROM members WHERE program_id = $1 AND external_id LIKE 'lo-%'", tenant.program_id)}
    assert pks["lo-b"] < pks["lo-a"]
    # the order a batch takes: by reference
    writes = [Write("redeem", {"p_program": tenant.program_id, "p_member_ref": ref}) for ref in ("lo-b", "lo-a")]
    assert [w.args["p_member_ref"] for w in sorted(writes, key=_lock_key)] == ["lo-a", "lo-b"]
    batch = await asyncpg.connect(asyncpg_dsn(database_url))
    job = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await batch.execute("SET deadlock_timeout = '100ms'; SET lock_timeout = '10s'")
        await job.execute("SET deadlock_timeout = '100ms'; SET lock_timeout = '10s'")
        tx_batch, tx_job = batch.transaction(), job.transaction()
        await tx_batch.start()
        await tx_job.start()
        await batch.execute("SELECT ledger.lock_member($1)", pks["lo-a"])  # the batch's first write
        # the job wants both: in the service's order it waits for 'lo-a' without taking 'lo-b' first
        waiting = asyncio.create_task(job.execute("SELECT ledger.lock_members($1)", [pks["lo-b"], pks["lo-a"]]))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await batch.execute("SELECT ledger.lock_member($1)", pks["lo-b"])  # the batch's second write: no deadlock
        await tx_batch.commit()
        await asyncio.wait_for(waiting, 10)
        await tx_job.commit()
    finally:
        await batch.close()
        await job.close()
