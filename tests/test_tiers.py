"""Tiers through HTTP and the jobs: upgrade on the crossing purchase, downgrade only after valid_until,
windows, manual assignment, multipliers, history; and a simulated year that still verifies."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")
LADDER = {
    "tiers": [
        {"name": "Green", "threshold": "0"},
        {"name": "Gold", "threshold": "300", "earn_multiplier": "1.5", "benefits": ["free refill"]},
        {"name": "Platinum", "threshold": "1000", "earn_multiplier": "2", "benefits": ["free refill", "lounge"]},
    ],
    "metric": "points",
    "window": {"kind": "rolling_months", "months": 12},
    "retention": {"kind": "end_of_next_year"},
    "downgrade": "to_qualifying",
}


async def _tiers(tenant, config=LADDER, effective_from="2020-01-01T00:00:00Z"):
    r = await tenant.client.put("/v1/program/tiers", json={**config, "effective_from": effective_from},
                                headers=tenant.headers())
    assert r.status_code == 201, r.text


async def _buy(tenant, member, amount, occurred_at=None, order=None):
    body = {"member_id": member, "order_id": order or uuid.uuid4().hex, "currency": "EUR", "total": amount,
            "lines": [{"sku": "X", "quantity": 1, "unit_price": amount}]}
    if occurred_at:
        body["occurred_at"] = occurred_at
    r = await tenant.client.post("/v1/purchases", json=body, headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 201, r.text
    return r.json()


async def _tier(tenant, member):
    r = await tenant.client.get(f"/v1/members/{member}/tier", headers=tenant.headers())
    assert r.status_code == 200, r.text
    return r.json()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_upgrade_on_the_crossing_purchase_and_multipliers_from_the_next(tenant):
    await _tiers(tenant)
    first = await _buy(tenant, "t1", "250.00")
    assert first["purchase"]["points"] == 250 and first["balance"]["tier"] == "Green"
    crossing = await _buy(tenant, "t1", "100.00")
    # the crossing purchase still earns as Green; the member is Gold at once
    assert crossing["purchase"]["points"] == 100
    assert crossing["balance"]["tier"] == "Gold"
    after = await _buy(tenant, "t1", "100.00")
    assert after["purchase"]["points"] == 150
    contributions = after["purchase"]["award"]["lines"][0]["contributions"]
    assert [(c["rule_id"], c["points"]) for c in contributions] == [("tier:Gold", 50)]
    info = await _tier(tenant, "t1")
    progress = info["progress"]
    assert progress["tier"] == "Gold" and progress["next_tier"] == "Platinum"
    assert progress["metric_value"] == "500" and progress["missing_to_next"] == "500"
    assert progress["needed_to_keep"] == "0" and progress["benefits"] == ["free refill"]
    year = datetime.now(BERLIN).year
    assert datetime.fromisoformat(progress["valid_until"]) == datetime(year + 2, 1, 1, tzinfo=BERLIN)
    assert [(h["from_tier"], h["to_tier"], h["reason"]) for h in reversed(info["history"])] == [
        (None, "Green", "initial"), ("Green", "Gold", "qualified")]
    member = (await tenant.client.get("/v1/members/t1", headers=tenant.headers())).json()
    assert member["tier"] == "Gold"


async def test_downgrade_only_after_valid_until(tenant, db):
    from app.tiers.service import evaluate_all

    await _tiers(tenant)
    await _buy(tenant, "t2", "400.00")
    assert (await _tier(tenant, "t2"))["progress"]["tier"] == "Gold"
    year = datetime.now(BERLIN).year
    # mid-December next year the rolling window no longer holds the purchase, but Gold holds through the end
    # of next year
    await evaluate_all(db, as_of=datetime(year + 1, 12, 15, tzinfo=BERLIN))
    state = await db.fetchrow("SELECT tier, valid_until FROM member_tiers t JOIN members m ON m.id = t.member_id "
                              "WHERE m.program_id = $1 AND m.external_id = 't2'", tenant.program_id)
    assert state["tier"] == "Gold"
    # rerunning changes nothing
    again = await evaluate_all(db, as_of=datetime(year + 1, 12, 15, tzinfo=BERLIN))
    rows = await db.fetch("SELECT * FROM tier_history h JOIN members m ON m.id = h.member_id "
                          "WHERE m.program_id = $1 AND m.external_id = 't2'", tenant.program_id)
    assert len(rows) == 1 and again.members >= 1  # straight to Gold on the first purchase, nothing since
    # at valid_until it drops to the qualifying tier
    await evaluate_all(db, as_of=datetime(year + 2, 1, 1, tzinfo=BERLIN))
    state = await db.fetchrow("SELECT tier FROM member_tiers t JOIN members m ON m.id = t.member_id "
                              "WHERE m.program_id = $1 AND m.external_id = 't2'", tenant.program_id)
    assert state["tier"] == "Green"
    history = (await _tier(tenant, "t2"))["history"]
    assert (history[0]["from_tier"], history[0]["to_tier"], history[0]["reason"], history[0]["source"]) == (
        "Gold", "Green", "lapsed", "evaluation")


async def test_one_step_downgrade(tenant, db):
    from app.tiers.service import evaluate_all

    await _tiers(tenant, {**LADDER, "downgrade": "one_step"})
    await _buy(tenant, "t3", "1200.00")
    assert (await _tier(tenant, "t3"))["progress"]["tier"] == "Platinum"
    year = datetime.now(BERLIN).year
    await evaluate_all(db, as_of=datetime(year + 2, 1, 1, tzinfo=BERLIN))
    assert (await tenant.balance("t3"))["tier"] == "Gold"


async def test_rolling_versus_calendar_windows(tenant, other_tenant):
    now = datetime.now(BERLIN)
    last_december = datetime(now.year - 1, 12, 15, 12, tzinfo=BERLIN)
    await _tiers(tenant)
    await _tiers(other_tenant, {**LADDER, "window": {"kind": "calendar_year"}})
    for t in (tenant, other_tenant):
        await _buy(t, "w", "250.00", _iso(last_december))
        await _buy(t, "w", "100.00")
    assert (await tenant.balance("w"))["tier"] == "Gold"        # rolling 12 months: 350
    assert (await other_tenant.balance("w"))["tier"] == "Green"  # this calendar year: 100
    assert (await _tier(other_tenant, "w"))["progress"]["metric_value"] == "100"


async def test_manual_assignment_holds_until_its_end(tenant, db):
    from app.tiers.service import evaluate_all

    await _tiers(tenant)
    await _buy(tenant, "vip", "10.00")
    until = datetime.now(BERLIN) + timedelta(days=90)
    r = await tenant.client.post("/v1/members/vip/tier", json={"tier": "Platinum", "until": _iso(until),
                                                              "reason": "CEO's guest"}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    assert r.json()["progress"]["tier"] == "Platinum"
    assert r.json()["history"][0]["reason"] == "manual" and r.json()["history"][0]["reference"] == "CEO's guest"
    await evaluate_all(db, as_of=until - timedelta(days=1))
    assert (await tenant.balance("vip"))["tier"] == "Platinum"
    await evaluate_all(db, as_of=until + timedelta(days=1))
    assert (await tenant.balance("vip"))["tier"] == "Green"
    bad = await tenant.client.post("/v1/members/vip/tier", json={"tier": "Diamond", "until": _iso(until),
                                                                "reason": "x"}, headers=tenant.headers())
    assert bad.status_code == 422
    reader = await tenant.key("read")
    denied = await tenant.client.post("/v1/members/vip/tier", json={"tier": "Gold", "until": _iso(until),
                                                                   "reason": "x"}, headers=tenant.headers(reader))
    assert denied.status_code == 403


async def test_tier_configuration_is_validated_and_versioned(tenant, other_tenant):
    bad = await tenant.client.put("/v1/program/tiers", json={**LADDER, "tiers": [{"name": "A", "threshold": "5"}]},
                                  headers=tenant.headers())
    assert bad.status_code == 422
    none = await tenant.client.get("/v1/program/tiers", headers=tenant.headers())
    assert none.status_code == 404
    await _tiers(tenant)
    got = await tenant.client.get("/v1/program/tiers", headers=tenant.headers())
    assert got.status_code == 200 and got.json()["version"] == 1
    no_tiers = await other_tenant.client.get("/v1/members/x/tier", headers=other_tenant.headers())
    assert no_tiers.status_code == 404
    await other_tenant.member("x")
    assert (await _tier(other_tenant, "x"))["configured"] is False


async def test_a_simulated_year_verifies(tenant, db):
    """Purchases, returns, redemptions, holds, expiry sweeps and tier evaluations, month by month."""
    from app.expiry.service import expire_due
    from app.tiers.service import evaluate_all

    await _tiers(tenant)
    r = await tenant.client.put("/v1/program/expiration-policy", json={
        "kind": "fixed", "months": 6, "effective_from": "2020-01-01T00:00:00Z"}, headers=tenant.headers())
    assert r.status_code == 201
    await tenant.client.patch("/v1/program", json={"settings": {"pending_days": 14}}, headers=tenant.headers())
    rng = random.Random(2026)
    members = [f"year-{i}" for i in range(3)]
    start = datetime.now(UTC) - timedelta(days=365)
    orders: list[str] = []
    for month in range(12):
        day = start + timedelta(days=30 * month)
        for m in members:
            for _ in range(rng.randint(1, 3)):
                order = uuid.uuid4().hex
                await _buy(tenant, m, f"{rng.randint(5, 120)}.00", _iso(day + timedelta(hours=rng.randint(0, 600))),
                           order=order)
                orders.append(order)
            if rng.random() < 0.5:
                await tenant.client.post("/v1/redemptions", json={"member_id": m, "points": rng.randint(1, 50)},
                                         headers=tenant.headers(idem=uuid.uuid4().hex))
        if orders and rng.random() < 0.6:
            await tenant.client.post(f"/v1/purchases/{rng.choice(orders)}/returns",
                                     json={"return_id": uuid.uuid4().hex, "amount": "1.00"},
                                     headers=tenant.headers(idem=uuid.uuid4().hex))
        await expire_due(db, as_of=day + timedelta(days=30))
        await evaluate_all(db, as_of=day + timedelta(days=30))
    report = await tenant.verify()
    assert report["ok"], report
    assert report["checked"]["entries"] > 50
    kinds = await db.fetch("SELECT DISTINCT kind FROM entries WHERE program_id = $1", tenant.program_id)
    assert {"earn", "expire", "redeem"} <= {k["kind"] for k in kinds}


async def test_returns_take_back_qualifying_line_points_only_and_quotes_use_the_tier(tenant):
    await _tiers(tenant)
    r = await tenant.client.put("/v1/program/earn-rules", json={
        "effective_from": "2020-01-01T00:00:00Z", "base": {"points_per_unit": "1"},
        "rules": [{"id": "big", "kind": "threshold_bonus", "points": 100, "min_total": "50"}]},
        headers=tenant.headers())
    assert r.status_code == 201
    bought = await _buy(tenant, "q", "60.00", order="q-1")
    assert bought["purchase"]["points"] == 160
    assert (await _tier(tenant, "q"))["progress"]["metric_value"] == "60"  # bonuses do not qualify
    ret = await tenant.client.post("/v1/purchases/q-1/returns", json={"return_id": "r", "amount": "20.00"},
                                   headers=tenant.headers(idem=uuid.uuid4().hex))
    assert ret.json()["points"] == 120  # 20 line points and the whole threshold bonus
    assert (await _tier(tenant, "q"))["progress"]["metric_value"] == "40"
    await _buy(tenant, "gold", "400.00")
    quote = await tenant.client.post("/v1/purchases/quote", json={
        "member_id": "gold", "currency": "EUR", "total": "20.00",
        "lines": [{"sku": "X", "quantity": 1, "unit_price": "20.00"}]}, headers=tenant.headers())
    assert quote.json()["points"] == 30  # Gold x1.5


# The tier metric's definition: every purchase of the window summed. The service reads it from daily totals
# (app/tiers/queries.METRICS); both must agree for any window, across UTC day edges and after returns.
METRIC_DEFINITION = """
SELECT m.member_id,
       coalesce(sum(CASE WHEN $4 THEN p.points - p.clawed_back_points
                         ELSE greatest(p.qualifying_points - p.qualifying_clawed_back, 0) END), 0) AS points,
       coalesce(sum(p.eligible_amount), 0) AS spend, count(p.id) AS purchases
