"""What each member status refuses (issue 12, F3), the redemption rules of a partial capture (F7), and replays
that are the first answer byte for byte."""

from __future__ import annotations

import uuid

import pytest


async def _post(tenant, path, body=None, idem=None):
    return await tenant.client.post(path, json=body, headers=tenant.headers(idem=idem or uuid.uuid4().hex))


def _purchase(member, order):
    return {"member_id": member, "order_id": order, "currency": "EUR", "total": "10.00",
            "lines": [{"sku": "X", "quantity": 1, "unit_price": "10.00"}]}


async def _entries(db, tenant) -> int:
    return int(await db.fetchval("SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id))


async def _prepared(tenant, member):
    """A funded member with an open hold and a redemption, made while active."""
    await tenant.member(member)
    assert (await tenant.adjust(member, 1000)).status_code == 201
    hold = (await _post(tenant, "/v1/holds", {"member_id": member, "points": 100})).json()["hold"]["id"]
    redemption = (await _post(tenant, "/v1/redemptions", {"member_id": member, "points": 50})).json()
    assert (await _post(tenant, "/v1/purchases", _purchase(member, f"{member}-o1"))).status_code == 201
    return hold, redemption["redemption"]["id"]


@pytest.mark.parametrize("status", ["suspended", "closed"])
async def test_what_each_status_refuses(tenant, db, status):
    member = f"st-{status}"
    hold, redemption = await _prepared(tenant, member)
    await tenant.member(member, status=status)
    refused = "member_suspended" if status == "suspended" else "member_closed"
    before = await _entries(db, tenant)
    # spending is refused in both states, and writes nothing
    for path, body in (("/v1/redemptions", {"member_id": member, "points": 10}),
                       ("/v1/holds", {"member_id": member, "points": 10}),
                       (f"/v1/holds/{hold}/capture", None)):
        r = await _post(tenant, path, body)
        assert r.status_code == 409 and r.json()["code"] == refused, (path, r.text)
    assert await _entries(db, tenant) == before
    # earning: a suspended member still earns, a closed one does not
    purchase = await _post(tenant, "/v1/purchases", _purchase(member, f"{member}-o2"))
    event_rules = await tenant.client.put("/v1/program/earn-rules", headers=tenant.headers(), json={
        "base": {"points_per_unit": "1"}, "events": [{"name": "survey", "points": 5}]})
    assert event_rules.status_code == 201
    event = await _post(tenant, "/v1/events", {"member_id": member, "event_id": f"{member}-e", "name": "survey"})
    if status == "suspended":
        assert (purchase.status_code, event.status_code) == (201, 201)
    else:
        assert purchase.status_code == 409 and purchase.json()["code"] == "member_closed"
        assert event.status_code == 409 and event.json()["code"] == "member_closed"
    # giving back and the admin's corrections always work: void, refund, return, adjustments both ways
    assert (await _post(tenant, f"/v1/holds/{hold}/void")).status_code == 200
    assert (await _post(tenant, f"/v1/redemptions/{redemption}/refunds", {"points": 20})).status_code == 201
    r = await _post(tenant, f"/v1/purchases/{member}-o1/returns", {"return_id": "r1", "amount": "5.00"})
    assert r.status_code == 201, r.text
    assert (await tenant.adjust(member, 5)).status_code == 201
    assert (await tenant.adjust(member, -5)).status_code == 201
    # reactivated: spending works again
    await tenant.member(member, status="active")
    assert (await _post(tenant, "/v1/redemptions", {"member_id": member, "points": 10})).status_code == 201
    assert (await tenant.verify())["ok"]


async def test_a_partial_capture_follows_the_redemption_rules(tenant):
    await tenant.member("cap")
    assert (await tenant.adjust("cap", 5000)).status_code == 201
    r = await tenant.client.patch("/v1/program", headers=tenant.headers(),
                                  json={"settings": {"min_redeem_points": 500, "redeem_increment": 100}})
    assert r.status_code == 200
    hold = (await _post(tenant, "/v1/holds", {"member_id": "cap", "points": 1000})).json()["hold"]["id"]
    for points in (150, 400, 650):  # below the minimum, not in steps of 100
        r = await _post(tenant, f"/v1/holds/{hold}/capture", {"points": points})
        assert r.status_code == 422 and r.json()["code"] == "invalid_redeem_amount", r.text
    r = await _post(tenant, f"/v1/holds/{hold}/capture", {"points": 0})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"  # to capture nothing, void
    assert (await tenant.balance("cap"))["held"] == 1000  # nothing of it was written
    r = await _post(tenant, f"/v1/holds/{hold}/capture", {"points": 600})
    assert r.status_code == 200 and r.json()["redemption"]["points"] == 600
    assert (await tenant.balance("cap"))["available"] == 4400


async def test_a_replay_is_the_first_answer_byte_for_byte(tenant):
    await tenant.member("bytes")
    first = await tenant.adjust("bytes", 7, idem="k-bytes", metadata={"z": 1, "a": {"y": [3, 2], "b": None}})
    again = await tenant.adjust("bytes", 7, idem="k-bytes", metadata={"z": 1, "a": {"y": [3, 2], "b": None}})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    refused = await tenant.adjust("bytes", -100, idem="k-refused")
    retried = await tenant.adjust("bytes", -100, idem="k-refused")
    assert refused.status_code == retried.status_code == 422
    assert retried.content == refused.content  # the refusal too, request id included
