"""Earning through HTTP: rule versions, purchases, pending points, returns, events."""

from __future__ import annotations

import asyncio
import uuid

STARBUCKS_LIKE = {
    "base": {"points_per_unit": "2"},
    "rules": [
        {"id": "beans-3x", "kind": "multiplier", "factor": "3", "priority": 10,
         "conditions": {"categories": ["coffee-beans"]}},
        {"id": "double-tuesday", "kind": "multiplier", "factor": "2", "priority": 20,
         "conditions": {"days_of_week": [2]}},
        {"id": "birthday", "kind": "birthday_bonus", "points": 50},
        {"id": "big-basket", "kind": "threshold_bonus", "points": 100, "min_total": "25"},
    ],
    "exclusions": {"categories": ["gift-cards"]},
    "events": [
        {"name": "survey_completed", "points": 50, "max_per_day": 1},
        {"name": "social_share", "points": 10, "once": True},
    ],
}


async def _rules(tenant, rules, effective_from="2020-01-01T00:00:00Z"):
    r = await tenant.client.put("/v1/program/earn-rules", json={**rules, "effective_from": effective_from},
                                headers=tenant.headers())
    assert r.status_code == 201, r.text
    return r.json()


async def _settings(tenant, **settings):
    r = await tenant.client.patch("/v1/program", json={"settings": settings}, headers=tenant.headers())
    assert r.status_code == 200, r.text


def _purchase(member, order, lines, occurred_at="2026-11-17T09:00:00Z", **extra):
    total = sum(float(line["unit_price"]) * line.get("quantity", 1) for line in lines)
    return {"member_id": member, "order_id": order, "occurred_at": occurred_at, "currency": "EUR",
            "total": f"{total:.2f}", "channel": "pos", "lines": lines, **extra}


async def _post(tenant, body, idem=None, key=None, path="/v1/purchases"):
    return await tenant.client.post(path, json=body, headers=tenant.headers(key, idem=idem or uuid.uuid4().hex))


BASKET = [
    {"sku": "BEANS-1KG", "category": "coffee-beans", "quantity": 1, "unit_price": "20.00"},
    {"sku": "LATTE", "category": "drinks", "quantity": 2, "unit_price": "4.50"},
    {"sku": "GIFT-25", "category": "gift-cards", "quantity": 1, "unit_price": "25.00"},
]


async def test_rules_combine_exactly_with_a_breakdown_that_sums(tenant):
    await _rules(tenant, STARBUCKS_LIKE)
    await tenant.member("ada", birthday="1990-11-17")
    # Tuesday 17 Nov 2026, 10:00 in Europe/Berlin; Ada's birthday
    r = await _post(tenant, _purchase("ada", "o-1", BASKET))
    assert r.status_code == 201, r.text
    body = r.json()
    purchase = body["purchase"]
    award = purchase["award"]
    beans, latte, gift = award["lines"]
    # beans: 20.00 * 2 = 40, x3 category = 120, x2 Tuesday = 240
    assert beans["base_points"] == 40 and beans["points"] == 240
    assert [(c["rule_id"], c["points"]) for c in beans["contributions"]] == [("beans-3x", 80), ("double-tuesday", 120)]
    # latte: 9.00 * 2 = 18, x2 Tuesday = 36; gift cards never earn
    assert latte["points"] == 36 and gift["points"] == 0 and gift["excluded_by"] == "category"
    assert sorted((b["rule_id"], b["points"]) for b in award["order_bonuses"]) == [("big-basket", 100),
                                                                                  ("birthday", 50)]
    assert purchase["points"] == 426
    assert sum(line["points"] for line in award["lines"]) + sum(b["points"] for b in award["order_bonuses"]) == 426
    assert purchase["status"] == "available" and purchase["rule_version"] == 1
    assert body["balance"]["available"] == 426 and body["balance"]["lifetime_earned"] == 426
    got = await tenant.client.get("/v1/purchases/o-1", headers=tenant.headers())
    assert got.status_code == 200 and got.json()["award"] == award
    assert (await tenant.verify())["ok"]