FROM unnest($1::bigint[]) AS m(member_id)
LEFT JOIN purchases p ON p.member_id = m.member_id AND p.occurred_at >= $2 AND p.occurred_at <= $3
GROUP BY m.member_id
"""


async def test_metric_from_daily_totals_equals_the_sum_over_purchases(tenant, db):
    from app.tiers.queries import METRICS

    await _tiers(tenant)
    rules = {"base": {"points_per_unit": "1"}, "effective_from": "2020-01-01T00:00:00Z",
             "rules": [{"id": "big", "kind": "threshold_bonus", "points": 50, "min_total": "30"}]}
    r = await tenant.client.put("/v1/program/earn-rules", json=rules, headers=tenant.headers())
    assert r.status_code == 201, r.text
    rng = random.Random(7)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    moments = [midnight - timedelta(days=d, minutes=m) for d in (0, 1, 40, 200, 380) for m in (-1, 0, 1, 600)]
    moments = [m for m in moments if m <= datetime.now(UTC)]
    orders = []
    for i, moment in enumerate(moments):
        order = f"mt-{i}"
        price = "20.00" if i % 3 == 0 else "6.00"  # 2 x 20.00 earns the threshold bonus
        body = {"member_id": f"mt-{i % 2}", "order_id": order, "occurred_at": _iso(moment), "currency": "EUR",
                "total": "40.00" if i % 3 == 0 else "12.00",
                "lines": [{"sku": "A", "quantity": 2, "unit_price": price}]}
        r = await tenant.client.post("/v1/purchases", json=body, headers=tenant.headers(idem=uuid.uuid4().hex))
        assert r.status_code == 201, r.text
        orders.append(order)
    for order in rng.sample(orders, 5):  # returns change the totals of their purchase's day
        r = await tenant.client.post(f"/v1/purchases/{order}/returns",
                                     json={"return_id": "r1", "lines": [{"sku": "A", "quantity": 1}]},
                                     headers=tenant.headers(idem=uuid.uuid4().hex))
        assert r.status_code == 201, r.text
    members = [r["id"] for r in await db.fetch(
        "SELECT id FROM members WHERE program_id = $1 ORDER BY id", tenant.program_id)]
    edges = sorted({*moments, *(m + timedelta(microseconds=1) for m in moments),
                    *(m - timedelta(microseconds=1) for m in moments), midnight + timedelta(hours=5)})
    checked = 0
    for _ in range(60):
        start, end = sorted(rng.sample(edges, 2))
        for bonuses in (False, True):
            fast = [dict(r) for r in await db.fetch(METRICS, members, start, end, bonuses)]
            plain = [dict(r) for r in await db.fetch(METRIC_DEFINITION, members, start, end, bonuses)]
            assert sorted(fast, key=str) == sorted(plain, key=str), (start, end, bonuses)
            checked += sum(r["purchases"] for r in plain)
    assert checked > 0
    assert (await tenant.verify())["ok"]
