"""Member activity: newest first, cursor pagination stable under concurrent inserts."""

from __future__ import annotations

import asyncio
import re


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
        await tenant.adjust("act", i + 1)  # the n-th entry credits n points: the order is visible in the points
    seen: list[dict] = []
    page = await _page(tenant, "act")
    seen += page["data"]
    while page["next_cursor"]:
        # writes land while the client pages (1000 points each): they are newer, so they never shift older pages
        await asyncio.gather(*[tenant.adjust("act", 1000) for _ in range(3)])
        page = await _page(tenant, "act", page["next_cursor"])
        seen += page["data"]
    assert len({e["id"] for e in seen}) == 25
    assert [e["postings"][0]["points"] for e in seen] == list(range(25, 0, -1))
    assert [e["recorded_at"] for e in seen] == sorted((e["recorded_at"] for e in seen), reverse=True)
    first = (await _page(tenant, "act", limit=1))["data"][0]
    assert first["postings"][0]["points"] == 1000 and first["id"] not in {e["id"] for e in seen}


async def test_ids_are_opaque_and_reveal_no_count(tenant):
    """Entry, hold and redemption ids are keyed permutations of the row ids: consecutive writes get unrelated
    ids, so one program cannot read another's volume from them (issue 12, F9)."""
    await tenant.member("opaque")
    ids = [(await tenant.adjust("opaque", 5)).json()["entry"]["id"] for _ in range(5)]
    assert all(re.fullmatch(r"ent_[0-9a-f]{16}", i) for i in ids) and len(set(ids)) == 5
    numbers = [int(i[4:], 16) for i in ids]
    assert sorted(numbers) != numbers or sorted(numbers, reverse=True) != numbers or len(set(numbers)) < 5
    gaps = {b - a for a, b in zip(numbers, numbers[1:], strict=False)}
    assert len(gaps) == 4 and all(abs(g) > 1000 for g in gaps)  # nothing like a counter
    for public in ids:
        r = await tenant.client.get(f"/v1/entries/{public}", headers=tenant.headers())
        assert r.status_code == 200 and r.json()["id"] == public
    for unknown in ("ent_0000000000000001", "1", "hold_" + ids[0][4:], ids[0].upper()):
        r = await tenant.client.get(f"/v1/entries/{unknown}", headers=tenant.headers())
        assert r.status_code == 404 and r.json()["code"] == "entry_not_found"


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