async def test_quote_is_the_same_evaluation_and_writes_nothing(tenant, db):
    await _rules(tenant, STARBUCKS_LIKE)
    await tenant.member("bob")
    redeem_key = await tenant.key("redeem")
    r = await tenant.client.post("/v1/purchases/quote", json=_purchase("bob", "q-1", BASKET),
                                 headers=tenant.headers(redeem_key))
    assert r.status_code == 200, r.text
    assert r.json()["points"] == 376  # no birthday bonus for Bob
    posted = await _post(tenant, _purchase("bob", "q-1", BASKET))
    assert posted.json()["purchase"]["points"] == 376
    r = await tenant.client.post("/v1/purchases/quote", json=_purchase("newcomer", "q-2", BASKET),
                                 headers=tenant.headers(redeem_key))
    assert r.status_code == 200 and r.json()["points"] == 376
    assert await db.fetchval("SELECT count(*) FROM members WHERE program_id = $1 AND external_id = 'newcomer'",
                             tenant.program_id) == 0


async def test_caps_and_exclusions_hold(tenant):
    await _rules(tenant, {"base": {"points_per_unit": "1"}, "exclusions": {"skus": ["TOBACCO"]},
                          "caps": {"per_order": 100, "per_member_per_day": 150}})
    lines = [{"sku": "TV", "quantity": 1, "unit_price": "500.00"}, {"sku": "TOBACCO", "quantity": 1,
                                                                    "unit_price": "10.00"}]
    first = (await _post(tenant, _purchase("cap", "c-1", lines))).json()["purchase"]
    assert first["points"] == 100
    assert first["award"]["capped"][0]["cap"] == "per_order"
    assert first["award"]["capped"][0]["points_removed"] == 400
    assert first["award"]["lines"][1]["excluded_by"] == "sku"
    second = (await _post(tenant, _purchase("cap", "c-2", lines, occurred_at="2026-11-17T15:00:00Z"))).json()
    assert second["purchase"]["points"] == 50  # 150 per day, 100 already earned that day
    third = (await _post(tenant, _purchase("cap", "c-3", lines, occurred_at="2026-11-18T09:00:00Z"))).json()
    assert third["purchase"]["points"] == 100  # a new local day
    assert third["balance"]["available"] == 250


async def test_concurrent_purchases_never_exceed_a_daily_cap(tenant):
    await _rules(tenant, {"base": {"points_per_unit": "1"}, "caps": {"per_member_per_day": 100}})
    await tenant.member("rush")
    lines = [{"sku": "X", "quantity": 1, "unit_price": "30.00"}]
    responses = await asyncio.gather(*[_post(tenant, _purchase("rush", f"r-{i}", lines)) for i in range(10)])
    assert all(r.status_code == 201 for r in responses)
    assert sum(r.json()["purchase"]["points"] for r in responses) == 100
    assert (await tenant.balance("rush"))["available"] == 100


async def test_a_rule_change_never_alters_earlier_purchases(tenant):
    await _rules(tenant, {"base": {"points_per_unit": "1"}}, effective_from="2026-01-01T00:00:00Z")
    await _rules(tenant, {"base": {"points_per_unit": "10"}}, effective_from="2026-11-20T00:00:00Z")
    await _rules(tenant, {"base": {"points_per_unit": "100"}}, effective_from="2030-01-01T00:00:00Z")
    lines = [{"sku": "X", "quantity": 1, "unit_price": "10.00"}]
    # posted late: it gets the rules of its own day, not today's
    before = (await _post(tenant, _purchase("v", "v-1", lines, occurred_at="2026-11-19T22:00:00Z"))).json()
    after = (await _post(tenant, _purchase("v", "v-2", lines, occurred_at="2026-11-20T00:00:00Z"))).json()
    now = (await _post(tenant, _purchase("v", "v-3", lines, occurred_at=None))).json()
    early = await _post(tenant, _purchase("v", "v-0", lines, occurred_at="2025-06-01T00:00:00Z"))
    assert (before["purchase"]["points"], before["purchase"]["rule_version"]) == (10, 1)
    assert (after["purchase"]["points"], after["purchase"]["rule_version"]) == (100, 2)
    assert (now["purchase"]["points"], now["purchase"]["rule_version"]) == (100, 2)  # v3 is not in force yet
    # before the program's first rules: refused (issue 12 F2); version 0 never applies to a program with rules
    assert early.status_code == 422 and early.json()["code"] == "occurred_at_too_old"
    versions = (await tenant.client.get("/v1/program/earn-rules/versions", headers=tenant.headers())).json()
    assert [v["version"] for v in versions["data"]] == [1, 2, 3]
    current = (await tenant.client.get("/v1/program/earn-rules", headers=tenant.headers())).json()
    assert current["version"] == 2
    future = await _post(tenant, _purchase("v", "v-9", lines, occurred_at="2030-01-02T00:00:00Z"))
    assert future.status_code == 422


