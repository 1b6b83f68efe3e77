"""Adjustments, lots and reversals through the HTTP API."""

from __future__ import annotations

import uuid

import pytest


async def _lots(db, tenant, member_id):
    return [dict(r) for r in await db.fetch(
        "SELECT l.points, l.remaining, l.expires_at FROM lots l JOIN members m ON m.id = l.member_id "
        "WHERE m.program_id = $1 AND m.external_id = $2 ORDER BY l.id", tenant.program_id, member_id,
    )]


async def test_credit_then_debit_updates_balance_and_history(tenant):
    await tenant.member("a1")
    r = await tenant.adjust("a1", 250, reason="welcome bonus")
    assert r.status_code == 201
    body = r.json()
    assert body["entry"]["kind"] == "adjust"
    assert body["entry"]["description"] == "welcome bonus"
    assert body["entry"]["postings"] == [
        {"account": "available", "points": 250}, {"account": "adjustments", "points": -250},
    ]
    assert body["balance"] == {"member_id": "a1", "available": 250, "pending": 0, "held": 0,
                               "lifetime_earned": 250, "lifetime_redeemed": 0, "next_expiry_at": None,
                               "next_expiry_points": 0, "tier": None}
    r = await tenant.adjust("a1", -50)
    assert r.status_code == 201
    assert r.json()["balance"]["available"] == 200
    r = await tenant.client.get(f"/v1/entries/{body['entry']['id']}", headers=tenant.headers())
    assert r.status_code == 200 and r.json()["id"] == body["entry"]["id"]
    assert (await tenant.verify())["ok"]


