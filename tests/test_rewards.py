"""Rewards through HTTP against real Postgres: the catalogue, browsing, exchanges, vouchers, partner codes, the
books. Concurrency: stock, per-member limits, redeems and partner codes hold under load."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import Tenant

GOLD_LADDER = {
    "tiers": [{"name": "Green", "threshold": "0"}, {"name": "Gold", "threshold": "300"},
              {"name": "Platinum", "threshold": "1000"}],
    "window": {"kind": "rolling_months", "months": 12}, "retention": {"kind": "end_of_next_year"},
}


async def _reward(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    body = {"name": "Free coffee", "kind": "product", "sku": "COFFEE", "cost_points": 150, **fields}
    r = await tenant.client.post("/v1/rewards", json=body, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _exchange(tenant: Tenant, reward_id: str, member: str, key: str | None = None, idem: str | None = None,
                    **extra: Any) -> httpx.Response:
    return await tenant.client.post(f"/v1/rewards/{reward_id}/exchanges", json={"member_id": member, **extra},
                                    headers=tenant.headers(key, idem=idem or uuid.uuid4().hex))


async def _post(tenant: Tenant, path: str, body: Any = None, key: str | None = None,
                idem: str | None = None) -> httpx.Response:
    return await tenant.client.post(path, json=body, headers=tenant.headers(key, idem=idem or uuid.uuid4().hex))


async def _funded(tenant: Tenant, member: str, *lots: tuple[int, str | None]) -> None:
    await tenant.member(member)
    for points, expires in lots:
        r = await tenant.adjust(member, points, expires_at=expires)
        assert r.status_code == 201, r.text


async def _entries(db: Any, tenant: Tenant) -> int:
    return int(await db.fetchval("SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id))


async def _changes(db: Any, tenant: Tenant, *types: str) -> list[tuple[str, Any]]:
    rows = await db.fetch("SELECT type, data FROM changes WHERE program_id = $1 AND type = ANY ($2) ORDER BY id",
                          tenant.program_id, list(types))
    return [(r["type"], r["data"]) for r in rows]


def _purchase(member: str, order: str, *codes: str, total: str = "10.00", sku: str = "X",
              channel: str = "pos") -> dict[str, Any]:
    return {"member_id": member, "order_id": order, "currency": "EUR", "total": total, "channel": channel,
            "lines": [{"sku": sku, "quantity": 1, "unit_price": total}], "voucher_codes": list(codes)}


# --- the catalogue ---------------------------------------------------------------------------------------------


async def test_the_four_kinds_and_their_fields(tenant):
    await tenant.client.put("/v1/program/tiers", json=GOLD_LADDER, headers=tenant.headers())
    until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    voucher = await _reward(tenant, name="5.00 EUR off", kind="voucher", sku=None, amount_off="5", min_spend="20.0",
                            cost_points=500, stock=100, low_stock_threshold=10, limit={"count": 1, "period": "day"},
                            available_until=until, min_tier="Gold", channels=["pos", "online"],
                            voucher_valid_days=30, cancel_window_hours=24, refund_on_expiry=True,
                            metadata={"image": "https://cdn.example/5off.png"}, description="On any order")
    assert (voucher["kind"], voucher["amount_off"], voucher["min_spend"], voucher["currency"]) == (
        "voucher", "5.00", "20.00", "EUR")  # money in the currency's minor units
    assert voucher["limit"] == {"count": 1, "period": "day"} and voucher["min_tier"] == "Gold"
    assert voucher["channels"] == ["pos", "online"] and voucher["stock"] == 100 and voucher["status"] == "active"
    percent = await _reward(tenant, name="10% off", kind="voucher", sku=None, percent_off="10.50", cost_points=800)
    assert (percent["percent_off"], percent["amount_off"], percent["currency"]) == ("10.5", None, None)
    product = await _reward(tenant)
    assert product["sku"] == "COFFEE" and product["stock"] is None and product["channels"] == ["pos", "online", "app"]
    gift = await _reward(tenant, name="Tote bag", kind="gift", sku=None, cost_points=2000, stock=50)
    partner = await _reward(tenant, name="Cinema ticket", kind="partner_code", sku=None, cost_points=1200)
    assert partner["stock"] == 0  # until codes are uploaded
    got = await tenant.client.get(f"/v1/rewards/{voucher['id']}", headers=tenant.headers(await tenant.key("read")))
    assert got.status_code == 200 and got.json() == voucher
    listed = await tenant.client.get("/v1/rewards", headers=tenant.headers())
    assert [r["id"] for r in listed.json()["data"]] == [r["id"] for r in (voucher, percent, product, gift, partner)]
    assert listed.json()["next_cursor"] is None


async def test_pages_patch_and_archive(tenant, db):
    rewards = [await _reward(tenant, name=f"r{i}") for i in range(5)]
    page = (await tenant.client.get("/v1/rewards?limit=2", headers=tenant.headers())).json()
    assert [r["name"] for r in page["data"]] == ["r0", "r1"] and page["next_cursor"] == rewards[1]["id"]
    page = (await tenant.client.get(f"/v1/rewards?limit=3&cursor={page['next_cursor']}",
                                    headers=tenant.headers())).json()
    assert [r["name"] for r in page["data"]] == ["r2", "r3", "r4"] and page["next_cursor"] is None
    bad = await tenant.client.get("/v1/rewards?cursor=nope", headers=tenant.headers())
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"

    rid = rewards[0]["id"]
    r = await tenant.client.patch(f"/v1/rewards/{rid}", json={"name": "Big coffee", "stock": 3, "cost_points": 200},
                                  headers=tenant.headers())
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["stock"], r.json()["cost_points"], r.json()["sku"]) == (
        "Big coffee", 3, 200, "COFFEE")
    r = await tenant.client.patch(f"/v1/rewards/{rid}", json={"stock": None, "description": "hot"},
                                  headers=tenant.headers())
    assert (r.json()["stock"], r.json()["description"]) == (None, "hot")  # null clears: unlimited
    for patch in ({"kind": "gift"}, {"sku": None}, {"amount_off": "1.00"}, {"cost_points": -5}, {"stock": 0}):
        r = await tenant.client.patch(f"/v1/rewards/{rid}", json=patch, headers=tenant.headers())
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (patch, r.text)
    assert (await tenant.client.get(f"/v1/rewards/{rid}", headers=tenant.headers())).json()["name"] == "Big coffee"

    archived = await _post(tenant, f"/v1/rewards/{rid}/archive")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    again = await _post(tenant, f"/v1/rewards/{rid}/archive")
    assert again.json() == archived.json()  # idempotent
    active = (await tenant.client.get("/v1/rewards", headers=tenant.headers())).json()["data"]
    assert rid not in [x["id"] for x in active]
    gone = (await tenant.client.get("/v1/rewards?status=archived", headers=tenant.headers())).json()["data"]
    assert [x["id"] for x in gone] == [rid]
    assert len((await tenant.client.get("/v1/rewards?status=all", headers=tenant.headers())).json()["data"]) == 5
    assert await db.fetchval("SELECT count(*) FROM rewards WHERE program_id = $1", tenant.program_id) == 5


async def test_bad_input_is_refused_and_changes_nothing(tenant, db):
    await _funded(tenant, "bad", (1000, None))
    base = {"name": "x", "kind": "product", "sku": "A", "cost_points": 10}
    for body in ({**base, "cost_points": -5}, {**base, "cost_points": 0}, {**base, "stock": 0},
                 {**base, "stock": -1}, {**base, "kind": "voucher", "sku": None},
                 {**base, "kind": "voucher", "sku": None, "amount_off": "1.00", "percent_off": "5"},
                 {**base, "sku": None}, {**base, "kind": "gift", "amount_off": "1.00"},
                 {**base, "kind": "partner_code", "sku": None, "stock": 5}, {**base, "kind": "coupon"},
                 {**base, "kind": "voucher", "sku": None, "amount_off": 5},  # a JSON number for money
                 {**base, "kind": "voucher", "sku": None, "amount_off": "5.001"},  # more decimals than EUR has
                 {**base, "kind": "voucher", "sku": None, "percent_off": "101"},
                 {**base, "available_from": "2030-01-02T00:00:00Z", "available_until": "2030-01-01T00:00:00Z"},
                 {**base, "min_tier": "Gold"},  # no ladder
                 {**base, "channels": []}, {**base, "channels": ["pos", "pos"]}, {**base, "channels": ["fax"]},
                 {**base, "limit": {"count": 0, "period": "day"}}, {**base, "limit": {"count": 1, "period": "week"}},
                 {**base, "cost_points": True}, {**base, "unknown": 1}):
        r = await tenant.client.post("/v1/rewards", json=body, headers=tenant.headers())
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (body, r.text)
    r = await tenant.client.post("/v1/rewards", json={**base, "kind": "voucher", "sku": None, "amount_off": 5},
                                 headers=tenant.headers())
    assert r.json()["errors"][0]["type"] == "decimal_string"
    assert await db.fetchval("SELECT count(*) FROM rewards WHERE program_id = $1", tenant.program_id) == 0

    before = await _entries(db, tenant)
    unknown = "rwd_0123456789abcdef"
    for r in (await tenant.client.get(f"/v1/rewards/{unknown}", headers=tenant.headers()),
              await tenant.client.get("/v1/rewards/not-an-id", headers=tenant.headers()),
              await tenant.client.patch(f"/v1/rewards/{unknown}", json={"name": "y"}, headers=tenant.headers()),
              await _post(tenant, f"/v1/rewards/{unknown}/archive"),
              await _post(tenant, f"/v1/rewards/{unknown}/codes", {"codes": ["A"]}),
              await _exchange(tenant, unknown, "bad")):
        assert r.status_code == 404 and r.json()["code"] == "reward_not_found", r.text
    archived = await _reward(tenant)
    await _post(tenant, f"/v1/rewards/{archived['id']}/archive")
    r = await _exchange(tenant, archived["id"], "bad")
    assert r.status_code == 409 and r.json()["code"] == "reward_unavailable"
    live = await _reward(tenant)
    r = await _exchange(tenant, live["id"], "bad", delivery={"name": "A", "address_lines": ["B"], "city": "C",
                                                             "country": "DE"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"  # delivery: gifts only
    r = await _exchange(tenant, live["id"], "nobody")
    assert r.status_code == 404 and r.json()["code"] == "member_not_found"
    r = await tenant.client.post(f"/v1/rewards/{live['id']}/exchanges", json={"member_id": "bad"},
                                 headers=tenant.headers())
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_missing"
    for code in ("K7QM-3XDP-W9T", "K7QM-3XDP-W9TO", "K7QM-3XDP-W9T1", "ǅ7QM-3XDP-W9TF", "K7QM-3XDP-W9TF-2"):
        for r in (await tenant.client.get(f"/v1/vouchers/{code}", headers=tenant.headers()),
                  await _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": "o"}),
                  await _post(tenant, f"/v1/vouchers/{code}/cancel")):
            assert r.status_code == 422 and r.json()["code"] == "validation_error", (code, r.text)
    r = await _post(tenant, "/v1/purchases", _purchase("bad", "bad-1", "not-a-code"))
    assert r.status_code == 422 and r.json()["errors"][0]["type"] == "voucher_code"
    r = await _post(tenant, "/v1/purchases", _purchase("bad", "bad-1", "K7QM3XDPW9TF", "k7qm-3xdp-w9tf"))
    assert r.status_code == 422  # the same voucher twice
    assert await _entries(db, tenant) == before
    assert await db.fetchval("SELECT count(*) FROM vouchers WHERE program_id = $1", tenant.program_id) == 0
    assert (await tenant.verify())["ok"]


# --- browsing and exchanging ----------------------------------------------------------------------------------


async def test_walkthrough_coffee_five_euros_off_and_gold_only(tenant):
    """The README's walkthrough: a free coffee for 150 points, 5.00 EUR off for 500, a Gold-only reward."""
    assert (await tenant.client.put("/v1/program/tiers", json=GOLD_LADDER, headers=tenant.headers())).status_code == 201
    app_key = await tenant.key("read", "redeem")
    coffee = await _reward(tenant)
    five_off = await _reward(tenant, name="5.00 EUR off", kind="voucher", sku=None, amount_off="5.00",
                             min_spend="20.00", cost_points=500, voucher_valid_days=90)
    lounge = await _reward(tenant, name="Gold lounge pass", kind="gift", sku=None, cost_points=300, min_tier="Gold",
                           stock=20)
    await _funded(tenant, "ada", (600, None))

    listed = await tenant.client.get("/v1/rewards?member_id=ada", headers=tenant.headers(app_key))
    assert listed.status_code == 200, listed.text
    view = {r["name"]: r["for_member"] for r in listed.json()["data"]}
    assert view["Free coffee"] == {"member_id": "ada", "available_points": 600, "affordable": True,
                                   "missing_points": 0, "eligible": True, "can_exchange": True, "reasons": []}
    assert view["5.00 EUR off"]["can_exchange"] and view["5.00 EUR off"]["affordable"]
    assert view["Gold lounge pass"]["affordable"] and not view["Gold lounge pass"]["eligible"]
    assert [r["code"] for r in view["Gold lounge pass"]["reasons"]] == ["not_eligible"]

    voucher = await _exchange(tenant, five_off["id"], "ada", key=app_key)
    assert voucher.status_code == 201, voucher.text
    body = voucher.json()
    assert body["balance"]["available"] == 100 and body["voucher"]["amount_off"] == "5.00"
    assert body["voucher"]["status"] == "issued" and body["voucher"]["expires_at"] is not None
    one = await tenant.client.get(f"/v1/rewards/{coffee['id']}?member_id=ada", headers=tenant.headers(app_key))
    assert one.json()["for_member"]["affordable"] is False and one.json()["for_member"]["missing_points"] == 50
    assert one.json()["for_member"]["reasons"][0]["code"] == "insufficient_points"

    refused = await _exchange(tenant, lounge["id"], "ada", key=app_key)
    assert refused.status_code == 422 and refused.json()["code"] == "not_eligible"
    assert refused.json()["required_tier"] == "Gold"
    until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    r = await tenant.client.post("/v1/members/ada/tier", json={"tier": "Gold", "until": until, "reason": "vip"},
                                 headers=tenant.headers())
    assert r.status_code == 200, r.text
    assert (await tenant.adjust("ada", 300)).status_code == 201
    gift = await _exchange(tenant, lounge["id"], "ada", key=app_key, delivery={
        "name": "Ada Lovelace", "address_lines": ["12 St James's Square"], "city": "London", "country": "GB"})
    assert gift.status_code == 201, gift.text
    assert gift.json()["voucher"]["delivery"]["city"] == "London"
    # the POS validates the coffee-less voucher by its code, typed any way
    code = body["voucher"]["code"]
    pos = await tenant.key("read", "earn")
    seen = await tenant.client.get(f"/v1/vouchers/{code.lower().replace('-', '')}", headers=tenant.headers(pos))
    assert seen.status_code == 200 and seen.json()["id"] == body["voucher"]["id"]
    assert (await tenant.verify())["ok"]


