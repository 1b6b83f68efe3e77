"""Merging members (POST /v1/members/{member_id}/merge) through HTTP, against real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta


def _at(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def _merge(tenant, survivor, other, idem=None, key=None):
    return await tenant.client.post(f"/v1/members/{survivor}/merge", json={"from": other},
                                    headers=tenant.headers(key, idem=idem or uuid.uuid4().hex))


def _purchase(member, order, price="9.00"):
    return {"member_id": member, "order_id": order, "currency": "EUR", "total": price,
            "lines": [{"sku": "LATTE", "category": "drinks", "quantity": 1, "unit_price": price}]}


async def test_a_merge_moves_points_with_their_expiry_and_the_id_becomes_an_alias(tenant):
    r = await tenant.client.patch("/v1/program", json={"settings": {"pending_days": 30}}, headers=tenant.headers())
    assert r.status_code == 200
    r = await tenant.client.put("/v1/program/tiers", json={
        "tiers": [{"name": "Green", "threshold": "0"}, {"name": "Gold", "threshold": "100000"}], "metric": "points",
        "window": {"kind": "rolling_months", "months": 12}, "retention": {"kind": "end_of_next_year"},
        "effective_from": "2020-01-01T00:00:00Z"}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    soon, later = _at(10), _at(100)
    await tenant.member("ada")
    await tenant.member("card-2", name="Ada's second card")
    assert (await tenant.adjust("ada", 100, expires_at=soon)).status_code == 201
    assert (await tenant.adjust("card-2", 50, expires_at=later)).status_code == 201
    bought = await tenant.client.post("/v1/purchases", json=_purchase("card-2", "o-1"),
                                      headers=tenant.headers(idem="p-1"))
    assert bought.status_code == 201 and bought.json()["purchase"]["status"] == "pending"
    pending_until = bought.json()["purchase"]["lot"]["available_at"]
    r = await tenant.client.post("/v1/members/card-2/tier", json={
        "tier": "Gold", "until": "2030-01-01T00:00:00Z", "reason": "vip"}, headers=tenant.headers())
    assert r.status_code == 200, r.text

    r = await _merge(tenant, "ada", "card-2", idem="merge-1")
    assert r.status_code == 201, r.text
    merge = r.json()["merge"]
    assert (merge["member_id"], merge["merged_member_id"]) == ("ada", "card-2")
    assert (merge["available_points"], merge["pending_points"]) == (50, 9)
    assert (merge["tier_before"], merge["tier"]) == (None, "Gold")
    balance = r.json()["balance"]
    assert (balance["member_id"], balance["available"], balance["pending"], balance["tier"]) == ("ada", 150, 9, "Gold")
    # the lots moved with their expiry (and the pending one with its activation time)
    expiring = await tenant.client.get("/v1/members/ada/expiring", params={"within_days": 365},
                                       headers=tenant.headers())
    assert [(x["expires_at"], x["points"]) for x in expiring.json()["data"]] == [(soon, 100), (later, 50)]
    entry = await tenant.client.get(f"/v1/entries/{merge['entry_id']}", headers=tenant.headers())
    assert entry.json()["kind"] == "merge"
    assert sorted((p["account"], p["points"]) for p in entry.json()["postings"]) == [
        ("available", -50), ("available", 50), ("pending", -9), ("pending", 9)]
    # the histories stay readable: the survivor's activity lists the other member's entries too
    activity = await tenant.client.get("/v1/members/ada/activity", headers=tenant.headers())
    kinds = [(e["kind"], e["member_id"]) for e in activity.json()["data"]]
    assert kinds == [("merge", "card-2"), ("earn", "card-2"), ("adjust", "card-2"), ("adjust", "ada")]
    # the merged-away id is an alias: reads and writes on it go to the survivor
    assert await tenant.balance("card-2") == await tenant.balance("ada")
    got = await tenant.client.get("/v1/members/card-2", headers=tenant.headers())
    assert got.status_code == 200 and got.json()["member_id"] == "ada"
    assert (await tenant.adjust("card-2", 7)).json()["balance"]["member_id"] == "ada"
    bought = await tenant.client.post("/v1/purchases", json=_purchase("card-2", "o-2"),
                                      headers=tenant.headers(idem="p-2"))
    assert bought.status_code == 201 and bought.json()["balance"]["member_id"] == "ada"
    r = await tenant.client.put("/v1/members/card-2", json={"email": "ada@example.com"}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["member_id"] == "ada" and r.json()["email"] == "ada@example.com"
    # a return of the merged-away member's purchase claws back from the survivor
    back = await tenant.client.post("/v1/purchases/o-1/returns", json={"return_id": "r-1", "amount": "9.00"},
                                    headers=tenant.headers(idem="ret-1"))
    assert back.status_code == 201, back.text
    assert back.json()["points"] == 9 and back.json()["balance"]["member_id"] == "ada"
    ada = await tenant.balance("ada")
    assert (ada["available"], ada["pending"]) == (157, 9)
    # idempotent: the key replays; another key answers the merge done
    again = await _merge(tenant, "ada", "card-2", idem="merge-1")
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    other = await _merge(tenant, "ada", "card-2")
    assert other.status_code == 200 and other.json()["replayed"] is True and other.json()["merge"] == merge
    assert pending_until  # (the pending lot keeps it: the activation job moves it for the survivor)
    await tenant.settled()
    feed = await tenant.client.get("/v1/changes", params={"types": "member.merged"}, headers=tenant.headers())
    assert [(c["member_id"], c["data"]["merge"]["merged_member_id"]) for c in feed.json()["data"]] == [
        ("ada", "card-2")]
    assert (await tenant.verify())["ok"]


async def test_refusals(tenant, other_tenant):
    await tenant.member("ada")
    await tenant.member("cy")
    await other_tenant.member("zed")
    assert (await tenant.adjust("cy", 100)).status_code == 201
    r = await _merge(tenant, "ada", "ada")
    assert r.status_code == 422 and r.json()["code"] == "same_member"
    r = await _merge(tenant, "ada", "zed")  # another program's member
    assert r.status_code == 404 and r.json()["code"] == "member_not_found" and r.json()["member_id"] == "zed"
    r = await _merge(tenant, "nobody", "cy")
    assert r.status_code == 404 and r.json()["member_id"] == "nobody"
    hold = await tenant.client.post("/v1/holds", json={"member_id": "cy", "points": 40, "reference": "cart-1"},
                                    headers=tenant.headers(idem="h-1"))
    assert hold.status_code == 201, hold.text
    r = await _merge(tenant, "ada", "cy")
    assert r.status_code == 409 and r.json()["code"] == "member_has_open_holds" and r.json()["open_holds"] == 1
    assert (await tenant.balance("cy"))["member_id"] == "cy"
    earner = await tenant.key("earn", "read")
    r = await _merge(tenant, "ada", "cy", key=earner)
    assert r.status_code == 403
    void = await tenant.client.post(f"/v1/holds/{hold.json()['hold']['id']}/void", json={},
                                    headers=tenant.headers(idem="v-1"))
    assert void.status_code == 200, void.text
    r = await _merge(tenant, "ada", "cy")
    assert r.status_code == 201 and r.json()["balance"]["available"] == 100
    r = await _merge(tenant, "cy", "ada")  # cy is ada now
    assert r.status_code == 422 and r.json()["code"] == "same_member"
    assert (await tenant.verify())["ok"]


async def test_a_negative_balance_moves_and_chains_of_merges_resolve(tenant):
    await tenant.member("a")
    await tenant.member("b")
    await tenant.member("c")
    assert (await tenant.adjust("a", 30)).status_code == 201
    assert (await tenant.adjust("b", 20)).status_code == 201
    bought = await tenant.client.post("/v1/purchases", json=_purchase("c", "o-c", "10.00"),
                                      headers=tenant.headers(idem="p-c"))
    assert bought.status_code == 201
    assert (await tenant.client.post("/v1/redemptions", json={"member_id": "c", "points": 10},
                                     headers=tenant.headers(idem="rd"))).status_code == 201
    back = await tenant.client.post("/v1/purchases/o-c/returns", json={"return_id": "r", "amount": "10.00"},
                                    headers=tenant.headers(idem="ret"))
    assert back.status_code == 201 and back.json()["balance"]["available"] == -10
    assert (await _merge(tenant, "b", "c")).status_code == 201
    assert (await tenant.balance("b"))["available"] == 10
    assert (await _merge(tenant, "a", "b")).status_code == 201
    for ref in ("a", "b", "c"):
        assert (await tenant.balance(ref))["member_id"] == "a"
    assert (await tenant.balance("a"))["available"] == 40
    activity = await tenant.client.get("/v1/members/c/activity", params={"limit": 200}, headers=tenant.headers())
    assert {e["member_id"] for e in activity.json()["data"]} == {"a", "b", "c"}
    assert (await tenant.verify())["ok"]


async def test_a_refund_of_the_merged_away_member_s_redemption_reaches_the_survivor(tenant):
    await tenant.member("ada")
    await tenant.member("card-3")
    later = _at(100)
    assert (await tenant.adjust("card-3", 80, expires_at=later)).status_code == 201
    redeemed = await tenant.client.post("/v1/redemptions", json={"member_id": "card-3", "points": 30},
                                        headers=tenant.headers(idem="rd-1"))
    assert redeemed.status_code == 201, redeemed.text
    assert (await _merge(tenant, "ada", "card-3")).status_code == 201
    refund = await tenant.client.post(f"/v1/redemptions/{redeemed.json()['redemption']['id']}/refunds",
                                      json={"points": 30}, headers=tenant.headers(idem="rf-1"))
    assert refund.status_code == 201, refund.text
    assert refund.json()["balance"]["member_id"] == "ada" and refund.json()["balance"]["available"] == 80
    expiring = await tenant.client.get("/v1/members/ada/expiring", params={"within_days": 365},
                                       headers=tenant.headers())
    assert [(x["expires_at"], x["points"]) for x in expiring.json()["data"]] == [(later, 80)]
    assert (await tenant.verify())["ok"]


async def test_writes_racing_a_merge_land_on_the_survivor(tenant):
    """Credits, transfers and merges sent while the member is being merged: none is left behind the alias."""
    import asyncio

    r = await tenant.client.patch("/v1/program", json={"settings": {"transfers_enabled": True}},
                                  headers=tenant.headers())
    assert r.status_code == 200
    for ref in ("ada", "card-4", "bob"):
        await tenant.member(ref)
    assert (await tenant.adjust("bob", 1000)).status_code == 201
    credits = [tenant.adjust("card-4", 1) for _ in range(20)]
    gifts = [tenant.client.post("/v1/transfers", json={"from_member_id": "bob", "to_member_id": "card-4",
                                                        "points": 2}, headers=tenant.headers(idem=uuid.uuid4().hex))
             for _ in range(10)]
    answers = await asyncio.gather(*credits[:10], _merge(tenant, "ada", "card-4"), _merge(tenant, "card-4", "ada"),
                                   *credits[10:], *gifts)
    merges = answers[10:12]
    assert sorted(m.status_code for m in merges) == [201, 422], [m.text for m in merges]
    others = answers[:10] + answers[12:]
    assert all(a.status_code == 201 for a in others), [a.text for a in others if a.status_code != 201]
    survivor = next(m.json()["merge"]["member_id"] for m in merges if m.status_code == 201)
    for ref in ("ada", "card-4"):
        balance = await tenant.balance(ref)
        assert balance["member_id"] == survivor and balance["available"] == 20 + 10 * 2
    assert (await tenant.balance("bob"))["available"] == 1000 - 20
    assert (await tenant.verify())["ok"]


async def test_concurrent_duplicates_of_one_merge_merge_once(tenant):
    """Five retries of one merge (one Idempotency-Key) at once: one merge entry, the points moved once."""
    await tenant.member("dup-s")
    await tenant.member("dup-o")
    assert (await tenant.adjust("dup-o", 40)).status_code == 201
    answers = await asyncio.gather(*(_merge(tenant, "dup-s", "dup-o", idem="one-merge") for _ in range(5)))
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert (await tenant.balance("dup-s"))["available"] == 40
    activity = (await tenant.client.get("/v1/members/dup-s/activity", headers=tenant.headers())).json()["data"]
    assert [e["kind"] for e in activity].count("merge") == 1
    assert (await tenant.verify())["ok"]