async def test_order_id_replay_and_conflict(tenant):
    lines = [{"sku": "X", "quantity": 1, "unit_price": "10.00"}]
    body = _purchase("ord", "same-order", lines)
    first = await _post(tenant, body, idem="pos-1")
    retry = await _post(tenant, body, idem="pos-2")  # a POS retry with a fresh key
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["replayed"] is True and retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["purchase"] == first.json()["purchase"]
    other = await _post(tenant, {**body, "total": "11.00"}, idem="pos-3")
    assert other.status_code == 409 and other.json()["code"] == "order_already_posted"
    assert (await tenant.balance("ord"))["available"] == 10


async def test_concurrent_retries_of_one_order_award_once(tenant):
    lines = [{"sku": "X", "quantity": 2, "unit_price": "10.00"}]
    body = _purchase("dup", "dup-order", lines)
    responses = await asyncio.gather(*[_post(tenant, body) for _ in range(20)])
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({str(r.json()["purchase"]) for r in responses}) == 1
    assert (await tenant.balance("dup"))["available"] == 20
    assert (await tenant.verify())["ok"]


async def test_unknown_members_enrol_unless_the_program_forbids_it(tenant):
    lines = [{"sku": "X", "quantity": 1, "unit_price": "5.00"}]
    assert (await _post(tenant, _purchase("walk-in", "e-1", lines))).status_code == 201
    await _settings(tenant, enrol_on_purchase=False)
    r = await _post(tenant, _purchase("stranger", "e-2", lines))
    assert r.status_code == 404 and r.json()["code"] == "member_not_found"


async def test_invalid_purchases_are_422_and_write_nothing(tenant, db):
    good = _purchase("bad", "b-1", [{"sku": "X", "quantity": 1, "unit_price": "5.00"}])
    cases = [
        ({**good, "currency": "USD"}, "currency_mismatch"),
        ({**good, "total": "5.001"}, "validation_error"),
        ({**good, "lines": [{"sku": "X", "quantity": 0, "unit_price": "5.00"}]}, "validation_error"),
        ({**good, "lines": [{"sku": "X", "quantity": 1, "unit_price": "-5.00"}]}, "validation_error"),
        ({**good, "lines": []}, "validation_error"),
        ({**good, "total": "NaN"}, "validation_error"),
        ({**good, "occurred_at": "2026-11-24T09:00:00"}, "validation_error"),
        ({**good, "channel": "fax"}, "validation_error"),
    ]
    for body, code in cases:
        r = await _post(tenant, body)
        assert r.status_code == 422 and r.json()["code"] == code, (body, r.text)
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE program_id = $1", tenant.program_id) == 0
    r = await tenant.client.put("/v1/program/earn-rules", json={"base": {"points_per_unit": "-1"}},
                                headers=tenant.headers())
    assert r.status_code == 422
    r = await tenant.client.put("/v1/program/earn-rules", json={"base": {"points_per_unit": "1"}, "rules": [
        {"id": "x", "kind": "multiplier"}]}, headers=tenant.headers())
    assert r.status_code == 422