async def test_an_exchange_spends_soonest_expiring_points_and_replays(tenant, db):
    await _funded(tenant, "lots", (100, None), (100, "2031-01-01T00:00:00Z"), (100, "2030-01-01T00:00:00Z"))
    reward = await _reward(tenant)
    first = await _exchange(tenant, reward["id"], "lots", idem="ex-1")
    assert first.status_code == 201, first.text
    lots = [r["remaining"] for r in await db.fetch(
        "SELECT l.remaining FROM lots l JOIN members m ON m.id = l.member_id WHERE m.program_id = $1 ORDER BY l.id",
        tenant.program_id)]
    assert lots == [100, 50, 0]
    again = await _exchange(tenant, reward["id"], "lots", idem="ex-1")
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    other = await tenant.client.post(f"/v1/rewards/{reward['id']}/exchanges", json={"member_id": "other"},
                                     headers=tenant.headers(idem="ex-1"))
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert (await tenant.balance("lots"))["available"] == 150
    activity = (await tenant.client.get("/v1/members/lots/activity", headers=tenant.headers())).json()["data"]
    exchange = activity[0]
    assert exchange["kind"] == "exchange" and exchange["description"] == "Free coffee"
    assert exchange["metadata"] == {"reward_id": reward["id"], "voucher_id": first.json()["voucher"]["id"]}
    assert sorted((p["account"], p["points"]) for p in exchange["postings"]) == [("available", -150),
                                                                                  ("redeemed", 150)]
    assert exchange["id"] == first.json()["voucher"]["entry_id"]
    assert (await tenant.verify())["ok"]


