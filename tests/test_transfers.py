"""Transfers between members (POST /v1/transfers) through HTTP, against real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta


async def _enable(tenant, **settings):
    r = await tenant.client.patch("/v1/program", json={"settings": {"transfers_enabled": True, **settings}},
                                  headers=tenant.headers())
    assert r.status_code == 200, r.text


async def _transfer(tenant, sender, receiver, points, idem=None, key=None, **extra):
    return await tenant.client.post("/v1/transfers", json={
        "from_member_id": sender, "to_member_id": receiver, "points": points, **extra},
        headers=tenant.headers(key, idem=idem or uuid.uuid4().hex))


def _at(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def test_transfers_are_off_by_default(tenant):
    await tenant.member("ada")
    await tenant.member("bob")
    assert (await tenant.adjust("ada", 100)).status_code == 201
    r = await _transfer(tenant, "ada", "bob", 10)
    assert r.status_code == 409 and r.json()["code"] == "transfers_disabled"
    assert (await tenant.balance("ada"))["available"] == 100
    program = await tenant.client.get("/v1/program", headers=tenant.headers())
    assert program.json()["settings"]["transfers_enabled"] is False


async def test_a_transfer_moves_lots_soonest_expiring_first_keeping_their_expiry(tenant, db):
    await _enable(tenant)
    await tenant.member("ada")
    await tenant.member("bob")
    soon, later = _at(10), _at(100)
    assert (await tenant.adjust("ada", 30, expires_at=later)).status_code == 201
    assert (await tenant.adjust("ada", 20, expires_at=soon)).status_code == 201
    assert (await tenant.adjust("bob", 5)).status_code == 201  # never expires
    r = await _transfer(tenant, "ada", "bob", 25, idem="gift-1", reference="birthday", description="Happy birthday")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["transfer"]["from_member_id"] == "ada" and body["transfer"]["to_member_id"] == "bob"
    assert body["transfer"]["points"] == 25 and body["transfer"]["reference"] == "birthday"
    assert body["transfer"]["id"].startswith("trf_") and body["entry"]["kind"] == "transfer"
    assert body["entry"]["id"] == body["transfer"]["entry_id"]
    assert sorted(p["points"] for p in body["entry"]["postings"]) == [-25, 25]
    assert body["from_balance"]["available"] == 25 and body["to_balance"]["available"] == 30
    # ada's soonest lot (20, in 10 days) went first, then 5 of the later one; bob's points keep those dates
    expiring = await tenant.client.get("/v1/members/bob/expiring", params={"within_days": 365},
                                       headers=tenant.headers())
    assert expiring.status_code == 200, expiring.text
    assert [(x["expires_at"], x["points"]) for x in expiring.json()["data"]] == [(soon, 20), (later, 5)]
    ada_expiring = await tenant.client.get("/v1/members/ada/expiring", params={"within_days": 365},
                                           headers=tenant.headers())
    assert [(x["expires_at"], x["points"]) for x in ada_expiring.json()["data"]] == [(later, 25)]
    # one entry, in both members' activity
    for member in ("ada", "bob"):
        activity = await tenant.client.get(f"/v1/members/{member}/activity", headers=tenant.headers())
        assert activity.json()["data"][0]["id"] == body["entry"]["id"]
        # and in the activity as of an instant after it (the same listing, restricted by recorded time)
        recorded = await db.fetchval("SELECT recorded_at FROM entries WHERE id = ledger.row_id('ent', $1)",
                                     body["entry"]["id"])
        for as_of, listed in ((recorded, True), (recorded - timedelta(microseconds=1), False)):
            r = await tenant.client.get(f"/v1/members/{member}/activity",
                                        params={"as_of": as_of.isoformat()}, headers=tenant.headers())
            assert r.status_code == 200, r.text
            assert (body["entry"]["id"] in [e["id"] for e in r.json()["data"]]) is listed, (member, as_of)
    # idempotent: the same key replays; the balances do not move again
    again = await _transfer(tenant, "ada", "bob", 25, idem="gift-1", reference="birthday",
                            description="Happy birthday")
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == body
    assert (await tenant.balance("ada"))["available"] == 25 and (await tenant.balance("bob"))["available"] == 30
    # both members hear of it
    await tenant.settled()
    feed = await tenant.client.get("/v1/changes", params={"types": "points.transferred_out,points.transferred_in"},
                                   headers=tenant.headers())
    assert [(c["type"], c["member_id"], c["data"]["transfer"]["points"]) for c in feed.json()["data"]] == [
        ("points.transferred_out", "ada", 25), ("points.transferred_in", "bob", 25)]
    assert feed.json()["data"][1]["data"]["balance"]["available"] == 30
    assert (await tenant.verify())["ok"]


async def test_refusals(tenant, other_tenant):
    await _enable(tenant, transfer_min_points=10, transfer_max_points=100, transfer_daily_limit_points=150)
    await tenant.member("ada")
    await tenant.member("bob")
    await other_tenant.member("cy")
    assert (await tenant.adjust("ada", 500)).status_code == 201
    r = await _transfer(tenant, "ada", "bob", 5)
    assert r.status_code == 422 and r.json()["code"] == "transfer_amount_invalid"
    assert (r.json()["min_points"], r.json()["max_points"]) == (10, 100)
    r = await _transfer(tenant, "ada", "bob", 101)
    assert r.status_code == 422 and r.json()["code"] == "transfer_amount_invalid"
    r = await _transfer(tenant, "ada", "ada", 50)
    assert r.status_code == 422 and r.json()["code"] == "same_member"
    r = await _transfer(tenant, "ada", "cy", 50)  # another program's member
    assert r.status_code == 404 and r.json()["code"] == "member_not_found" and r.json()["member_id"] == "cy"
    r = await _transfer(other_tenant, "cy", "ada", 50)
    assert r.status_code == 409 and r.json()["code"] == "transfers_disabled"
    r = await _transfer(tenant, "bob", "ada", 50)
    assert r.status_code == 422 and r.json()["code"] == "insufficient_points" and r.json()["available"] == 0
    # the daily limit: 100 + 50 today, then nothing more
    assert (await _transfer(tenant, "ada", "bob", 100)).status_code == 201
    assert (await _transfer(tenant, "ada", "bob", 50)).status_code == 201
    r = await _transfer(tenant, "ada", "bob", 10)
    assert r.status_code == 422 and r.json()["code"] == "transfer_limit_reached"
    assert (r.json()["daily_limit"], r.json()["sent_today"], r.json()["remaining"]) == (150, 150, 0)
    # bob's own limit is his own
    assert (await _transfer(tenant, "bob", "ada", 100)).status_code == 201
    reader = await tenant.key("read")
    r = await _transfer(tenant, "ada", "bob", 10, key=reader)
    assert r.status_code == 403
    r = await tenant.client.patch("/v1/program", json={"settings": {"transfer_min_points": 0}},
                                  headers=tenant.headers())
    assert r.status_code == 422
    assert (await tenant.balance("ada"))["available"] == 450 and (await tenant.balance("bob"))["available"] == 50
    assert (await tenant.verify())["ok"]


async def test_criss_cross_transfers_never_deadlock(tenant):
    """100 transfers A->B and B->A at once: both members are locked in the one service-wide order."""
    await _enable(tenant)
    await tenant.member("a-member")
    await tenant.member("b-member")
    assert (await tenant.adjust("a-member", 1000)).status_code == 201
    assert (await tenant.adjust("b-member", 1000)).status_code == 201
    pairs = [("a-member", "b-member", 3) if i % 2 else ("b-member", "a-member", 5) for i in range(100)]
    answers = await asyncio.gather(*(_transfer(tenant, s, r, n) for s, r, n in pairs))
    codes = [a.status_code for a in answers]
    assert all(c == 201 or (c == 409 and a.json()["code"] == "member_busy") for c, a in zip(codes, answers,
                                                                                           strict=True)), codes
    assert codes.count(201) >= 90, codes  # a busy member (lock wait past the timeout) may refuse some; none deadlock
    moved = sum(n if s == "b-member" else -n for (s, _, n), c in zip(pairs, codes, strict=True) if c == 201)
    a, b = await tenant.balance("a-member"), await tenant.balance("b-member")
    assert a["available"] == 1000 + moved and b["available"] == 1000 - moved
    assert (await tenant.verify())["ok"]


async def test_concurrent_duplicates_of_one_transfer_move_the_points_once(tenant):
    """Ten retries of one transfer (one Idempotency-Key) at once: one transfer, the others replay its answer."""
    await _enable(tenant)
    await tenant.member("dup-a")
    await tenant.member("dup-b")
    assert (await tenant.adjust("dup-a", 100)).status_code == 201
    answers = await asyncio.gather(*(_transfer(tenant, "dup-a", "dup-b", 30, idem="one-gift") for _ in range(10)))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    assert len({a.content for a in answers}) == 1  # byte for byte the first answer
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 9
    assert (await tenant.balance("dup-a"))["available"] == 70 and (await tenant.balance("dup-b"))["available"] == 30
    assert (await tenant.verify())["ok"]