async def test_pending_points_become_available_at_read_time_and_by_the_job(tenant, db):
    from app.earning.service import activate_due_pending

    await _settings(tenant, pending_days=30)
    lines = [{"sku": "X", "quantity": 1, "unit_price": "40.00"}]
    r = await _post(tenant, _purchase("pend", "p-1", lines, occurred_at=None))
    body = r.json()
    assert body["purchase"]["status"] == "pending"
    assert (body["balance"]["pending"], body["balance"]["available"]) == (40, 0)
    # pending points cannot be spent
    spend = await tenant.client.post("/v1/redemptions", json={"member_id": "pend", "points": 10},
                                     headers=tenant.headers(idem=uuid.uuid4().hex))
    assert spend.status_code == 422
    # a purchase posted late, after its window, is available at once
    late = await _post(tenant, _purchase("pend", "p-0", lines, occurred_at="2020-01-01T10:00:00Z"))
    assert late.json()["purchase"]["status"] == "available"
    # the window of p-1 passes: reads show it available before any job runs
    await db.execute("UPDATE lots SET available_at = now() - interval '1 second' "
                     "WHERE entry_id = ledger.row_id('ent', $1)",
                     body["purchase"]["entry_id"])
    balance = await tenant.balance("pend")
    assert (balance["pending"], balance["available"]) == (0, 80)
    assert (await tenant.client.get("/v1/purchases/p-1", headers=tenant.headers())).json()["status"] == "available"
    assert await activate_due_pending(db) >= 40
    assert await activate_due_pending(db, program_id=tenant.program_id) == 0  # never twice
    balance = await tenant.balance("pend")
    assert (balance["pending"], balance["available"]) == (0, 80)
    kinds = [e["kind"] for e in (await tenant.client.get("/v1/members/pend/activity",
                                                         headers=tenant.headers())).json()["data"]]
    assert kinds.count("activate") == 1
    assert (await tenant.verify())["ok"]


async def test_due_pending_points_are_spendable_before_the_job(tenant, db):
    await _settings(tenant, pending_days=14)
    r = await _post(tenant, _purchase("pend2", "p2", [{"sku": "X", "quantity": 1, "unit_price": "50.00"}],
                                      occurred_at=None))
    await db.execute("UPDATE lots SET available_at = now() - interval '1 second' "
                     "WHERE entry_id = ledger.row_id('ent', $1)",
                     r.json()["purchase"]["entry_id"])
    spend = await tenant.client.post("/v1/redemptions", json={"member_id": "pend2", "points": 50},
                                     headers=tenant.headers(idem=uuid.uuid4().hex))
    assert spend.status_code == 201, spend.text
    assert (await tenant.verify())["ok"]


RETURN_RULES = {"base": {"points_per_unit": "2"},
                "rules": [{"id": "threshold", "kind": "threshold_bonus", "points": 30, "min_total": "40"}]}
RETURN_LINES = [{"sku": "A", "quantity": 3, "unit_price": "10.00"}, {"sku": "B", "quantity": 1, "unit_price": "20.00"}]


async def _return(tenant, order, body, idem=None):
    return await tenant.client.post(f"/v1/purchases/{order}/returns", json=body,
                                    headers=tenant.headers(idem=idem or uuid.uuid4().hex))


async def test_partial_returns_claw_back_exactly_and_over_returns_are_refused(tenant):
    await _rules(tenant, RETURN_RULES)
    r = await _post(tenant, _purchase("ret", "ret-1", RETURN_LINES))
    assert r.json()["purchase"]["points"] == 130  # 60 + 40 + threshold 30
    one = await _return(tenant, "ret-1", {"return_id": "r1", "lines": [{"sku": "A", "quantity": 1}]})
    assert one.status_code == 201, one.text
    assert one.json()["points"] == 20  # kept 40.00 >= 40: the threshold bonus stays
    two = await _return(tenant, "ret-1", {"return_id": "r2", "lines": [{"sku": "A", "quantity": 1}]})
    assert two.json()["points"] == 50  # 20, and the threshold bonus (kept 30.00 < 40)
    three = await _return(tenant, "ret-1", {"return_id": "r3", "lines": [{"sku": "B", "quantity": 1}]})
    assert three.json()["points"] == 40
    assert three.json()["balance"]["available"] == 20
    over = await _return(tenant, "ret-1", {"return_id": "r4", "lines": [{"sku": "A", "quantity": 2}]})
    assert over.status_code == 422
    replay = await _return(tenant, "ret-1", {"return_id": "r3", "lines": [{"sku": "B", "quantity": 1}]})
    assert replay.status_code == 200 and replay.json()["replayed"] is True and replay.json()["points"] == 40
    conflict = await _return(tenant, "ret-1", {"return_id": "r3", "lines": [{"sku": "A", "quantity": 1}]})
    assert conflict.status_code == 409 and conflict.json()["code"] == "return_already_posted"
    last = await _return(tenant, "ret-1", {"return_id": "r5", "lines": [{"sku": "A", "quantity": 1}]})
    assert last.json()["points"] == 20 and last.json()["balance"]["available"] == 0
    purchase = (await tenant.client.get("/v1/purchases/ret-1", headers=tenant.headers())).json()
    assert purchase["clawed_back_points"] == 130 and len(purchase["returns"]) == 4
    assert (await tenant.verify())["ok"]