async def test_every_refusal_writes_nothing(tenant, db):
    await tenant.client.put("/v1/program/tiers", json=GOLD_LADDER, headers=tenant.headers())
    await _funded(tenant, "poor", (100, None))
    await _funded(tenant, "rich", (10_000, None))
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    past = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    cases = [
        ("poor", {}, 422, "insufficient_points"),
        ("rich", {"min_tier": "Platinum"}, 422, "not_eligible"),
        ("rich", {"available_from": later}, 409, "reward_unavailable"),
        ("rich", {"available_from": (datetime.now(UTC) - timedelta(days=9)).isoformat(), "available_until": past},
         409, "reward_unavailable"),
    ]
    for member, fields, status, code in cases:
        reward = await _reward(tenant, **fields)
        before = await _entries(db, tenant)
        r = await _exchange(tenant, reward["id"], member)
        assert (r.status_code, r.json()["code"]) == (status, code), (fields, r.text)
        assert await _entries(db, tenant) == before
    r = await _exchange(tenant, (await _reward(tenant))["id"], "poor")
    assert r.json()["available"] == 100 and r.json()["missing_points"] == 50
    sold = await _reward(tenant, stock=1)
    assert (await _exchange(tenant, sold["id"], "rich")).status_code == 201
    r = await _exchange(tenant, sold["id"], "rich")
    assert r.status_code == 409 and r.json()["code"] == "out_of_stock"
    once = await _reward(tenant, limit={"count": 1, "period": "ever"})
    assert (await _exchange(tenant, once["id"], "rich")).status_code == 201
    r = await _exchange(tenant, once["id"], "rich")
    assert r.status_code == 422 and r.json()["code"] == "limit_reached" and r.json()["limit"] == 1
    await tenant.member("rich", status="suspended")
    r = await _exchange(tenant, (await _reward(tenant))["id"], "rich")
    assert r.status_code == 409 and r.json()["code"] == "member_suspended"
    listed = (await tenant.client.get("/v1/rewards?member_id=rich", headers=tenant.headers())).json()["data"]
    assert all(not r["for_member"]["can_exchange"] for r in listed)
    assert await db.fetchval("SELECT count(*) FROM vouchers WHERE program_id = $1", tenant.program_id) == 2
    assert (await tenant.verify())["ok"]


async def test_hundred_concurrent_exchanges_for_a_stock_of_ten(tenant, db):
    members = [f"st-{i}" for i in range(10)]
    for m in members:
        await _funded(tenant, m, (10_000, None))  # enough for all ten units, whoever wins them
    reward = await _reward(tenant, stock=10, low_stock_threshold=3)
    responses = await asyncio.gather(*[_exchange(tenant, reward["id"], members[i % 10]) for i in range(100)])
    codes = [r.status_code for r in responses]
    assert codes.count(201) == 10 and codes.count(409) == 90, codes
    assert all(r.json()["code"] == "out_of_stock" for r in responses if r.status_code == 409)
    vouchers = {r.json()["voucher"]["code"] for r in responses if r.status_code == 201}
    assert len(vouchers) == 10
    spent = sum([10_000 - (await tenant.balance(m))["available"] for m in members])
    assert spent == 10 * 150  # points conserved: exactly the ten exchanges were paid
    assert (await tenant.client.get(f"/v1/rewards/{reward['id']}", headers=tenant.headers())).json()["stock"] == 0
    low = await _changes(db, tenant, "reward.stock_low")
    assert len(low) == 1 and low[0][1]["id"] == reward["id"] and low[0][1]["stock"] == 3
    assert (await tenant.verify())["ok"]


