"""API keys: authentication, scopes, tenancy (another program's data is 404, never 403)."""

from __future__ import annotations

import uuid

import pytest

MEMBER_ROUTES = [
    ("GET", "/v1/members/{m}", None),
    ("GET", "/v1/members/{m}/balance", None),
    ("GET", "/v1/members/{m}/activity", None),
    ("GET", "/v1/entries/{e}", None),
    ("POST", "/v1/entries/{e}/reverse", {"reason": "x"}),
    ("POST", "/v1/adjustments", {"member_id": "{m}", "points": -1, "reason": "x"}),
]


def _fill(value, m, e):
    if isinstance(value, str):
        return value.replace("{m}", m).replace("{e}", str(e))
    if isinstance(value, dict):
        return {k: _fill(v, m, e) for k, v in value.items()}
    return value


async def test_missing_malformed_and_unknown_keys_are_401(client):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"},
                    {"Authorization": "Bearer plk_000000000000_" + "x" * 43}):
        r = await client.get("/v1/members/x/balance", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["code"] == "unauthorized"


async def test_a_key_with_a_wrong_secret_is_401(tenant):
    prefix = tenant.admin_key[: len("plk_") + 12]
    r = await tenant.client.get("/v1/program", headers={"Authorization": f"Bearer {prefix}_{'A' * 43}"})
    assert r.status_code == 401


async def test_missing_scope_is_403(tenant):
    await tenant.member("s1")
    read_key = await tenant.key("read")
    r = await tenant.client.post("/v1/adjustments", json={"member_id": "s1", "points": 5, "reason": "x"},
                                 headers=tenant.headers(read_key, idem="s"))
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    r = await tenant.client.get("/v1/members/s1/balance", headers=tenant.headers(read_key))
    assert r.status_code == 200
    earn_key = await tenant.key("earn")
    r = await tenant.client.get("/v1/members/s1/balance", headers=tenant.headers(earn_key))
    assert r.status_code == 403
    r = await tenant.client.get("/v1/api-keys", headers=tenant.headers(read_key))
    assert r.status_code == 403


@pytest.mark.parametrize("method, path, body", MEMBER_ROUTES)
async def test_another_programs_resources_are_404(tenant, other_tenant, method, path, body):
    await tenant.member("private")
    entry = (await tenant.adjust("private", 50)).json()["entry"]["id"]
    url = _fill(path, "private", entry)
    r = await other_tenant.client.request(method, url, json=_fill(body, "private", entry),
                                          headers=other_tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 404, (url, r.text)
    assert r.json()["code"] in ("member_not_found", "entry_not_found")
    assert (await tenant.balance("private"))["available"] == 50


async def test_another_programs_api_key_cannot_be_revoked(tenant, other_tenant):
    listing = (await tenant.client.get("/v1/api-keys", headers=tenant.headers())).json()["data"]
    key_id = listing[0]["id"]
    r = await other_tenant.client.delete(f"/v1/api-keys/{key_id}", headers=other_tenant.headers())
    assert r.status_code == 404 and r.json()["code"] == "api_key_not_found"


async def test_keys_are_hashed_at_rest_and_revocation_is_immediate(tenant, db):
    key = await tenant.key("read", "earn")
    rows = await db.fetch("SELECT * FROM api_keys WHERE program_id = $1", tenant.program_id)
    dump = repr([dict(r) for r in rows])
    assert key not in dump and key.split("_", 2)[2] not in dump
    listing = (await tenant.client.get("/v1/api-keys", headers=tenant.headers())).json()["data"]
    assert all("key" not in k for k in listing)
    created = next(k for k in listing if set(k["scopes"]) == {"earn", "read"})
    assert (await tenant.client.get("/v1/program", headers=tenant.headers(key))).status_code == 200
    r = await tenant.client.delete(f"/v1/api-keys/{created['id']}", headers=tenant.headers())
    assert r.status_code == 204
    r = await tenant.client.get("/v1/program", headers=tenant.headers(key))
    assert r.status_code == 401


async def test_api_key_creation_validates_scopes(tenant):
    r = await tenant.client.post("/v1/api-keys", json={"name": "x", "scopes": ["superuser"]},
                                 headers=tenant.headers())
    assert r.status_code == 422
    r = await tenant.client.post("/v1/api-keys", json={"name": "x", "scopes": []}, headers=tenant.headers())
    assert r.status_code == 422


async def test_program_endpoint_shows_only_the_callers_program(tenant):
    r = await tenant.client.get("/v1/program", headers=tenant.headers())
    assert r.status_code == 200
    assert r.json()["id"] == str(tenant.program_id)
    assert r.json()["currency"] == "EUR"


async def test_every_v1_route_requires_a_key(app, client):
    """Generated from the route table, so new routes are covered automatically."""
    routes = [(p, m) for p, ops in app.openapi()["paths"].items() if p.startswith("/v1/") for m in ops]
    assert len(routes) >= 10
    for route_path, method in routes:
        path = (route_path.replace("{member_id}", "m").replace("{entry_id}", "1")
                .replace("{key_id}", str(uuid.uuid4())))
        r = await client.request(method.upper(), path, json={})
        assert r.status_code == 401, (method, path, r.status_code)


async def test_revocation_and_settings_reach_every_process_at_once(settings, tenant):
    """Two app instances (two workers) share the database; each caches keys. Revoking through one
    refuses the key in the other at once, and a settings change is seen at once."""
    import asyncio

    import httpx

    from app.main import create_app

    other_app = create_app(settings.model_copy(update={"api_key_cache_seconds": 600.0}))
    transport = httpx.ASGITransport(app=other_app)
    async with other_app.router.lifespan_context(other_app), httpx.AsyncClient(transport=transport,
                                                                                base_url="http://b") as b:
        for _ in range(50):
            if other_app.state.key_cache.listening:
                break
            await asyncio.sleep(0.05)
        assert other_app.state.key_cache.listening
        key = await tenant.key("read")
        assert (await b.get("/v1/program", headers=tenant.headers(key))).status_code == 200  # now cached in B
        await tenant.client.patch("/v1/program", json={"settings": {"redeem_increment": 7}},
                                  headers=tenant.headers())
        listing = (await tenant.client.get("/v1/api-keys", headers=tenant.headers())).json()["data"]
        key_id = next(k["id"] for k in listing if k["scopes"] == ["read"])
        assert (await tenant.client.delete(f"/v1/api-keys/{key_id}", headers=tenant.headers())).status_code == 204
        status = 200
        for _ in range(40):
            status = (await b.get("/v1/program", headers=tenant.headers(key))).status_code
            if status == 401:
                break
            await asyncio.sleep(0.05)
        assert status == 401
        admin = await b.get("/v1/program", headers=tenant.headers())
        assert admin.json()["settings"]["redeem_increment"] == 7


async def test_the_last_admin_key_cannot_be_revoked_but_one_of_two_can(tenant):
    listing = (await tenant.client.get("/v1/api-keys", headers=tenant.headers())).json()["data"]
    [first] = [k["id"] for k in listing]
    r = await tenant.client.delete(f"/v1/api-keys/{first}", headers=tenant.headers())
    assert r.status_code == 409 and r.json()["code"] == "last_admin_key", r.text
    assert (await tenant.client.get("/v1/program", headers=tenant.headers())).status_code == 200
    # a key without admin does not count; a second admin key does
    await tenant.key("read", "earn", "redeem")
    assert (await tenant.client.delete(f"/v1/api-keys/{first}", headers=tenant.headers())).status_code == 409
    second = await tenant.key("admin")
    r = await tenant.client.delete(f"/v1/api-keys/{first}", headers=tenant.headers(second))
    assert r.status_code == 204
    listing = (await tenant.client.get("/v1/api-keys", headers=tenant.headers(second))).json()["data"]
    second_id = next(k["id"] for k in listing if k["revoked_at"] is None and k["scopes"] == ["admin"])
    r = await tenant.client.delete(f"/v1/api-keys/{second_id}", headers=tenant.headers(second))
    assert r.status_code == 409 and r.json()["code"] == "last_admin_key"


async def test_two_admin_keys_revoked_at_once_leave_one(tenant, db):
    """Two admins revoke each other's key at the same moment: exactly one succeeds."""
    import asyncio

    second = await tenant.key("admin")
    listing = (await tenant.client.get("/v1/api-keys", headers=tenant.headers())).json()["data"]
    ids = sorted(k["id"] for k in listing)
    results = await asyncio.gather(*(
        tenant.client.delete(f"/v1/api-keys/{key_id}", headers=tenant.headers(key))
        for key_id, key in zip(ids, (second, tenant.admin_key), strict=True)
    ))
    assert sorted(r.status_code for r in results) in ([204, 401], [204, 409]), [r.text for r in results]
    active = await db.fetchval("SELECT count(*) FROM api_keys WHERE program_id = $1 AND revoked_at IS NULL",
                               tenant.program_id)
    assert active == 1


async def test_a_lookup_in_flight_during_a_revocation_never_caches_the_key(settings, tenant):
    """issue 12 F1: process B looks a key up (the key is still valid in its snapshot), the revocation commits and
    B handles its notification, then B's lookup answers. B used to cache that stale answer for the whole TTL; it
    now sees that an invalidation happened meanwhile and does not cache it."""
    import asyncio

    import httpx

    from app.main import create_app
    from app.programs.queries import AUTHENTICATE

    other_app = create_app(settings.model_copy(update={"api_key_cache_seconds": 600.0}))
    transport = httpx.ASGITransport(app=other_app)
    async with other_app.router.lifespan_context(other_app), httpx.AsyncClient(transport=transport,
                                                                                base_url="http://b") as b:
        for _ in range(100):
            if other_app.state.key_cache.listening:
                break
            await asyncio.sleep(0.05)
        assert other_app.state.key_cache.listening
        key = await tenant.key("read")
        listing = (await tenant.client.get("/v1/api-keys", headers=tenant.headers())).json()["data"]
        key_id = next(k["id"] for k in listing if k["scopes"] == ["read"])
        real_pool = other_app.state.pool
        looked_up, release = asyncio.Event(), asyncio.Event()

        class HeldLookups:
            """B's real pool; a key lookup's answer is handed back only when the test says so."""

            async def fetchrow(self, query, *args, **kwargs):
                row = await real_pool.fetchrow(query, *args, **kwargs)
                if query == AUTHENTICATE:
                    looked_up.set()
                    await release.wait()
                return row

            def __getattr__(self, name):
                return getattr(real_pool, name)

        other_app.state.pool = HeldLookups()
        in_flight = asyncio.create_task(b.get("/v1/program", headers=tenant.headers(key)))
        await looked_up.wait()  # B has read the key, not yet revoked
        r = await tenant.client.delete(f"/v1/api-keys/{key_id}", headers=tenant.headers())
        assert r.status_code == 204
        await asyncio.sleep(0.3)  # B's listener has handled the notification (it acknowledged before the 204)
        release.set()
        assert (await in_flight).status_code == 200  # it was asked before the revocation
        other_app.state.pool = real_pool
        assert (await b.get("/v1/program", headers=tenant.headers(key))).status_code == 401