async def test_debit_beyond_available_is_refused_and_writes_nothing(tenant, db):
    await tenant.member("a2")
    await tenant.adjust("a2", 30)
    r = await tenant.adjust("a2", -31)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "insufficient_points"
    assert r.json()["available"] == 30
    assert (await tenant.balance("a2"))["available"] == 30
    count = await db.fetchval("SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id)
    assert count == 1


async def test_debits_consume_lots_soonest_expiring_first(tenant, db):
    await tenant.member("fifo")
    await tenant.adjust("fifo", 100)  # never expires
    await tenant.adjust("fifo", 100, expires_at="2031-01-01T00:00:00Z")
    await tenant.adjust("fifo", 100, expires_at="2030-01-01T00:00:00Z")
    r = await tenant.adjust("fifo", -150)
    assert r.status_code == 201
    lots = await _lots(db, tenant, "fifo")
    assert [lot["remaining"] for lot in lots] == [100, 50, 0]
    r = await tenant.adjust("fifo", -100)
    lots = await _lots(db, tenant, "fifo")
    assert [lot["remaining"] for lot in lots] == [50, 0, 0]
    assert (await tenant.verify())["ok"]


async def test_reversing_a_debit_restores_the_original_lots(tenant, db):
    await tenant.member("rev")
    await tenant.adjust("rev", 100, expires_at="2030-01-01T00:00:00Z")
    await tenant.adjust("rev", 100, expires_at="2031-01-01T00:00:00Z")
    debit = (await tenant.adjust("rev", -150)).json()["entry"]["id"]
    r = await tenant.client.post(f"/v1/entries/{debit}/reverse", json={"reason": "refund"},
                                 headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["entry"]["kind"] == "reverse"
    assert body["entry"]["reverses_entry_id"] == debit
    assert body["balance"]["available"] == 200
    assert [lot["remaining"] for lot in await _lots(db, tenant, "rev")] == [100, 100]
    original = (await tenant.client.get(f"/v1/entries/{debit}", headers=tenant.headers())).json()
    assert original["reversed_by_entry_id"] == body["entry"]["id"]
    assert (await tenant.verify())["ok"]


async def test_reversing_a_credit_takes_its_own_lot_first(tenant, db):
    await tenant.member("rev2")
    await tenant.adjust("rev2", 100, expires_at="2030-01-01T00:00:00Z")
    credit = (await tenant.adjust("rev2", 60, expires_at="2035-01-01T00:00:00Z")).json()["entry"]["id"]
    r = await tenant.client.post(f"/v1/entries/{credit}/reverse", json={"reason": "mistake"},
                                 headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 201
    assert r.json()["balance"]["available"] == 100
    assert r.json()["balance"]["lifetime_earned"] == 100
    assert [lot["remaining"] for lot in await _lots(db, tenant, "rev2")] == [100, 0]


async def test_an_entry_is_reversed_once_and_a_reversal_is_not_reversible(tenant):
    await tenant.member("rev3")
    entry = (await tenant.adjust("rev3", 10)).json()["entry"]["id"]
    first = await tenant.client.post(f"/v1/entries/{entry}/reverse", json={"reason": "x"},
                                     headers=tenant.headers(idem="r1"))
    assert first.status_code == 201
    again = await tenant.client.post(f"/v1/entries/{entry}/reverse", json={"reason": "x"},
                                     headers=tenant.headers(idem="r2"))
    assert again.status_code == 409 and again.json()["code"] == "entry_already_reversed"
    rev_id = first.json()["entry"]["id"]
    r = await tenant.client.post(f"/v1/entries/{rev_id}/reverse", json={"reason": "x"},
                                 headers=tenant.headers(idem="r3"))
    assert r.status_code == 422 and r.json()["code"] == "entry_not_reversible"


async def test_reversing_a_spent_credit_is_refused(tenant):
    await tenant.member("rev4")
    entry = (await tenant.adjust("rev4", 100)).json()["entry"]["id"]
    await tenant.adjust("rev4", -80)
    r = await tenant.client.post(f"/v1/entries/{entry}/reverse", json={"reason": "x"},
                                 headers=tenant.headers(idem="r4"))
    assert r.status_code == 422
    assert r.json()["code"] == "insufficient_points" and r.json()["available"] == 20


async def test_external_ref_is_unique_per_program(tenant, other_tenant):
    for t in (tenant, other_tenant):
        await t.member("ext")
    assert (await tenant.adjust("ext", 5, external_ref="ticket-1")).status_code == 201
    r = await tenant.adjust("ext", 5, external_ref="ticket-1")
    assert r.status_code == 409 and r.json()["code"] == "external_ref_conflict"
    assert (await other_tenant.adjust("ext", 5, external_ref="ticket-1")).status_code == 201
    assert (await tenant.balance("ext"))["available"] == 5


async def test_unknown_member_is_404(tenant):
    r = await tenant.adjust("ghost", 5)
    assert r.status_code == 404 and r.json()["code"] == "member_not_found"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"points": 0}, "points"),
        ({"points": 2**63}, "points"),
        ({"points": -(2**63) - 1}, "points"),
        ({"points": 10**12 + 1}, "points"),
        ({"points": 1.5}, "points"),
        ({"points": "ten"}, "points"),
        ({"reason": ""}, "reason"),
        ({"occurred_at": "2026-01-01T10:00:00"}, "occurred_at"),
        ({"expires_at": "not a date"}, "expires_at"),
        ({"member_id": "has spaces"}, "member_id"),
        ({"unexpected": 1}, "unexpected"),
        ({"metadata": [1, 2]}, "metadata"),
    ],
)
async def test_invalid_adjustments_are_422_and_write_nothing(tenant, db, body, field):
    await tenant.member("val")
    payload = {"member_id": "val", "points": 5, "reason": "r", **body}
    r = await tenant.client.post("/v1/adjustments", json=payload, headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "validation_error"
    assert any(field in [str(x) for x in e["loc"]] for e in problem["errors"])
    assert await db.fetchval("SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id) == 0
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE program_id = $1", tenant.program_id) == 0


async def test_malformed_json_is_a_problem(tenant):
    r = await tenant.client.post(
        "/v1/adjustments", content=b'{"member_id": "x", ', headers={**tenant.headers(idem="m"),
                                                                   "content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["code"] == "malformed_request"


async def test_invalid_utf8_is_a_problem(tenant):
    r = await tenant.client.post(
        "/v1/adjustments", content=b'{"member_id": "\xff\xfe", "points": 1, "reason": "x"}',
        headers={**tenant.headers(idem="u"), "content-type": "application/json"},
    )
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_text_postgres_cannot_store_is_422_and_not_remembered(tenant):
    await tenant.member("nul")
    r = await tenant.adjust("nul", 5, idem="nul-key", reason="a\u0000b")
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert r.json().get("request_id")
    fixed = await tenant.adjust("nul", 5, idem="nul-key", reason="ab")
    assert fixed.status_code == 201  # the corrected request may reuse the key
    boolean = await tenant.client.post("/v1/adjustments", json={"member_id": "nul", "points": True, "reason": "x"},
                                       headers=tenant.headers(idem="bool"))
    assert boolean.status_code == 422


async def test_negative_balance_is_repaid_when_points_return_to_their_lots(tenant):
    """A void (and a refund, a released hold, a reversed debit) for a member in debt repays the debt first."""
    import uuid as _uuid

    await tenant.member("debt")
    await tenant.adjust("debt", 100)
    r = await tenant.client.post("/v1/purchases", json={
        "member_id": "debt", "order_id": "debt-1", "currency": "EUR", "total": "20.00",
        "lines": [{"sku": "X", "quantity": 1, "unit_price": "20.00"}]}, headers=tenant.headers(idem=_uuid.uuid4().hex))
    assert r.status_code == 201
    hold = (await tenant.client.post("/v1/holds", json={"member_id": "debt", "points": 100},
                                     headers=tenant.headers(idem=_uuid.uuid4().hex))).json()["hold"]
    await tenant.client.post("/v1/redemptions", json={"member_id": "debt", "points": 20},
                             headers=tenant.headers(idem=_uuid.uuid4().hex))
    ret = await tenant.client.post("/v1/purchases/debt-1/returns", json={"return_id": "all", "amount": "20.00"},
                                   headers=tenant.headers(idem=_uuid.uuid4().hex))
    assert ret.json()["balance"]["available"] == -20
    void = await tenant.client.post(f"/v1/holds/{hold['id']}/void", headers=tenant.headers(idem=_uuid.uuid4().hex))
    assert void.json()["balance"]["available"] == 80
    assert (await tenant.verify())["ok"]