async def test_a_per_member_limit_holds_under_concurrency(tenant, db):
    await _funded(tenant, "lim", (100_000, None))
    reward = await _reward(tenant, limit={"count": 2, "period": "day"})  # no stock: exchanges are group-committed
    responses = await asyncio.gather(*[_exchange(tenant, reward["id"], "lim") for _ in range(20)])
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 2 + [422] * 18, codes
    assert all(r.json()["code"] == "limit_reached" for r in responses if r.status_code == 422)
    assert (await tenant.balance("lim"))["available"] == 100_000 - 300
    # a cancelled voucher does not count against the limit
    code = next(r.json()["voucher"]["code"] for r in responses if r.status_code == 201)
    assert (await _post(tenant, f"/v1/vouchers/{code}/cancel")).status_code == 200
    assert (await _exchange(tenant, reward["id"], "lim")).status_code == 201
    assert (await _exchange(tenant, reward["id"], "lim")).status_code == 422
    assert (await tenant.verify())["ok"]


async def test_fifty_concurrent_redeems_of_one_voucher_one_wins(tenant, db):
    await _funded(tenant, "red", (1000, None))
    reward = await _reward(tenant)
    code = (await _exchange(tenant, reward["id"], "red")).json()["voucher"]["code"]
    pos = await tenant.key("redeem")
    responses = await asyncio.gather(*[
        _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": f"order-{i}"}, key=pos) for i in range(50)])
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 49, codes
    winner = next(r for r in responses if r.status_code == 200).json()["voucher"]
    assert winner["status"] == "redeemed" and winner["reference"].startswith("order-")
    assert all(r.json()["code"] == "voucher_not_issued" and r.json()["voucher_status"] == "redeemed"
               for r in responses if r.status_code == 409)
    assert len(await _changes(db, tenant, "voucher.redeemed")) == 1
    seen = (await tenant.client.get(f"/v1/vouchers/{code}", headers=tenant.headers())).json()
    assert seen["status"] == "redeemed" and seen["reference"] == winner["reference"]
    assert (await tenant.verify())["ok"]


# --- partner codes ---------------------------------------------------------------------------------------------


async def test_partner_codes_are_never_handed_out_twice(tenant, db):
    reward = await _reward(tenant, name="Cinema ticket", kind="partner_code", sku=None, cost_points=100,
                           low_stock_threshold=2)
    codes = [f"CINE-{i:05d}" for i in range(15)]
    r = await _post(tenant, f"/v1/rewards/{reward['id']}/codes", {"codes": codes[:10] + codes[:2]})
    assert r.status_code == 200, r.text
    assert r.json() == {"reward_id": reward["id"], "received": 12, "added": 10, "duplicates": 2, "stock": 10}
    csv_body = "code\n" + "\n".join(codes[5:]) + "\n"  # five known, five new: idempotent per code
    r = await tenant.client.post(f"/v1/rewards/{reward['id']}/codes", content=csv_body.encode(),
                                 headers={**tenant.headers(), "Content-Type": "text/csv"})
    assert r.status_code == 200 and (r.json()["added"], r.json()["duplicates"], r.json()["stock"]) == (5, 5, 15)
    for content, media, status in ((b"codes", "application/xml", 415), (b"{", "application/json", 400),
                                   (b'{"codes": []}', "application/json", 422), (b"code\n", "text/csv", 422),
                                   (b'{"codes": ["has space"]}', "application/json", 422)):
        r = await tenant.client.post(f"/v1/rewards/{reward['id']}/codes", content=content,
                                     headers={**tenant.headers(), "Content-Type": media})
        assert r.status_code == status, (media, content, r.text)
    not_partner = await _reward(tenant)
    r = await _post(tenant, f"/v1/rewards/{not_partner['id']}/codes", {"codes": ["A"]})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await tenant.client.patch(f"/v1/rewards/{reward['id']}", json={"stock": 99}, headers=tenant.headers())
    assert r.status_code == 422

    members = [f"pc-{i}" for i in range(30)]
    for m in members:
        await _funded(tenant, m, (500, None))
    responses = await asyncio.gather(*[_exchange(tenant, reward["id"], m) for m in members])
    won = [r.json()["voucher"] for r in responses if r.status_code == 201]
    assert len(won) == 15 and sorted(v["partner_code"] for v in won) == codes
    assert all(r.json()["code"] == "out_of_stock" for r in responses if r.status_code != 201)
    # only the member sees its code: the wallet does; the POS, the events and the catalogue do not
    winner = won[0]
    wallet = (await tenant.client.get(f"/v1/members/{winner['member_id']}/vouchers", headers=tenant.headers())).json()
    assert wallet["data"][0]["partner_code"] == winner["partner_code"]
    pos = (await tenant.client.get(f"/v1/vouchers/{winner['code']}", headers=tenant.headers())).json()
    assert pos["partner_code"] is None
    events = await _changes(db, tenant, "voucher.issued", "reward.exchanged")
    assert len(events) == 30 and not any(c in json.dumps(e[1]) for c in codes for e in events)
    assert [e[1]["stock"] for e in await _changes(db, tenant, "reward.stock_low")] == [2]
    # a cancelled partner-code voucher gives the points back, but its code is never handed out again
    r = await _post(tenant, f"/v1/vouchers/{winner['code']}/cancel")
    assert r.status_code == 200
    assert (await tenant.client.get(f"/v1/rewards/{reward['id']}", headers=tenant.headers())).json()["stock"] == 0
    assert (await tenant.verify())["ok"]


# --- vouchers: cancel, expiry, redeem -------------------------------------------------------------------------


async def test_cancel_gives_points_back_with_their_original_expiry_even_expired(tenant, db):
    await _funded(tenant, "can", (100, "2030-01-01T00:00:00Z"), (100, "2031-01-01T00:00:00Z"))
    reward = await _reward(tenant, stock=5)
    body = (await _exchange(tenant, reward["id"], "can")).json()
    code = body["voucher"]["code"]
    lots = "SELECT l.remaining FROM lots l JOIN members m ON m.id = l.member_id WHERE m.program_id = $1 ORDER BY l.id"
    assert [r["remaining"] for r in await db.fetch(lots, tenant.program_id)] == [0, 50]
    # the first lot (100 points, all spent on the voucher) expires meanwhile
    await db.execute("UPDATE lots SET expires_at = now() - interval '1 day' WHERE program_id = $1 "
                     "AND expires_at < '2031-01-01'", tenant.program_id)
    r = await _post(tenant, f"/v1/vouchers/{code}/cancel", {"reason": "changed my mind"}, idem="cancel-1")
    assert r.status_code == 200, r.text
    voucher = r.json()["voucher"]
    assert voucher["status"] == "cancelled" and voucher["resolved_at"] is not None
    assert voucher["refund"]["points"] == 150
    assert (voucher["refund"]["available_points"], voucher["refund"]["expired_points"]) == (50, 100)
    assert [r["remaining"] for r in await db.fetch(lots, tenant.program_id)] == [0, 100]  # 50 back to their lot
    assert r.json()["balance"]["available"] == 100 and r.json()["balance"]["lifetime_redeemed"] == 0
    entry = (await tenant.client.get(f"/v1/entries/{voucher['refund']['entry_id']}", headers=tenant.headers())).json()
    assert entry["kind"] == "exchange_refund" and entry["description"] == "changed my mind"
    assert sorted((p["account"], p["points"]) for p in entry["postings"]) == [
        ("available", 50), ("expired", 100), ("redeemed", -150)]
    replay = await _post(tenant, f"/v1/vouchers/{code}/cancel", {"reason": "changed my mind"}, idem="cancel-1")
    assert replay.content == r.content and replay.headers["idempotent-replayed"] == "true"
    twice = await _post(tenant, f"/v1/vouchers/{code}/cancel")
    assert twice.status_code == 409 and twice.json()["code"] == "voucher_not_issued"
    redeem = await _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": "o-1"})
    assert redeem.status_code == 409 and redeem.json()["voucher_status"] == "cancelled"
    assert (await tenant.client.get(f"/v1/rewards/{reward['id']}", headers=tenant.headers())).json()["stock"] == 5
    activity = (await tenant.client.get("/v1/members/can/activity", headers=tenant.headers())).json()["data"]
    assert [e["kind"] for e in activity[:2]] == ["exchange_refund", "exchange"]
    assert (await tenant.verify())["ok"]


async def test_cancel_window_for_redeem_keys(tenant):
    await _funded(tenant, "win", (1000, None))
    checkout = await tenant.key("redeem")
    windowed = await _reward(tenant, cancel_window_hours=2)
    admin_only = await _reward(tenant)
    a = (await _exchange(tenant, windowed["id"], "win")).json()["voucher"]
    b = (await _exchange(tenant, admin_only["id"], "win")).json()["voucher"]
    c = (await _exchange(tenant, windowed["id"], "win")).json()["voucher"]
    assert a["cancellable_until"] is not None and b["cancellable_until"] is None
    assert (await _post(tenant, f"/v1/vouchers/{a['code']}/cancel", key=checkout)).status_code == 200
    r = await _post(tenant, f"/v1/vouchers/{b['code']}/cancel", key=checkout)
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    assert r.json()["required_scopes"] == ["admin"]
    r = await _post(tenant, f"/v1/vouchers/{c['code']}/cancel", key=await tenant.key("read"))
    assert r.status_code == 403
    assert (await _post(tenant, f"/v1/vouchers/{b['code']}/cancel")).status_code == 200  # admin: any time
    assert (await tenant.balance("win"))["available"] == 1000 - 150


async def test_expiry_job_expires_vouchers_and_refunds_when_the_reward_says_so(tenant, db):
    from app.rewards.service import expire_vouchers

    await _funded(tenant, "exp", (1000, None))
    keep = await _reward(tenant, voucher_valid_days=30)
    refund = await _reward(tenant, name="refunded", voucher_valid_days=30, refund_on_expiry=True)
    forever = await _reward(tenant, name="forever")
    kept = (await _exchange(tenant, keep["id"], "exp")).json()["voucher"]
    refunded = (await _exchange(tenant, refund["id"], "exp")).json()["voucher"]
    lasting = (await _exchange(tenant, forever["id"], "exp")).json()["voucher"]
    assert lasting["expires_at"] is None
    assert await expire_vouchers(db, program_id=tenant.program_id) == 0
    await db.execute("UPDATE vouchers SET expires_at = now() - interval '1 second' WHERE program_id = $1 "
                     "AND expires_at IS NOT NULL", tenant.program_id)
    # read time: expired before the job has run, and no longer redeemable or cancellable
    seen = (await tenant.client.get(f"/v1/vouchers/{kept['code']}", headers=tenant.headers())).json()
    assert seen["status"] == "expired" and seen["resolved_at"] is None
    r = await _post(tenant, f"/v1/vouchers/{kept['code']}/redeem", {"reference": "late"})
    assert r.status_code == 409 and r.json()["code"] == "voucher_expired"
    r = await _post(tenant, f"/v1/vouchers/{kept['code']}/cancel")
    assert r.status_code == 409 and r.json()["code"] == "voucher_expired"
    assert await expire_vouchers(db, program_id=tenant.program_id, dry_run=True) == 2
    assert await expire_vouchers(db, program_id=tenant.program_id) == 2
    assert await expire_vouchers(db, program_id=tenant.program_id) == 0  # a rerun expires nothing twice
    wallet = (await tenant.client.get("/v1/members/exp/vouchers?status=expired", headers=tenant.headers())).json()
    by_id = {v["id"]: v for v in wallet["data"]}
    assert set(by_id) == {kept["id"], refunded["id"]}
    assert by_id[kept["id"]]["refund"] is None and by_id[kept["id"]]["resolved_at"] is not None
    assert by_id[refunded["id"]]["refund"]["available_points"] == 150
    assert (await tenant.balance("exp"))["available"] == 1000 - 300  # kept and lasting stay spent
    issued = (await tenant.client.get("/v1/members/exp/vouchers?status=issued", headers=tenant.headers())).json()
    assert [v["id"] for v in issued["data"]] == [lasting["id"]]
    assert len(await _changes(db, tenant, "voucher.expired")) == 2
    assert (await tenant.verify())["ok"]


async def test_redeem_checks_the_vouchers_terms(tenant):
    await _funded(tenant, "terms", (10_000, None))
    await tenant.member("someone")
    five = await _reward(tenant, name="5 off", kind="voucher", sku=None, amount_off="5.00", min_spend="20.00",
                         channels=["online"])
    code = (await _exchange(tenant, five["id"], "terms")).json()["voucher"]["code"]
    for body, reason in (({"channel": "pos"}, "channel"), ({"order_total": "19.99"}, "min_spend"),
                         ({"member_id": "someone"}, "member"), ({"member_id": "nobody"}, "member")):
        r = await _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": "o-1", **body})
        assert r.status_code == 422 and r.json()["code"] == "voucher_not_applicable", r.text
        assert r.json()["reason"] == reason and r.json()["voucher_code"] == code
    r = await _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": "o-1", "order_total": "20.001"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": "o-1", "channel": "online",
                                                            "order_total": "20.00", "member_id": "terms"},
                    key=await tenant.key("earn"))
    assert r.status_code == 200 and r.json()["voucher"]["status"] == "redeemed"
    r = await _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": "o-1"}, key=await tenant.key("read"))
    assert r.status_code == 403


