"""The rules a Starbucks-like programme needed, through HTTP against real Postgres (issue 12): a bonus limited to
once a year, "Tuesday x2, but not on birthday orders", a birthday condition on any rule, the tier multiplier on
the base rate only; purchases dated before the programme's rules; returns dated when they happened."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.test_earning import _post, _purchase, _return, _rules, _settings

TUESDAY = "2026-11-17T09:00:00Z"  # a Tuesday, 10:00 in Europe/Berlin
TUESDAY_LATER = "2026-11-17T15:00:00Z"
NEXT_TUESDAY = "2026-11-24T09:00:00Z"
BIRTHDAY = "1990-11-17"
LINE = [{"sku": "LATTE", "category": "drinks", "quantity": 1, "unit_price": "10.00"}]

STARBUCKS = {
    "base": {"points_per_unit": "2"},
    "rules": [
        {"id": "double-tuesday", "kind": "multiplier", "factor": "2", "priority": 20, "group": "day-offer",
         "conditions": {"days_of_week": [2]}},
        {"id": "birthday", "kind": "birthday_bonus", "points": 100, "priority": 10, "group": "day-offer",
         "limits": [{"times": 1, "per": "year"}]},
    ],
}


def _ids(award: dict[str, Any]) -> set[str]:
    return {c["rule_id"] for line in award["lines"] for c in line["contributions"]} | {
        b["rule_id"] for b in award["order_bonuses"]}


async def test_birthday_bonus_once_a_year_and_not_with_double_tuesday(tenant, db):
    await _rules(tenant, STARBUCKS)
    await tenant.member("ada", birthday=BIRTHDAY)
    await tenant.member("bob", birthday="1990-06-01")
    # Ada's birthday, a Tuesday: the bonus, and no double points (same group, the bonus comes first)
    quote = await _post(tenant, {k: v for k, v in _purchase("ada", "q", LINE, TUESDAY).items() if k != "order_id"},
                        path="/v1/purchases/quote")
    assert quote.status_code == 200 and quote.json()["points"] == 120, quote.text
    assert [(s["rule_id"], s["reason"], s["by_rule_id"]) for s in quote.json()["award"]["skipped"]] == [
        ("double-tuesday", "group", "birthday")]
    first = (await _post(tenant, _purchase("ada", "ada-1", LINE, TUESDAY))).json()["purchase"]
    assert first["points"] == 20 + 100 and _ids(first["award"]) == {"birthday"}
    # a second order on her birthday: the bonus is used up for the year, so it excludes nothing: double points
    second = (await _post(tenant, _purchase("ada", "ada-2", LINE, TUESDAY_LATER))).json()["purchase"]
    assert second["points"] == 40 and _ids(second["award"]) == {"double-tuesday"}
    assert [(s["rule_id"], s["reason"], s["per"], s["times"], s["count"]) for s in second["award"]["skipped"]] == [
        ("birthday", "limit", "year", 1, 1)]
    # the quote shows the same
    again = await _post(tenant, {k: v for k, v in _purchase("ada", "q", LINE, TUESDAY_LATER).items()
                                 if k != "order_id"}, path="/v1/purchases/quote")
    assert again.json()["points"] == 40 and again.json()["award"]["skipped"][0]["reason"] == "limit"
    # another member's Tuesday: double points
    bob = (await _post(tenant, _purchase("bob", "bob-1", LINE, TUESDAY))).json()["purchase"]
    assert bob["points"] == 40 and bob["award"]["skipped"] == []
    # the counts live in a small table, one row per application of a limited rule
    rows = await db.fetch("SELECT rule_id, released FROM member_rule_awards WHERE program_id = $1",
                          tenant.program_id)
    assert [(r["rule_id"], r["released"]) for r in rows] == [("birthday", False)]
    assert (await tenant.verify())["ok"]


async def test_returning_the_birthday_order_gives_the_bonus_back_a_partial_return_does_not(tenant, db):
    await _rules(tenant, STARBUCKS)
    await tenant.member("cleo", birthday=BIRTHDAY)
    lines = [{"sku": "A", "quantity": 2, "unit_price": "10.00"}]
    first = (await _post(tenant, _purchase("cleo", "cleo-1", lines, TUESDAY))).json()["purchase"]
    assert first["points"] == 40 + 100
    partial = await _return(tenant, "cleo-1", {"return_id": "r1", "lines": [{"sku": "A", "quantity": 1}]})
    assert partial.status_code == 201 and partial.json()["clawback"]["released_rule_ids"] == []
    second = (await _post(tenant, _purchase("cleo", "cleo-2", LINE, TUESDAY_LATER))).json()["purchase"]
    assert "birthday" not in _ids(second["award"])  # half of the bonus is still kept: still used
    full = await _return(tenant, "cleo-1", {"return_id": "r2", "lines": [{"sku": "A", "quantity": 1}]})
    assert full.json()["clawback"]["released_rule_ids"] == ["birthday"]
    assert full.json()["points"] == 20 + 50
    third = (await _post(tenant, _purchase("cleo", "cleo-3", LINE, "2026-11-17T18:00:00Z"))).json()["purchase"]
    assert third["points"] == 120 and _ids(third["award"]) == {"birthday"}
    released = await db.fetch("SELECT p.order_id, a.released FROM member_rule_awards a JOIN purchases p "
                              "ON p.id = a.purchase_id WHERE a.program_id = $1 ORDER BY a.id", tenant.program_id)
    assert [(r["order_id"], r["released"]) for r in released] == [("cleo-1", True), ("cleo-3", False)]
    assert (await tenant.verify())["ok"]


async def test_concurrent_birthday_orders_get_the_once_a_year_bonus_once(tenant):
    await _rules(tenant, STARBUCKS)
    await tenant.member("dan", birthday=BIRTHDAY)
    answers = await asyncio.gather(*[_post(tenant, _purchase("dan", f"dan-{i}", LINE, TUESDAY)) for i in range(8)])
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    with_bonus = [r for r in answers if "birthday" in _ids(r.json()["purchase"]["award"])]
    assert len(with_bonus) == 1
    assert (await tenant.balance("dan"))["available"] == 120 + 7 * 40


async def test_limits_per_day_and_month_count_in_the_programme_time_zone(tenant):
    await _rules(tenant, {"base": {"points_per_unit": "1"}, "rules": [
        {"id": "visit", "kind": "fixed_bonus", "points": 5, "limits": [{"times": 1, "per": "day"},
                                                                        {"times": 2, "per": "month"}]}]})
    points = []
    # 23:30 UTC on the 17th is the 18th in Berlin: a new local day
    for i, at in enumerate(("2026-11-17T09:00:00Z", "2026-11-17T20:00:00Z", "2026-11-17T23:30:00Z",
                            "2026-11-20T09:00:00Z", "2026-12-01T09:00:00Z")):
        r = await _post(tenant, _purchase("eve", f"eve-{i}", LINE, at))
        points.append(r.json()["purchase"]["points"])
    assert points == [15, 10, 15, 10, 15]


async def test_a_birthday_multiplier_and_a_tier_multiplier_on_the_base_rate_only(tenant):
    r = await tenant.client.put("/v1/program/tiers", headers=tenant.headers(), json={
        "tiers": [{"name": "Green", "threshold": "0"}, {"name": "Gold", "threshold": "1000", "earn_multiplier": "1.5"}],
        "metric": "points", "window": {"kind": "rolling_months", "months": 12},
        "retention": {"kind": "end_of_next_year"}, "effective_from": "2020-01-01T00:00:00Z"})
    assert r.status_code == 201, r.text
    await _rules(tenant, {"base": {"points_per_unit": "2"}, "tier_multiplier_applies_to": "base", "rules": [
        {"id": "beans-3x", "kind": "multiplier", "factor": "3", "conditions": {"categories": ["beans"]}},
        {"id": "birthday-x2", "kind": "multiplier", "factor": "2", "conditions": {"birthday": "same_day"}}]})
    await tenant.member("gus", birthday=BIRTHDAY)
    r = await tenant.client.post("/v1/members/gus/tier", headers=tenant.headers(),
                                 json={"tier": "Gold", "until": "2030-01-01T00:00:00Z", "reason": "test"})
    assert r.status_code in (200, 201), r.text
    beans = [{"sku": "BEANS", "category": "beans", "quantity": 1, "unit_price": "20.00"}]
    posted = (await _post(tenant, _purchase("gus", "gus-1", beans, occurred_at=None))).json()["purchase"]
    contributions = {c["rule_id"]: c["points"] for c in posted["award"]["lines"][0]["contributions"]}
    # base 40; x3 beans (120); the Gold 1.5 on the base only: +20, not 120 x 0.5
    assert contributions == {"beans-3x": 80, "tier:Gold": 20}
    assert posted["points"] == 140
    # the tier is the one held when a purchase happened (Gold from now on): his birthday today
    await tenant.member("gus", birthday=datetime.now(ZoneInfo("Europe/Berlin")).date().replace(year=1990).isoformat())
    birthday = (await _post(tenant, _purchase("gus", "gus-2", beans, occurred_at=None))).json()["purchase"]
    contributions = {c["rule_id"]: c["points"] for c in birthday["award"]["lines"][0]["contributions"]}
    assert contributions == {"beans-3x": 80, "birthday-x2": 120, "tier:Gold": 20} and birthday["points"] == 260


# --- issue 12 F2: how far back a purchase may be dated ---------------------------------------------------------


async def test_a_purchase_before_the_programmes_first_rules_is_refused(tenant, db):
    await _rules(tenant, {"base": {"points_per_unit": "1"}, "caps": {"per_order": 100}},
                 effective_from="2026-01-01T00:00:00Z")
    gift = [{"sku": "GIFT", "quantity": 1, "unit_price": "1000000.00"}]
    for at in ("0001-01-02T00:00:00Z", "2025-12-31T22:59:59Z"):  # the last: 23:59:59 in Berlin, still 2025
        r = await _post(tenant, _purchase("old", f"old-{at}", gift, at))
        assert r.status_code == 422 and r.json()["code"] == "occurred_at_too_old", r.text
        q = await _post(tenant, {k: v for k, v in _purchase("old", "q", gift, at).items() if k != "order_id"},
                        path="/v1/purchases/quote")
        assert q.status_code == 422 and q.json()["code"] == "occurred_at_too_old"
        e = await tenant.client.post("/v1/events", json={"member_id": "old", "event_id": f"e-{at}", "name": "x",
                                                         "occurred_at": at},
                                     headers=tenant.headers(idem=uuid.uuid4().hex))
        assert e.status_code == 422 and e.json()["code"] == "occurred_at_too_old"
    assert await db.fetchval("SELECT count(*) FROM members WHERE program_id = $1", tenant.program_id) == 0
    ok = await _post(tenant, _purchase("old", "new-1", gift, "2026-01-01T00:00:00Z"))
    assert ok.status_code == 201 and ok.json()["purchase"]["points"] == 100  # the rules' cap applies


async def test_max_backdate_days_and_a_late_replay_still_replays(tenant):
    # a program without earn rules: version 0 applies at any date, unless the program limits the age
    r = await _post(tenant, _purchase("late", "late-1", LINE, "2020-01-01T10:00:00Z"))
    assert r.status_code == 201 and r.json()["purchase"]["rule_version"] == 0
    await _settings(tenant, max_backdate_days=30)
    refused = await _post(tenant, _purchase("late", "late-2", LINE, "2020-01-01T10:00:00Z"))
    assert refused.status_code == 422 and refused.json()["code"] == "occurred_at_too_old"
    assert refused.json()["max_backdate_days"] == 30
    replay = await _post(tenant, _purchase("late", "late-1", LINE, "2020-01-01T10:00:00Z"))
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    recent = await _post(tenant, _purchase("late", "late-3", LINE, occurred_at=None))
    assert recent.status_code == 201
    r = await tenant.client.patch("/v1/program", json={"settings": {"max_backdate_days": 0}}, headers=tenant.headers())
    assert r.status_code == 422


# --- returns dated when they happened ---------------------------------------------------------------------------


async def test_a_late_return_is_dated_when_it_happened_and_judged_by_the_window_then(tenant, db):
    await _settings(tenant, pending_days=30)
    lines = [{"sku": "A", "quantity": 4, "unit_price": "10.00"}]
    bought_at = datetime.now(UTC) - timedelta(days=20)
    posted = (await _post(tenant, _purchase("ret", "ret-1", lines, bought_at.isoformat()))).json()["purchase"]
    assert posted["status"] == "pending"
    # the return window has since ended (an hour ago), and the activation job has not run
    await db.execute("UPDATE lots SET available_at = now() - interval '1 hour' "
                     "WHERE entry_id = ledger.row_id('ent', $1)", posted["entry_id"])
    # an offline POS sends a return that happened inside the window: taken from the pending points, dated then
    returned_at = (bought_at + timedelta(days=1)).isoformat()
    inside = await _return(tenant, "ret-1", {"return_id": "in", "lines": [{"sku": "A", "quantity": 1}],
                                             "occurred_at": returned_at})
    assert inside.status_code == 201, inside.text
    assert datetime.fromisoformat(inside.json()["occurred_at"]) == datetime.fromisoformat(returned_at)
    # a return after the window: the points had become available, so they are taken as available
    after = await _return(tenant, "ret-1", {"return_id": "after", "lines": [{"sku": "A", "quantity": 1}]})
    assert after.status_code == 201
    entries = (await tenant.client.get("/v1/members/ret/activity", headers=tenant.headers())).json()["data"]
    clawbacks = [e for e in entries if e["kind"] == "clawback"]
    by_return = {e["metadata"]["return_id"]: e for e in clawbacks}
    assert {p["account"]: p["points"] for p in by_return["in"]["postings"]} == {"pending": -10, "issued": 10}
    assert {p["account"]: p["points"] for p in by_return["after"]["postings"]} == {"available": -10, "issued": 10}
    assert by_return["in"]["occurred_at"][:19] == returned_at[:19]
    assert [e["kind"] for e in entries].count("activate") == 1
    got = (await tenant.client.get("/v1/purchases/ret-1", headers=tenant.headers())).json()
    assert [r["occurred_at"][:19] for r in got["returns"]][0] == returned_at[:19]
    balance = await tenant.balance("ret")
    assert (balance["pending"], balance["available"]) == (0, 20)
    # not before the purchase, not in the future
    for at in ("2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"):
        r = await _return(tenant, "ret-1", {"return_id": f"bad-{at}", "lines": [{"sku": "A", "quantity": 1}],
                                            "occurred_at": at})
        assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert (await tenant.verify())["ok"]


# --- issue 12 F9: never earn on more money than was paid --------------------------------------------------------


async def test_lines_worth_far_more_than_the_total_earn_on_the_total(tenant):
    lines = [{"sku": "TV", "quantity": 1, "unit_price": "100000000.00"}]
    body = {**_purchase("rich", "rich-1", lines, occurred_at=None), "total": "1.00"}
    r = await _post(tenant, body)
    assert r.status_code == 201, r.text
    award = r.json()["purchase"]["award"]
    assert r.json()["purchase"]["points"] == 1 and award["eligible_amount"] == "1.00"
    assert award["lines"][0]["order_discount"] == "99999999.00"
    over = await _return(tenant, "rich-1", {"return_id": "x", "amount": "1.01"})
    assert over.status_code == 422  # more than was paid
