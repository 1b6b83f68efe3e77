"""Privacy (erasure keeps the ledger intact), rate limiting per key, CORS closed by default."""

from __future__ import annotations

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




async def test_cors_is_closed_by_default(client):
    r = await client.options("/v1/program", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
    r = await client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