async def test_a_purchase_redeems_its_vouchers_or_is_refused(tenant, db):
    await _funded(tenant, "buyer", (10_000, None))
    await _funded(tenant, "other", (10_000, None))
    five = await _reward(tenant, name="5 off", kind="voucher", sku=None, amount_off="5.00", min_spend="20.00")
    coffee = await _reward(tenant, channels=["pos"])
    a = (await _exchange(tenant, five["id"], "buyer")).json()["voucher"]["code"]
    b = (await _exchange(tenant, coffee["id"], "buyer")).json()["voucher"]["code"]
    theirs = (await _exchange(tenant, coffee["id"], "other")).json()["voucher"]["code"]
    used = (await _exchange(tenant, coffee["id"], "buyer")).json()["voucher"]["code"]
    assert (await _post(tenant, f"/v1/vouchers/{used}/redeem", {"reference": "earlier"})).status_code == 200

    before = await _entries(db, tenant)
    refusals = [
        (_purchase("buyer", "p-1", a, b, total="25.00", sku="COFFEE", channel="online"), 422, "channel"),
        (_purchase("buyer", "p-1", a, b, total="19.00", sku="COFFEE"), 422, "min_spend"),
        (_purchase("buyer", "p-1", a, b, total="25.00", sku="TEA"), 422, "sku"),
        (_purchase("buyer", "p-1", a, theirs, total="25.00", sku="COFFEE"), 422, "member"),
        (_purchase("buyer", "p-1", a, used, total="25.00", sku="COFFEE"), 409, None),
        (_purchase("buyer", "p-1", a, "2222-2222-2222", total="25.00", sku="COFFEE"), 404, None),
        (_purchase("newcomer", "p-1", a, total="25.00", sku="COFFEE"), 422, "member"),
    ]
    for body, status, reason in refusals:
        r = await _post(tenant, "/v1/purchases", body)
        assert r.status_code == status, (body["voucher_codes"], r.text)
        assert r.json().get("reason") == reason
    assert await _entries(db, tenant) == before  # nothing written: no purchase, no enrolment, no voucher used
    assert (await tenant.client.get("/v1/members/newcomer", headers=tenant.headers())).status_code == 404
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE program_id = $1", tenant.program_id) == 0
    statuses = await db.fetch("SELECT status FROM vouchers WHERE program_id = $1 AND status = 'redeemed'",
                              tenant.program_id)
    assert len(statuses) == 1

    ok = await _post(tenant, "/v1/purchases", _purchase("buyer", "p-1", a.lower(), b, total="25.00", sku="COFFEE"))
    assert ok.status_code == 201, ok.text
    for code in (a, b):
        v = (await tenant.client.get(f"/v1/vouchers/{code}", headers=tenant.headers())).json()
        assert (v["status"], v["reference"]) == ("redeemed", "p-1")
    # the POS retries with a fresh key: the order replays and nothing is redeemed twice
    again = await _post(tenant, "/v1/purchases", _purchase("buyer", "p-1", a.lower(), b, total="25.00", sku="COFFEE"))
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert len(await _changes(db, tenant, "voucher.redeemed")) == 3
    assert (await tenant.verify())["ok"]


