"""Member activity: newest first, cursor pagination stable under concurrent inserts."""

from __future__ import annotations

import asyncio


async def _page(tenant, member, cursor=None, limit=10):
    params = {"limit": limit}
    if cursor:
        params["cursor"] = cursor
    r = await tenant.client.get(f"/v1/members/{member}/activity", params=params, headers=tenant.headers())
    assert r.status_code == 200, r.text
    return r.json()


async def test_pages_are_newest_first_and_stable_under_concurrent_inserts(tenant):
    await tenant.member("act")
    for i in range(25):
        await tenant.adjust("act", i + 1)
    seen: list[int] = []
    page = await _page(tenant, "act")
    seen += [e["id"] for e in page["data"]]
    while page["next_cursor"]:
        # writes land while the client pages: they are newer, so they never shift older pages
        await asyncio.gather(*[tenant.adjust("act", 1) for _ in range(3)])
        page = await _page(tenant, "act", page["next_cursor"])
        seen += [e["id"] for e in page["data"]]
    assert len(seen) == 25 and len(set(seen)) == 25
    assert seen == sorted(seen, reverse=True)
    first = (await _page(tenant, "act", limit=1))["data"][0]
    assert first["id"] > seen[0]


async def test_empty_history_and_errors(tenant):
    await tenant.member("quiet")
    page = await _page(tenant, "quiet")
    assert page == {"data": [], "next_cursor": None}
    r = await tenant.client.get("/v1/members/nobody/activity", headers=tenant.headers())
    assert r.status_code == 404 and r.json()["code"] == "member_not_found"
    r = await tenant.client.get("/v1/members/quiet/activity", params={"cursor": "!!garbage"},
                                headers=tenant.headers())
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    r = await tenant.client.get("/v1/members/quiet/activity", params={"limit": 0}, headers=tenant.headers())
    assert r.status_code == 422
