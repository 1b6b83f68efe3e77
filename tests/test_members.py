"""Member upsert and read."""

from __future__ import annotations


async def test_put_creates_then_updates_only_given_fields(tenant):
    r = await tenant.client.put("/v1/members/cust-9", json={"name": "Ada", "email": "ada@example.com",
                                                            "birthday": "1990-05-01",
                                                            "attributes": {"store": "berlin-1"}},
                                headers=tenant.headers())
    assert r.status_code == 201
    assert r.json()["status"] == "active"
    r = await tenant.client.put("/v1/members/cust-9", json={"phone": "+49 30 1234"}, headers=tenant.headers())
    assert r.status_code == 200
    member = r.json()
    assert member["name"] == "Ada" and member["phone"] == "+49 30 1234"
    assert member["attributes"] == {"store": "berlin-1"}
    r = await tenant.client.put("/v1/members/cust-9", json={"name": None, "status": "suspended"},
                                headers=tenant.headers())
    assert r.json()["name"] is None and r.json()["status"] == "suspended"
    got = await tenant.client.get("/v1/members/cust-9", headers=tenant.headers())
    assert got.status_code == 200 and got.json() == r.json()
    assert (await tenant.balance("cust-9"))["available"] == 0


async def test_invalid_member_fields_are_422(tenant, db):
    for body in ({"email": "nope"}, {"birthday": "1990-13-01"}, {"status": "gone"}, {"attributes": "x"},
                 {"name": "x" * 201}, {"surprise": True}):
        r = await tenant.client.put("/v1/members/bad", json=body, headers=tenant.headers())
        assert r.status_code == 422, body
        assert r.json()["code"] == "validation_error"
    assert await db.fetchval("SELECT count(*) FROM members WHERE program_id = $1", tenant.program_id) == 0


async def test_member_ids_are_per_program(tenant, other_tenant):
    await tenant.member("same", name="A")
    await other_tenant.member("same", name="B")
    a = (await tenant.client.get("/v1/members/same", headers=tenant.headers())).json()
    b = (await other_tenant.client.get("/v1/members/same", headers=other_tenant.headers())).json()
    assert (a["name"], b["name"]) == ("A", "B")