# --- isolation and guessing -----------------------------------------------------------------------------------


async def test_every_route_is_404_for_another_programs_rewards_vouchers_and_members(tenant, other_tenant):
    await _funded(tenant, "mine", (1000, None))
    reward = await _reward(tenant, kind="partner_code", sku=None, cost_points=100)
    await _post(tenant, f"/v1/rewards/{reward['id']}/codes", {"codes": ["P-1", "P-2"]})
    code = (await _exchange(tenant, reward["id"], "mine")).json()["voucher"]["code"]
    await other_tenant.member("theirs")
    rid, them = reward["id"], other_tenant
    calls = [
        ("reward_not_found", await them.client.get(f"/v1/rewards/{rid}", headers=them.headers())),
        ("reward_not_found", await them.client.patch(f"/v1/rewards/{rid}", json={"name": "x"},
                                                     headers=them.headers())),
        ("reward_not_found", await _post(them, f"/v1/rewards/{rid}/archive")),
        ("reward_not_found", await _post(them, f"/v1/rewards/{rid}/codes", {"codes": ["P-3"]})),
        ("reward_not_found", await _exchange(them, rid, "theirs")),
        ("member_not_found", await them.client.get("/v1/rewards?member_id=mine", headers=them.headers())),
        ("member_not_found", await them.client.get("/v1/members/mine/vouchers", headers=them.headers())),
        ("voucher_not_found", await them.client.get(f"/v1/vouchers/{code}", headers=them.headers())),
        ("voucher_not_found", await _post(them, f"/v1/vouchers/{code}/redeem", {"reference": "x"})),
        ("voucher_not_found", await _post(them, f"/v1/vouchers/{code}/cancel")),
        ("voucher_not_found", await _post(them, "/v1/purchases", _purchase("theirs", "x-1", code))),
    ]
    for expected, r in calls:
        assert r.status_code == 404 and r.json()["code"] == expected, (r.request.url, r.text)
    mine_for_them = await _exchange(them, (await _reward(them))["id"], "mine")
    assert mine_for_them.status_code == 404 and mine_for_them.json()["code"] == "member_not_found"
    assert (await them.client.get("/v1/rewards", headers=them.headers())).json()["data"][0]["id"] != rid
    assert (await them.client.get("/v1/vouchers/outstanding", headers=them.headers())).json()["count"] == 0
    # nothing of this program changed
    assert (await tenant.client.get(f"/v1/vouchers/{code}", headers=tenant.headers())).json()["status"] == "issued"
    assert (await tenant.client.get(f"/v1/rewards/{rid}", headers=tenant.headers())).json()["stock"] == 1


async def test_failed_lookups_are_limited_per_key(tenant, app):
    await _funded(tenant, "g", (1000, None))
    code = (await _exchange(tenant, (await _reward(tenant))["id"], "g")).json()["voucher"]["code"]
    guesser, honest = await tenant.key("read", "redeem"), await tenant.key("read")
    guard = app.state.voucher_guard
    misses = 0
    for i in range(int(guard.burst)):
        path = "/v1/vouchers/2222-2222-" + f"{i:04d}".replace("0", "A").replace("1", "B")
        r = (await tenant.client.get(path, headers=tenant.headers(guesser)) if i % 2 else
             await _post(tenant, path + "/redeem", {"reference": "x"}, key=guesser))
        misses += r.status_code == 404 and r.json()["code"] == "voucher_not_found"
    assert misses == guard.burst
    blocked = await tenant.client.get(f"/v1/vouchers/{code}", headers=tenant.headers(guesser))
    assert blocked.status_code == 429 and blocked.json()["code"] == "rate_limited"
    assert int(blocked.headers["retry-after"]) >= 1
    r = await _post(tenant, "/v1/purchases", _purchase("g", "g-1", code, sku="COFFEE"), key=await tenant.key("earn"))
    assert r.status_code == 201  # another key is not affected...
    assert (await tenant.client.get(f"/v1/vouchers/{code}", headers=tenant.headers(honest))).status_code == 200
    r = await _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": "y"}, key=guesser)
    assert r.status_code == 429  # ...but every lookup by code of the guessing key is, until it refills