async def test_amount_returns_and_unknown_purchases(tenant, other_tenant):
    await _rules(tenant, RETURN_RULES)
    await _post(tenant, _purchase("ret2", "ret-2", RETURN_LINES))
    r = await _return(tenant, "ret-2", {"return_id": "a1", "amount": "25.00"})
    assert r.status_code == 201 and r.json()["points"] > 0
    r = await _return(tenant, "ret-2", {"return_id": "a2", "amount": "26.00"})
    assert r.status_code == 422  # only 25.00 left to return
    r = await _return(tenant, "ret-2", {"return_id": "a3"})
    assert r.status_code == 422
    r = await _return(tenant, "nope", {"return_id": "x", "amount": "1.00"})
    assert r.status_code == 404 and r.json()["code"] == "purchase_not_found"
    r = await _return(other_tenant, "ret-2", {"return_id": "x", "amount": "1.00"})
    assert r.status_code == 404
    r = await other_tenant.client.get("/v1/purchases/ret-2", headers=other_tenant.headers())
    assert r.status_code == 404


async def test_returns_take_pending_points_first(tenant):
    await _settings(tenant, pending_days=30)
    await _post(tenant, _purchase("rp", "rp-1", [{"sku": "A", "quantity": 2, "unit_price": "10.00"}],
                                  occurred_at=None))
    r = await _return(tenant, "rp-1", {"return_id": "x", "lines": [{"sku": "A", "quantity": 1}]})
    assert r.json()["points"] == 10
    assert (r.json()["balance"]["pending"], r.json()["balance"]["available"]) == (10, 0)
    assert (await tenant.verify())["ok"]


async def test_negative_balance_on_return_allow_then_repay(tenant):
    await _post(tenant, _purchase("neg", "n-1", [{"sku": "A", "quantity": 1, "unit_price": "100.00"}]))
    await tenant.client.post("/v1/redemptions", json={"member_id": "neg", "points": 80},
                             headers=tenant.headers(idem=uuid.uuid4().hex))
    r = await _return(tenant, "n-1", {"return_id": "all", "lines": [{"sku": "A", "quantity": 1}]})
    assert r.json()["points"] == 100 and r.json()["shortfall"] == 0
    assert r.json()["balance"]["available"] == -80
    assert (await tenant.verify())["ok"]
    r = await _post(tenant, _purchase("neg", "n-2", [{"sku": "A", "quantity": 1, "unit_price": "100.00"}]))
    assert r.json()["balance"]["available"] == 20  # the new points paid the debt first
    spend = await tenant.client.post("/v1/redemptions", json={"member_id": "neg", "points": 20},
                                     headers=tenant.headers(idem=uuid.uuid4().hex))
    assert spend.status_code == 201
    assert (await tenant.verify())["ok"]


async def test_negative_balance_on_return_clamp(tenant):
    await _settings(tenant, negative_balance_on_return="clamp")
    await _post(tenant, _purchase("clamp", "cl-1", [{"sku": "A", "quantity": 1, "unit_price": "100.00"}]))
    await tenant.client.post("/v1/redemptions", json={"member_id": "clamp", "points": 80},
                             headers=tenant.headers(idem=uuid.uuid4().hex))
    r = await _return(tenant, "cl-1", {"return_id": "all", "lines": [{"sku": "A", "quantity": 1}]})
    assert (r.json()["points"], r.json()["shortfall"]) == (20, 80)
    assert r.json()["balance"]["available"] == 0
    entries = (await tenant.client.get("/v1/members/clamp/activity", headers=tenant.headers())).json()["data"]
    assert entries[0]["kind"] == "clawback" and entries[0]["metadata"]["shortfall"] == 80
    assert (await tenant.verify())["ok"]


