"""Privacy (erasure keeps the ledger intact), rate limiting per key, CORS closed by default."""

from __future__ import annotations

import asyncio

import httpx

from app.config import Settings
from tests.conftest import make_tenant


async def test_erasing_personal_data_keeps_the_ledger(tenant, other_tenant):
    await tenant.member("gdpr", name="Ada", email="ada@example.com", phone="+49 30 1", birthday="1990-01-01",
                        attributes={"newsletter": True})
    await tenant.adjust("gdpr", 75)
    r = await other_tenant.client.delete("/v1/members/gdpr/personal-data", headers=other_tenant.headers())
    assert r.status_code == 404
    reader = await tenant.key("read", "earn")
    r = await tenant.client.delete("/v1/members/gdpr/personal-data", headers=tenant.headers(reader))
    assert r.status_code == 403
    r = await tenant.client.delete("/v1/members/gdpr/personal-data", headers=tenant.headers())
    assert r.status_code == 200, r.text
    member = r.json()
    assert (member["name"], member["email"], member["phone"], member["birthday"], member["attributes"]) == (
        None, None, None, None, {})
    assert (await tenant.balance("gdpr"))["available"] == 75
    assert len((await tenant.client.get("/v1/members/gdpr/activity", headers=tenant.headers())).json()["data"]) == 1
    assert (await tenant.verify())["ok"]
    again = await tenant.client.delete("/v1/members/gdpr/personal-data", headers=tenant.headers())
    assert again.status_code == 200


async def _limited_app(settings: Settings):
    from app.main import create_app

    app = create_app(settings.model_copy(update={"rate_limit_per_second": 1.0, "rate_limit_burst": 3,
                                                 "cors_origins": []}))
    return app


async def test_rate_limit_per_key_answers_429_with_retry_after(settings):
    app = await _limited_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        tenant = await make_tenant(app, client)
        other = await tenant.key("read")
        statuses = [(await client.get("/v1/program", headers=tenant.headers())).status_code for _ in range(6)]
        assert statuses[:2] == [200, 200] and 429 in statuses  # burst 3, one used creating the key
        r = await client.get("/v1/program", headers=tenant.headers())
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["code"] == "rate_limited"
        # another key has its own bucket
        assert (await client.get("/v1/program", headers=tenant.headers(other))).status_code == 200


class CountingPool:
    """The app's real pool, counting the key lookups that reach it (everything is forwarded)."""

    def __init__(self, pool):
        self.pool = pool
        self.lookups = 0

    async def fetchrow(self, query, *args, **kwargs):
        from app.programs.queries import AUTHENTICATE

        if query == AUTHENTICATE:
            self.lookups += 1
        return await self.pool.fetchrow(query, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pool, name)


async def test_failed_key_lookups_are_limited_per_address_and_prefix_without_a_database_lookup(settings):
    """issue 12 F9: every invalid key used to cost a database lookup, without limit. Failed lookups now cost a
    token per client address and per key prefix; with the bucket empty, uncached keys are refused 429 before
    any lookup, while a valid key already cached keeps working and malformed keys never reach the database."""
    from app.main import create_app

    app = create_app(settings.model_copy(update={"auth_failure_rate_per_second": 0.01, "auth_failure_burst": 3,
                                                 "api_key_cache_seconds": 600.0}))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(50):
            if app.state.key_cache.listening:
                break
            await asyncio.sleep(0.05)
        counting = CountingPool(app.state.pool)
        app.state.pool = counting
        tenant = await make_tenant(app, client)
        good = tenant.headers()
        assert (await client.get("/v1/program", headers=good)).status_code == 200  # now cached
        lookups = counting.lookups
        unknown = {"Authorization": "Bearer plk_000000000000_" + "A" * 43}
        statuses = [(await client.get("/v1/program", headers=unknown)).status_code for _ in range(3)]
        assert statuses == [401, 401, 401] and counting.lookups == lookups + 3
        r = await client.get("/v1/program", headers=unknown)
        assert r.status_code == 429 and r.json()["code"] == "authentication_rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        # a well-formed key with another prefix from the same address: refused too, before any lookup
        other = {"Authorization": "Bearer plk_111111111111_" + "B" * 43}
        assert (await client.get("/v1/program", headers=other)).status_code == 429
        assert counting.lookups == lookups + 3
        # malformed keys never cost a lookup (and stay 401)
        assert (await client.get("/v1/program", headers={"Authorization": "Bearer nope"})).status_code == 401
        # the valid key, cached, keeps working from the limited address
        assert (await client.get("/v1/program", headers=good)).status_code == 200
        assert counting.lookups == lookups + 3
        # another address is not held up by this one's failures
        transport_b = httpx.ASGITransport(app=app, client=("198.51.100.9", 1))
        async with httpx.AsyncClient(transport=transport_b, base_url="http://t") as client_b:
            assert (await client_b.get("/v1/program", headers=other)).status_code == 401
            # ...but guesses at one prefix from many addresses empty that prefix's bucket
            wrong = {"Authorization": f"Bearer {tenant.admin_key[:17]}{'x' * 43}"}
            for i in range(3):
                t = httpx.ASGITransport(app=app, client=(f"192.0.2.{i}", 1))
                async with httpx.AsyncClient(transport=t, base_url="http://t") as c:
                    assert (await c.get("/v1/program", headers=wrong)).status_code == 401
            assert (await client_b.get("/v1/program", headers=wrong)).status_code == 429
            assert (await client_b.get("/v1/program", headers=good)).status_code == 200  # cached


def test_failed_auth_buckets_are_bounded():
    from app.api.auth import FailedAuthLimiter

    limiter = FailedAuthLimiter(rate=1.0, burst=1)
    for i in range(FailedAuthLimiter.CAPACITY + 500):
        limiter.failed(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", f"{i:012x}")
    assert len(limiter.addresses) == len(limiter.prefixes) == FailedAuthLimiter.CAPACITY


async def test_cors_is_closed_by_default(client):
    r = await client.options("/v1/program", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
    r = await client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