def test_failure_guard_refills_and_can_be_off():
    from uuid import uuid4

    from app.errors import DomainError
    from app.rewards.codes import FailureGuard

    key = uuid4()
    guard = FailureGuard(per_minute=6000, burst=2)  # 100 per second
    guard.failed(key)
    guard.failed(key)
    try:
        guard.check(key)
    except DomainError as exc:
        assert exc.code == "rate_limited" and exc.extra["retry_after"] >= 1
    else:
        raise AssertionError("a spent bucket must refuse")
    import time

    time.sleep(0.02)
    guard.check(key)  # refilled
    off = FailureGuard(per_minute=0, burst=1)
    for _ in range(100):
        off.failed(key)
    off.check(key)


# --- the books ------------------------------------------------------------------------------------------------


async def test_outstanding_vouchers(tenant):
    await _funded(tenant, "out", (100_000, None))
    five = await _reward(tenant, name="5 off", kind="voucher", sku=None, amount_off="5.00", cost_points=500)
    pct = await _reward(tenant, name="10%", kind="voucher", sku=None, percent_off="10", cost_points=300)
    coffee = await _reward(tenant)
    five_codes = [(await _exchange(tenant, five["id"], "out")).json()["voucher"]["code"] for _ in range(3)]
    await _exchange(tenant, pct["id"], "out")
    await _exchange(tenant, coffee["id"], "out")
    await _post(tenant, f"/v1/vouchers/{five_codes[0]}/redeem", {"reference": "o"})
    await _post(tenant, f"/v1/vouchers/{five_codes[1]}/cancel")
    r = await tenant.client.get("/v1/vouchers/outstanding", headers=tenant.headers())
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["count"], body["points"], body["value"], body["percent_off_count"]) == (3, 950, "5.00", 1)
    assert [(x["name"], x["count"], x["value"]) for x in body["by_reward"]] == [
        ("5 off", 1, "5.00"), ("10%", 1, None), ("Free coffee", 1, None)]
    assert (await tenant.client.get("/v1/vouchers/outstanding",
                                    headers=tenant.headers(await tenant.key("read")))).status_code == 403


async def test_erasure_keeps_vouchers_and_removes_personal_data(tenant, db):
    await _funded(tenant, "era", (5000, None))
    await tenant.member("era", name="Ada", email="ada@example.com")
    gift = await _reward(tenant, name="Mug", kind="gift", sku=None, cost_points=1000)
    delivery = {"name": "Ada Lovelace", "address_lines": ["1 Main St", "Flat 2"], "postal_code": "SW1",
                "city": "London", "country": "GB", "phone": "+44 20 5550199", "note": "ring twice"}
    voucher = (await _exchange(tenant, gift["id"], "era", delivery=delivery)).json()["voucher"]
    assert voucher["delivery"] == {**delivery, "region": None}
    assert "Lovelace" not in json.dumps([d for _, d in await _changes(db, tenant, "voucher.issued",
                                                                        "reward.exchanged")])
    r = await tenant.client.delete("/v1/members/era/personal-data", headers=tenant.headers())
    assert r.status_code == 200 and r.json()["name"] is None
    wallet = (await tenant.client.get("/v1/members/era/vouchers", headers=tenant.headers())).json()["data"]
    assert [(v["id"], v["status"], v["delivery"]) for v in wallet] == [(voucher["id"], "issued", None)]
    assert await db.fetchval("SELECT count(*) FROM vouchers WHERE program_id = $1 AND delivery::text LIKE '%Lovelace%'",
                             tenant.program_id) == 0
    assert (await tenant.verify())["ok"]


async def test_events_carry_the_api_shapes(tenant, db):
    await _funded(tenant, "ev", (1000, None))
    reward = await _reward(tenant, stock=2, low_stock_threshold=0)
    exchanged = (await _exchange(tenant, reward["id"], "ev")).json()
    code = exchanged["voucher"]["code"]
    await _post(tenant, f"/v1/vouchers/{code}/redeem", {"reference": "o-9"})
    second = (await _exchange(tenant, reward["id"], "ev")).json()["voucher"]["code"]
    cancelled = (await _post(tenant, f"/v1/vouchers/{second}/cancel")).json()
    events = await _changes(db, tenant, "reward.exchanged", "voucher.issued", "voucher.redeemed", "voucher.cancelled",
                            "reward.stock_low")
    assert [t for t, _ in events] == ["voucher.issued", "reward.exchanged", "voucher.redeemed", "voucher.issued",
                                      "reward.exchanged", "reward.stock_low", "voucher.cancelled"]
    from app.rewards.schemas import Reward, Voucher, VoucherWithBalance

    for kind, data in events:
        model = {"voucher.issued": Voucher, "voucher.redeemed": Voucher, "reward.stock_low": Reward}.get(
            kind, VoucherWithBalance)
        assert json.loads(model.model_validate(data).model_dump_json()) == data, kind
    assert events[1][1] == {**exchanged, "voucher": {**exchanged["voucher"], "partner_code": None, "delivery": None}}
    assert events[2][1]["status"] == "redeemed" and events[6][1] == cancelled
    member_pk = await db.fetchval("SELECT id FROM members WHERE program_id = $1 AND external_id = 'ev'",
                                  tenant.program_id)
    assert await db.fetchval("SELECT count(DISTINCT member_id) FROM changes WHERE program_id = $1 AND type LIKE "
                             "'voucher.%'", tenant.program_id) == 1
    assert await db.fetchval("SELECT member_id FROM changes WHERE program_id = $1 AND type = 'reward.stock_low'",
                             tenant.program_id) is None
    assert member_pk is not None


async def test_verify_proves_the_vouchers(tenant, db):
    await _funded(tenant, "ver", (5000, None))
    partner = await _reward(tenant, kind="partner_code", sku=None, cost_points=100)
    await _post(tenant, f"/v1/rewards/{partner['id']}/codes", {"codes": ["V-1", "V-2", "V-3"]})
    coffee = await _reward(tenant)
    await _exchange(tenant, partner["id"], "ver")
    code = (await _exchange(tenant, coffee["id"], "ver")).json()["voucher"]["code"]
    await _post(tenant, f"/v1/vouchers/{code}/cancel")
    assert (await tenant.verify())["ok"]
    await db.execute("UPDATE vouchers SET returned_points = returned_points - 1, "
                     "returned_expired_points = returned_expired_points + 1 WHERE program_id = $1 AND code = $2",
                     tenant.program_id, code.replace("-", ""))
    await db.execute("UPDATE rewards SET stock = stock + 1 WHERE id = ledger.row_id('rwd', $1)", partner["id"])
    report = await tenant.verify()
    assert not report["ok"]
    assert {d["check"] for d in report["discrepancies"]} == {"voucher_entry_mismatch", "partner_code_mismatch"}