async def test_custom_events_with_limits(tenant):
    await _rules(tenant, STARBUCKS_LIKE)
    await tenant.member("ev")

    async def event(name, event_id, occurred_at="2026-11-17T10:00:00Z"):
        return await tenant.client.post("/v1/events", json={"member_id": "ev", "event_id": event_id, "name": name,
                                                            "occurred_at": occurred_at},
                                        headers=tenant.headers(idem=uuid.uuid4().hex))

    first = await event("survey_completed", "s-1")
    assert first.status_code == 201 and first.json()["points"] == 50
    second = await event("survey_completed", "s-2", "2026-11-17T18:00:00Z")
    assert second.json()["points"] == 0 and second.json()["evaluation"]["limited_by"] == "day"
    next_day = await event("survey_completed", "s-3", "2026-11-18T10:00:00Z")
    assert next_day.json()["points"] == 50
    assert (await event("social_share", "sh-1")).json()["points"] == 10
    assert (await event("social_share", "sh-2", "2026-11-20T10:00:00Z")).json()["points"] == 0
    replay = await event("survey_completed", "s-1")
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    unknown = await event("moon_landing", "m-1")
    assert unknown.status_code == 422
    assert (await tenant.balance("ev"))["available"] == 110
    assert (await tenant.verify())["ok"]


async def test_purchase_answer_equals_what_reads_return_afterwards(tenant):
    """A purchase answers from what ledger_purchase returns (award, tier metric, balance in one round trip),
    not by reading back; with a tier crossed by this purchase the answer's tier is already the new one."""
    r = await tenant.client.put("/v1/program/tiers", headers=tenant.headers(), json={
        "tiers": [{"name": "Green", "threshold": "0"}, {"name": "Gold", "threshold": "60"}],
        "metric": "points", "window": {"kind": "rolling_months", "months": 12},
        "retention": {"kind": "end_of_next_year"}, "effective_from": "2020-01-01T00:00:00Z"})
    assert r.status_code == 201, r.text
    for order, expected_tier in (("ans-1", "Green"), ("ans-2", "Gold")):
        posted = await _post(tenant, _purchase("ans", order, BASKET, occurred_at=None))
        assert posted.status_code == 201, posted.text
        got = await tenant.client.get(f"/v1/purchases/{order}", headers=tenant.headers())
        assert posted.json()["purchase"] == got.json()
        assert posted.json()["balance"] == await tenant.balance("ans")
        assert posted.json()["balance"]["tier"] == expected_tier


# --- issue 12 F4: client mistakes are 4xx, never 500 -----------------------------------------------------------


async def test_one_event_id_posted_concurrently_for_different_members_is_one_201_and_409s(tenant, db):
    await _rules(tenant, {"base": {"points_per_unit": "1"}, "events": [{"name": "visit", "points": 5}]})
    for round_ in range(5):
        answers = await asyncio.gather(*[
            tenant.client.post("/v1/events", json={"member_id": f"race-{round_}-{i}", "event_id": f"visit-{round_}",
                                                   "name": "visit"},
                               headers=tenant.headers(idem=uuid.uuid4().hex))
            for i in range(4)])
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201, 409, 409, 409], [r.text for r in answers]
        assert all(r.json()["code"] == "external_ref_conflict" for r in answers if r.status_code == 409)
        winner = next(r for r in answers if r.status_code == 201).json()
        rows = await db.fetch("SELECT m.external_id FROM member_events e JOIN members m ON m.id = e.member_id "
                              "WHERE e.program_id = $1 AND e.event_id = $2", tenant.program_id, f"visit-{round_}")
        assert [r["external_id"] for r in rows] == [winner["member_id"]]
    # the same member's concurrent duplicates replay
    answers = await asyncio.gather(*[
        tenant.client.post("/v1/events", json={"member_id": "race-same", "event_id": "visit-same", "name": "visit"},
                           headers=tenant.headers(idem=uuid.uuid4().hex)) for _ in range(4)])
    assert sorted(r.status_code for r in answers) == [200, 200, 200, 201]
    assert (await tenant.balance("race-same"))["available"] == 5
    assert (await tenant.verify())["ok"]


