"""Group commit (app/ledger/batch.py): writes that reach one process at the same moment go to Postgres in one round
trip and one transaction, and each is answered exactly as if it had run alone."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import httpx

from tests.conftest import make_tenant


async def _redeem(tenant: Any, member: str, points: int) -> httpx.Response:
    return await tenant.client.post("/v1/redemptions", json={"member_id": member, "points": points},
                                    headers=tenant.headers(idem=uuid.uuid4().hex))


async def test_concurrent_writes_are_batched_and_answered_as_alone(app, tenant):
    batcher = app.state.db.writer.batcher
    assert batcher is not None
    members = [f"gc-{i}" for i in range(8)]
    for m in members:
        await tenant.member(m)
        assert (await tenant.adjust(m, 1000)).status_code == 201
    batches, writes = batcher.batches, batcher.batched_writes
    rng = random.Random(3)
    plan = [(rng.choice(members), rng.randint(1, 9)) for _ in range(160)]
    responses = await asyncio.gather(*[_redeem(tenant, m, p) for m, p in plan])
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201][:3]
    assert batcher.batches > batches and batcher.batched_writes - writes > batcher.batches - batches
    for m in members:
        spent = sum(p for who, p in plan if who == m)
        assert (await tenant.balance(m))["available"] == 1000 - spent
    # each answer is the write's own: its member, its points, and a balance that reflects it
    for (m, p), r in zip(plan, responses, strict=True):
        body = r.json()
        assert body["redemption"]["member_id"] == m and body["redemption"]["points"] == p
        assert body["balance"]["member_id"] == m
    assert (await tenant.verify())["ok"]


async def test_a_hot_member_never_overdraws_inside_a_batch(app, tenant):
    await tenant.member("hot")
    assert (await tenant.adjust("hot", 1000)).status_code == 201
    responses = await asyncio.gather(*[_redeem(tenant, "hot", 30) for _ in range(60)])
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 33 + [422] * 27
    assert all(r.json()["code"] == "insufficient_points" for r in responses if r.status_code == 422)
    # the writes of one member apply in arrival order: the balances answered go down by 30 each time
    answered = sorted(r.json()["balance"]["available"] for r in responses if r.status_code == 201)
    assert answered == list(range(10, 1000, 30))
    assert (await tenant.balance("hot"))["available"] == 10
    assert (await tenant.verify())["ok"]


async def test_one_failing_write_does_not_fail_its_batch(app, tenant):
    """Two adjustments with one external_ref race in one batch: the batch's transaction fails on the unique index,
    so every write runs again on its own: one of the two is refused, every other write succeeds once."""
    batcher = app.state.db.writer.batcher
    await tenant.member("iso")
    bodies = [{"member_id": "iso", "points": 1, "reason": "x"} for _ in range(20)]
    bodies[5]["external_ref"] = bodies[12]["external_ref"] = "same-ref"
    fallbacks = batcher.fallbacks
    responses = await asyncio.gather(*[
        tenant.client.post("/v1/adjustments", json=b, headers=tenant.headers(idem=uuid.uuid4().hex)) for b in bodies])
    codes = [r.status_code for r in responses]
    assert sorted(codes) == [201] * 19 + [409], codes
    assert {responses[5].status_code, responses[12].status_code} == {201, 409}
    assert (await tenant.balance("iso"))["available"] == 19
    assert batcher.fallbacks >= fallbacks
    assert (await tenant.verify())["ok"]


async def test_two_processes_batching_criss_cross_never_deadlock(app, settings, tenant, db):
    """Two app instances (two workers, two batchers) write to the same members in every order at once. Each batch
    locks its members sorted, so no transaction ever waits in a cycle: no deadlock is detected and no batch falls
    back."""
    from app.main import create_app

    other = create_app(settings)
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client2:
            tenant2 = type(tenant)(tenant.program_id, tenant.admin_key, client2)
            members = [f"cc-{i}" for i in range(6)]
            for m in members:
                await tenant.member(m)
                assert (await tenant.adjust(m, 100_000)).status_code == 201
            deadlocks = await db.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            batchers = [app.state.db.writer.batcher, other.state.db.writer.batcher]
            fallbacks = [b.fallbacks for b in batchers]
            rng = random.Random(5)

            async def burst(t: Any) -> list[int]:
                order = members[:]
                rng.shuffle(order)
                calls = [_redeem(t, m, 1) if i % 2 else t.adjust(m, 2) for i, m in enumerate(order * 8)]
                return [r.status_code for r in await asyncio.gather(*calls)]

            results = await asyncio.gather(*[burst(t) for t in (tenant, tenant2) for _ in range(4)])
    assert all(code == 201 for codes in results for code in codes)
    await asyncio.sleep(1.2)  # statistics are flushed to shared memory at most once a second
    assert await db.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()") == deadlocks
    assert [b.fallbacks for b in batchers] == fallbacks
    assert (await tenant.verify())["ok"]


async def test_without_group_commit_the_answers_are_the_same(settings, app):
    from app.main import create_app

    plain = create_app(settings.model_copy(update={"group_commit": False}))
    async with plain.router.lifespan_context(plain):
        assert plain.state.db.writer.batcher is None
        transport = httpx.ASGITransport(app=plain)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            tenant = await make_tenant(plain, client)
            await tenant.member("plain")
            assert (await tenant.adjust("plain", 100)).status_code == 201
            responses = await asyncio.gather(*[_redeem(tenant, "plain", 30) for _ in range(5)])
            assert sorted(r.status_code for r in responses) == [201] * 3 + [422] * 2
            assert (await tenant.verify())["ok"]