# --- jobs, group commit, codes --------------------------------------------------------------------------------


async def test_expire_vouchers_command(tenant, other_tenant, db, database_url):
    from tests.test_cli import _acli

    for t in (tenant, other_tenant):
        await _funded(t, "cli", (1000, None))
        await _exchange(t, (await _reward(t, voucher_valid_days=1))["id"], "cli")
        await db.execute("UPDATE vouchers SET expires_at = now() - interval '1 second' WHERE program_id = $1",
                         t.program_id)
    dry = await _acli(database_url, "expire-vouchers", "--program", str(tenant.program_id), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would expire 1 vouchers"), dry.stdout + dry.stderr
    run = await _acli(database_url, "expire-vouchers", "--program", str(tenant.program_id), "--progress")
    assert run.returncode == 0 and run.stdout.startswith("expired 1 vouchers"), run.stdout + run.stderr
    assert "expire-vouchers" in run.stderr and "1/1" in run.stderr
    statuses = {r["program_id"]: r["status"] for r in await db.fetch(
        "SELECT program_id, status FROM vouchers WHERE program_id = ANY ($1)",
        [tenant.program_id, other_tenant.program_id])}
    assert statuses == {tenant.program_id: "expired", other_tenant.program_id: "issued"}


async def test_batched_exchanges_criss_cross_without_deadlock(app, settings, tenant, db):
    """Two processes (two batchers) exchange rewards with and without stock for the same members in every order at
    once: exchanges that take stock leave the batches (they lock the reward's row too), so no transaction waits in a
    cycle and no batch fails."""
    from app.main import create_app

    other = create_app(settings)
    transport = httpx.ASGITransport(app=other)
    async with other.router.lifespan_context(other), httpx.AsyncClient(transport=transport,
                                                                        base_url="http://test") as client2:
        tenant2 = Tenant(tenant.program_id, tenant.admin_key, client2)
        members = [f"bx-{i}" for i in range(6)]
        for m in members:
            await _funded(tenant, m, (1_000_000, None))
        free = [(await _reward(tenant, name=f"free-{i}", cost_points=1))["id"] for i in range(2)]
        stocked = [(await _reward(tenant, name=f"stocked-{i}", cost_points=1, stock=40))["id"] for i in range(2)]
        deadlocks = await db.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        batchers = [app.state.db.writer.batcher, other.state.db.writer.batcher]
        fallbacks, batches = [b.fallbacks for b in batchers], [b.batches for b in batchers]

        async def burst(t: Tenant, seed: int) -> list[int]:
            order = members[seed % 6:] + members[:seed % 6]
            rewards = (free + stocked) if seed % 2 else (stocked[::-1] + free[::-1])
            calls = [_exchange(t, rewards[i % 4], m) for i, m in enumerate(order * 4)]
            return [r.status_code for r in await asyncio.gather(*calls)]

        results = await asyncio.gather(*[burst(t, s) for t in (tenant, tenant2) for s in range(4)])
    codes = [c for cs in results for c in cs]
    # 96 exchanges of free rewards and 96 of the 80 stocked units: each free one, and the stock exactly
    assert (codes.count(201), codes.count(409), len(codes)) == (96 + 80, 16, 192)
    await asyncio.sleep(1.2)  # statistics reach shared memory at most once a second
    assert await db.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()") == deadlocks
    assert [b.fallbacks for b in batchers] == fallbacks
    assert sum(b.batches for b in batchers) > sum(batches)  # the free exchanges were batched
    for rid in stocked:
        stock = (await tenant.client.get(f"/v1/rewards/{rid}", headers=tenant.headers())).json()["stock"]
        issued = await db.fetchval("SELECT count(*) FROM vouchers WHERE reward_id = ledger.row_id('rwd', $1)", rid)
        assert stock + issued == 40
    assert (await tenant.verify())["ok"]


async def test_without_group_commit_exchanges_answer_the_same(settings):
    from app.main import create_app
    from tests.conftest import make_tenant

    plain = create_app(settings.model_copy(update={"group_commit": False}))
    transport = httpx.ASGITransport(app=plain)
    async with plain.router.lifespan_context(plain), httpx.AsyncClient(transport=transport,
                                                                        base_url="http://test") as client:
        t = await make_tenant(plain, client)
        await _funded(t, "plain", (1000, None))
        stocked, free = await _reward(t, stock=3), await _reward(t)
        responses = await asyncio.gather(*[_exchange(t, stocked["id"], "plain") for _ in range(5)],
                                         *[_exchange(t, free["id"], "plain") for _ in range(2)])
        assert sorted(r.status_code for r in responses) == [201] * 5 + [409] * 2
        assert (await t.balance("plain"))["available"] == 1000 - 5 * 150
        assert (await t.verify())["ok"]


async def test_codes_are_random_unambiguous_and_grouped(db):
    from app.rewards.codes import ALPHABET, BITS, LENGTH, canonical, grouped

    codes = [r[0] for r in await db.fetch("SELECT ledger.voucher_code() FROM generate_series(1, 4000)")]
    assert len(set(codes)) == len(codes) and BITS >= 60 and len(ALPHABET) == 32
    assert all(len(c) == LENGTH and set(c) <= set(ALPHABET) for c in codes)
    assert not set("01IO") & set(ALPHABET)
    # every letter of the alphabet, at every position, about equally often (48,000 draws: 1,500 expected each)
    counts = {ch: 0 for ch in ALPHABET}
    for c in codes:
        for ch in c:
            counts[ch] += 1
    assert min(counts.values()) > 1200 and max(counts.values()) < 1800, counts
    for position in range(LENGTH):
        assert len({c[position] for c in codes}) == 32
    assert await db.fetchval("SELECT ledger.code_text('K7QM3XDPW9TF')") == grouped("K7QM3XDPW9TF") == "K7QM-3XDP-W9TF"
    assert canonical(" k7qm-3xdp w9tf ") == "K7QM3XDPW9TF"
    for bad in ("K7QM-3XDP-W9T", "K7QM-3XDP-W9T0", "K7QM-3XDP-W9TI", "K7QM_3XDP_W9TF", "Ｋ7QM3XDPW9TF"):
        assert canonical(bad) is None, bad


def test_a_code_reads_back_however_it_is_typed():
    from hypothesis import given
    from hypothesis import strategies as st

    from app.rewards.codes import ALPHABET, LENGTH, canonical, grouped

    @given(st.text(alphabet=ALPHABET, min_size=LENGTH, max_size=LENGTH), st.booleans(), st.booleans())
    def check(code: str, lower: bool, spaced: bool) -> None:
        shown = grouped(code)
        typed = shown.lower() if lower else shown
        assert canonical(typed.replace("-", " ") if spaced else typed) == code
        assert canonical(typed.replace("-", "")) == code

    check()