async def test_paid_with_points_above_the_total_is_422_naming_the_field(tenant, db):
    body = _purchase("pwp", "pwp-1", [{"sku": "A", "quantity": 1, "unit_price": "10.00"}], paid_with_points="10.01")
    for path in ("/v1/purchases", "/v1/purchases/quote"):
        r = await _post(tenant, body, path=path)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
        assert ["body", "paid_with_points"] in [e["loc"] for e in r.json()["errors"]]
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE program_id = $1", tenant.program_id) == 0
    r = await _post(tenant, {**body, "paid_with_points": "10.00"})
    assert r.status_code == 201 and r.json()["purchase"]["points"] == 0


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


async def test_free_form_json_nested_beyond_32_levels_is_422_everywhere(tenant, db):
    """Metadata 255 levels deep used to be a 500 (the answer could not be serialised)."""
    await _rules(tenant, {"base": {"points_per_unit": "1"}, "events": [{"name": "deep", "points": 1}]})
    await tenant.member("deep-m")
    await tenant.adjust("deep-m", 100)
    before = await db.fetchval("SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id)
    for depth in (33, 100, 255, 300, 900):
        deep = _nested(depth)
        cases = [
            ("POST", "/v1/events", {"member_id": "deep-m", "event_id": f"deep-{depth}", "name": "deep",
                                    "metadata": deep}),
            ("POST", "/v1/adjustments", {"member_id": "deep-m", "points": 1, "reason": "x", "metadata": deep}),
            ("POST", "/v1/redemptions", {"member_id": "deep-m", "points": 1, "metadata": deep}),
            ("PUT", "/v1/members/deep-m", {"attributes": deep}),
            ("PATCH", "/v1/program", {"settings": deep}),
        ]
        for method, path, body in cases:
            r = await tenant.client.request(method, path, json=body, headers=tenant.headers(idem=uuid.uuid4().hex))
            assert r.status_code == 422 and r.json()["code"] == "validation_error", (depth, path, r.text[:300])
            assert "levels deep" in r.text
    assert await db.fetchval("SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id) == before
    # 32 levels is fine, and comes back as sent
    ok = await tenant.client.post("/v1/events", json={"member_id": "deep-m", "event_id": "deep-ok", "name": "deep",
                                                      "metadata": _nested(32)},
                                  headers=tenant.headers(idem=uuid.uuid4().hex))
    assert ok.status_code == 201, ok.text
    entry = await tenant.client.get(f"/v1/entries/{ok.json()['entry_id']}", headers=tenant.headers())
    from app.json_limits import json_depth

    assert entry.json()["metadata"]["event"] == "deep" and json_depth(entry.json()["metadata"]) == 32


def test_json_depth_counts_levels_iteratively():
    from app.json_limits import json_depth

    assert (json_depth(1), json_depth({}), json_depth({"a": []}), json_depth([[[]]])) == (0, 1, 2, 3)
    assert json_depth(_nested(100_000)) == 100_000  # no recursion


# --- issue 12 F9: every order id posted can be read back ---------------------------------------------------------


async def test_order_ids_that_could_not_be_read_back_are_refused_and_the_rest_read_back(tenant, db):
    from urllib.parse import quote

    lines = [{"sku": "A", "quantity": 1, "unit_price": "1.00"}]
    for bad in ("a/b", "/", "a\\b", ".", "..", "a\nb", "a\x00b", "tab\there"):
        r = await _post(tenant, _purchase("oid", bad, lines))
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (bad, r.text)
        assert ["body", "order_id"] in [e["loc"] for e in r.json()["errors"]], bad
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE program_id = $1", tenant.program_id) == 0
    for good in ("a%2Fb", "ord 7 ", "...", "a.b", "caf\u00e9", "#1?x=2", "a+b&c", "%"):
        r = await _post(tenant, _purchase("oid", good, lines))
        assert r.status_code == 201, (good, r.text)
        got = await tenant.client.get(f"/v1/purchases/{quote(good, safe='')}", headers=tenant.headers())
        assert got.status_code == 200 and got.json()["order_id"] == good, (good, got.text)
