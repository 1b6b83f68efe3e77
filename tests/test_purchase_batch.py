"""Offline tills: POST /v1/purchases/batch through HTTP, against real Postgres."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

LATTE = [{"sku": "LATTE", "category": "drinks", "quantity": 2, "unit_price": "4.50"}]  # 9.00
BEANS = [{"sku": "BEANS", "category": "coffee-beans", "quantity": 1, "unit_price": "20.00"}]  # 20.00


def _purchase(member, order, lines=LATTE, occurred_at="2026-11-18T09:00:00Z", **extra):
    total = sum(float(line["unit_price"]) * line["quantity"] for line in lines)
    return {"type": "purchase", "member_id": member, "order_id": order, "occurred_at": occurred_at,
            "currency": "EUR", "total": f"{total:.2f}", "lines": lines, **extra}


def _return(order, return_id, occurred_at="2026-11-18T12:00:00Z", **extra):
    return {"type": "return", "order_id": order, "return_id": return_id, "occurred_at": occurred_at, **extra}


async def _batch(tenant, items, idem=None, key=None):
    return await tenant.client.post("/v1/purchases/batch", json={"items": items},
                                    headers=tenant.headers(key, idem=idem or uuid.uuid4().hex))


async def _rules(tenant, points_per_unit, effective_from):
    r = await tenant.client.put("/v1/program/earn-rules", json={
        "base": {"points_per_unit": points_per_unit}, "effective_from": effective_from}, headers=tenant.headers())
    assert r.status_code == 201, r.text


async def test_a_batch_posts_each_item_as_its_single_request_would(tenant):
    await _rules(tenant, "1", "2020-01-01T00:00:00Z")
    await tenant.member("ada")
    single = await tenant.client.post("/v1/purchases", json={k: v for k, v in _purchase("ada", "o-0").items()
                                                             if k != "type"},
                                      headers=tenant.headers(idem="single"))
    assert single.status_code == 201, single.text
    items = [
        _return("o-1", "r-1", occurred_at="2026-11-18T12:00:00Z", lines=[{"sku": "LATTE", "quantity": 1}]),
        _purchase("ada", "o-1", occurred_at="2026-11-18T10:00:00Z"),     # listed after its return, dated before
        _purchase("bob", "o-2", BEANS),                                  # a member the batch enrols
        _purchase("ada", "o-0"),                                         # posted before, same content: replayed
        _purchase("ada", "o-3", currency="USD"),                         # refused: currency_mismatch
        _purchase("cy", "o-0", BEANS),                                   # the order id of another content
        _return("o-404", "r-1", amount="1.00"),                          # no such purchase
    ]
    r = await _batch(tenant, items, idem="batch-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["created"], body["replayed"], body["refused"]) == (3, 1, 3)
    results = body["results"]
    assert [x["index"] for x in results] == list(range(len(items)))
    assert [(x["status"], x["http_status"]) for x in results] == [
        ("created", 201), ("created", 201), ("created", 201), ("replayed", 200), ("refused", 422), ("refused", 409),
        ("refused", 404)]
    # the return went after its purchase (occurred_at order): half of the lattes' 9 points back
    assert results[1]["result"]["purchase"]["points"] == 9
    assert results[0]["result"]["points"] == 4 or results[0]["result"]["points"] == 5
    assert results[0]["return_id"] == "r-1" and results[0]["order_id"] == "o-1"
    assert results[2]["result"]["balance"]["member_id"] == "bob" and results[2]["result"]["purchase"]["points"] == 20
    assert results[3]["result"]["replayed"] is True
    assert results[3]["result"]["purchase"] == single.json()["purchase"]
    assert [results[i]["problem"]["code"] for i in (4, 5, 6)] == [
        "currency_mismatch", "order_already_posted", "purchase_not_found"]
    assert results[4]["problem"]["expected"] == "EUR" and results[4]["result"] is None
    # each item is what its single request would have stored
    got = await tenant.client.get("/v1/purchases/o-1", headers=tenant.headers())
    clawed = results[0]["result"]["points"]
    assert got.json() == {**results[1]["result"]["purchase"], "returns": got.json()["returns"],
                          "clawed_back_points": clawed}
    assert [x["return_id"] for x in got.json()["returns"]] == ["r-1"]
    ada = await tenant.balance("ada")
    assert ada["available"] == 9 + 9 - clawed
    assert (await tenant.balance("bob"))["available"] == 20

    # the whole request is idempotent: the same key replays the stored answer byte for byte
    again = await _batch(tenant, items, idem="batch-1")
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == r.content
    # another key: every item is idempotent by its natural key (replayed, or refused as before)
    other = await _batch(tenant, items, idem="batch-2")
    assert other.status_code == 200 and other.headers.get("Idempotent-Replayed") is None
    assert [x["status"] for x in other.json()["results"]] == [
        "replayed", "replayed", "replayed", "replayed", "refused", "refused", "refused"]
    assert (await tenant.balance("ada")) == ada
    # the same key for other content: refused as for any write
    reused = await _batch(tenant, items[:2], idem="batch-1")
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    assert (await tenant.verify())["ok"]


async def test_each_item_is_evaluated_under_the_rules_of_its_own_day(tenant):
    await _rules(tenant, "1", "2020-01-01T00:00:00Z")
    await _rules(tenant, "3", "2026-11-20T00:00:00Z")
    r = await _batch(tenant, [
        _purchase("ada", "late-1", occurred_at="2026-11-21T09:00:00Z"),
        _purchase("ada", "early-1", occurred_at="2026-11-19T09:00:00Z"),
        _purchase("bob", "early-2", occurred_at="2026-11-19T23:59:59Z"),
    ])
    assert r.status_code == 200, r.text
    points = [x["result"]["purchase"]["points"] for x in r.json()["results"]]
    rule_versions = [x["result"]["purchase"]["rule_version"] for x in r.json()["results"]]
    assert points == [27, 9, 9] and rule_versions == [2, 1, 1]
    # the same as the single request: one purchase dated before the program's first rules is refused
    old = await _batch(tenant, [_purchase("ada", "ancient", occurred_at="2019-06-01T09:00:00Z")])
    assert old.json()["results"][0]["problem"]["code"] == "occurred_at_too_old"
    assert old.json()["results"][0]["problem"]["reason"] == "before_program_start"


async def test_a_member_s_items_apply_in_occurred_at_order(tenant):
    """The first purchase of the day and the per-day cap see the member's earlier items of the batch."""
    r = await tenant.client.put("/v1/program/earn-rules", json={
        "base": {"points_per_unit": "1"}, "effective_from": "2020-01-01T00:00:00Z",
        "caps": {"per_member_per_day": 25}}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    items = [_purchase("ada", f"o-{h}", BEANS, occurred_at=f"2026-11-18T{h:02d}:00:00Z") for h in (12, 9, 10)]
    r = await _batch(tenant, items)
    assert r.status_code == 200, r.text
    points = {x["order_id"]: x["result"]["purchase"]["points"] for x in r.json()["results"]}
    # 09:00 earns 20, 10:00 the 5 left of the day's 25, 12:00 nothing
    assert points == {"o-9": 20, "o-10": 5, "o-12": 0}


async def test_a_bad_shape_refuses_the_whole_batch_and_writes_nothing(tenant):
    bad = [_purchase("ada", "o-1"), {**_purchase("bob", "o-2"), "total": 9.0}]
    r = await _batch(tenant, bad)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert any(e["loc"][:3] == ["body", "items", 1] for e in r.json()["errors"])
    too_many = [_purchase("ada", f"o-{i}") for i in range(1001)]
    r = await _batch(tenant, too_many)
    assert r.status_code == 422
    r = await _batch(tenant, [])
    assert r.status_code == 422
    r = await _batch(tenant, [{**_purchase("ada", "o-v"), "voucher_codes": ["ABCD-EFGH-JKMN"]}])
    assert r.status_code == 422
    r = await _batch(tenant, [{"type": "refund", "order_id": "o-1"}])
    assert r.status_code == 422
    for member in ("ada", "bob"):
        got = await tenant.client.get(f"/v1/members/{member}", headers=tenant.headers())
        assert got.status_code == 404
    missing_key = await tenant.client.post("/v1/purchases/batch", json={"items": [_purchase("ada", "o-1")]},
                                           headers=tenant.headers())
    assert missing_key.status_code == 400 and missing_key.json()["code"] == "idempotency_key_missing"
    reader = await tenant.key("read")
    r = await _batch(tenant, [_purchase("ada", "o-1")], key=reader)
    assert r.status_code == 403


async def test_another_program_s_orders_and_members_stay_apart(tenant, other_tenant):
    r = await _batch(other_tenant, [_purchase("ada", "theirs")])
    assert r.json()["results"][0]["status"] == "created"
    r = await _batch(tenant, [_return("theirs", "r-1", amount="1.00"), _purchase("ada", "theirs", BEANS)])
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    # the purchase (this program's own order "theirs") goes first by occurred_at; the return then finds it
    assert second["status"] == "created" and second["result"]["purchase"]["points"] == 20
    assert first["status"] == "created"
    assert (await other_tenant.balance("ada"))["available"] == 9
    assert (await tenant.verify())["ok"] and (await other_tenant.verify())["ok"]


async def test_concurrent_batches_award_nothing_twice(tenant):
    await tenant.member("ada")
    items = [_purchase(f"m-{i % 7}", f"o-{i}", occurred_at=f"2026-11-18T{9 + i % 10:02d}:{i % 60:02d}:00Z")
             for i in range(60)]

    async def send(batch, idem=None):
        """As a till does: a batch refused because a member stayed locked past the lock timeout (member_busy, nothing
        written) is sent again with the same Idempotency-Key."""
        idem = idem or uuid.uuid4().hex
        for _ in range(10):
            r = await _batch(tenant, batch, idem=idem)
            if r.status_code != 409 or r.json()["code"] != "member_busy":
                return r
            await asyncio.sleep(0.2)
        return r

    results = await asyncio.gather(*(send(items[k:] + items[:k]) for k in (0, 13, 29, 41)),
                                   send(items, idem="same"), send(items, idem="same"))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    created = sum(r.json()["created"] for r in results[:5])
    assert created == 60
    assert results[4].content == results[5].content
    assert all(r.json()["refused"] == 0 for r in results)
    total = sum([(await tenant.balance(f"m-{i}"))["available"] for i in range(7)])
    assert total == 60 * 9
    assert (await tenant.verify())["ok"]
    await tenant.settled()
    r = await tenant.client.get("/v1/changes", params={"types": "points.earned", "limit": 500},
                                headers=tenant.headers())
    assert len(r.json()["data"]) == 60


async def test_the_readme_batch_answers_as_written(tenant):
    """The offline till's batch of the README, sent as it is written."""
    section = README[README.index("### Offline tills (batches)"):]
    body = re.search(r"-d @- <<JSON\n(.*?)\nJSON\n", section, re.S)
    assert body, "the README's batch example is missing"
    text = body.group(1)
    now = datetime.now(UTC).replace(microsecond=0)
    for minutes in (1, 2, 3, 4):  # T1 four minutes ago ... T4 one minute ago, as the README's `date` calls
        at = (now - timedelta(minutes=5 - minutes)).isoformat().replace("+00:00", "Z")
        text = text.replace(f"${{T{minutes}}}", at).replace(f"$T{minutes}", at)
    r = await _batch(tenant, json.loads(text)["items"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["created"], answer["replayed"], answer["refused"]) == (2, 0, 2)
    assert [(x["status"], x["http_status"], (x["problem"] or {}).get("code")) for x in answer["results"]] == [
        ("refused", 404, "purchase_not_found"), ("created", 201, None), ("created", 201, None),
        ("refused", 422, "currency_mismatch")]
