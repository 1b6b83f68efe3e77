"""The outbox and the change feed: every state change announced in its own transaction, in the API's shapes; a
feed that pages every committed event exactly once and in one stable order, even while transactions commit out
of order; other programs never see it."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from app.events.schemas import EVENT_TYPES

FUNCTIONS = Path(__file__).resolve().parents[1] / "migrations" / "functions"


async def _feed(tenant, path="/v1/changes", key=None, settle=True, **params):
    if settle:
        await tenant.settled()
    r = await tenant.client.get(path, params=params, headers=tenant.headers(key))
    assert r.status_code == 200, r.text
    return r.json()


async def _all(tenant, path="/v1/changes", **params):
    """Page from the start to the end; returns the events and the final cursor."""
    events, after = [], None
    while True:
        page = await _feed(tenant, path, **({"after": after} if after else {}), **params)
        events += page["data"]
        after = page["next_cursor"]
        if not page["has_more"]:
            return events, after


async def _post(tenant, path, body, key=None):
    r = await tenant.client.post(path, json=body, headers=tenant.headers(key, idem=uuid.uuid4().hex))
    assert r.status_code in (200, 201), r.text
    return r.json()


def _credited(event) -> int:
    return next(p["points"] for p in event["data"]["entry"]["postings"] if p["account"] == "available")


def _entry_id(event) -> str:
    data = event["data"]
    return str(data["entry"]["id"] if "entry" in data else data["redemption"]["entry_id"])


def test_the_sql_announces_only_catalogued_types():
    """Every event type a SQL function writes is one the API documents (and a webhook endpoint can choose)."""
    written: set[str] = set()
    for path in FUNCTIONS.glob("*.sql"):
        text = path.read_text()
        for call in re.finditer(r"(?:emit|emit_all)\s*\((.*?)\)\s*;|INSERT INTO changes.*?;", text, re.S):
            written |= set(re.findall(r"'([a-z_]+\.[a-z_]+)'", call.group(0)))
    assert written, "no emission found"
    assert written <= set(EVENT_TYPES), written - set(EVENT_TYPES)


async def test_every_change_is_announced_with_the_answer_it_made(tenant, db):
    from app.earning.service import activate_due_pending
    from app.expiry.service import expire_due
    from app.redemption.service import release_expired_holds

    await tenant.member("ev-1", name="Ada", email="ada@example.com")
    await tenant.member("ev-1", name="Ada L.")
    credit = await _post(tenant, "/v1/adjustments", {"member_id": "ev-1", "points": 1000, "reason": "welcome"})
    debit = await _post(tenant, "/v1/adjustments", {"member_id": "ev-1", "points": -10, "reason": "fix"})
    redemption = await _post(tenant, "/v1/redemptions", {"member_id": "ev-1", "points": 100})
    refund = await _post(tenant, f"/v1/redemptions/{redemption['redemption']['id']}/refunds", {"points": 40})
    hold = await _post(tenant, "/v1/holds", {"member_id": "ev-1", "points": 50})
    captured = await _post(tenant, f"/v1/holds/{hold['hold']['id']}/capture", {})
    voided_hold = await _post(tenant, "/v1/holds", {"member_id": "ev-1", "points": 20})
    await _post(tenant, f"/v1/holds/{voided_hold['hold']['id']}/void", {})
    lapsing = await _post(tenant, "/v1/holds", {"member_id": "ev-1", "points": 5, "expires_in_seconds": 1})
    reversed_ = await _post(tenant, f"/v1/entries/{debit['entry']['id']}/reverse", {"reason": "oops"})
    await _post(tenant, "/v1/adjustments", {"member_id": "ev-1", "points": 500, "reason": "again"})
    r = await tenant.client.patch("/v1/program", json={"settings": {"pending_days": 1}}, headers=tenant.headers())
    assert r.status_code == 200
    purchase = await _post(tenant, "/v1/purchases", {
        "member_id": "ev-1", "order_id": "o-ev", "currency": "EUR", "total": "30.00",
        "occurred_at": (datetime.now(UTC) - timedelta(days=1, seconds=-1)).isoformat(),
        "lines": [{"sku": "A", "quantity": 3, "unit_price": "10.00"}]})
    returned = await _post(tenant, "/v1/purchases/o-ev/returns", {
        "return_id": "r-1", "lines": [{"sku": "A", "quantity": 1}]})
    await _post(tenant, "/v1/adjustments", {"member_id": "ev-1", "points": 7, "reason": "short-lived",
                                            "expires_at": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()})
    await asyncio.sleep(1.1)
    await activate_due_pending(db, program_id=tenant.program_id)
    await release_expired_holds(db, program_id=tenant.program_id)
    await expire_due(db, program_id=tenant.program_id)
    r = await tenant.client.put("/v1/program/tiers", json={
        "tiers": [{"name": "Green", "threshold": "0"}, {"name": "Gold", "threshold": "100000"}], "metric": "points",
        "window": {"kind": "rolling_months", "months": 12}, "retention": {"kind": "end_of_next_year"},
        "effective_from": "2020-01-01T00:00:00Z"}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    r = await tenant.client.post("/v1/members/ev-1/tier", json={
        "tier": "Gold", "until": "2030-01-01T00:00:00Z", "reason": "vip"}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    r = await tenant.client.delete("/v1/members/ev-1/personal-data", headers=tenant.headers())
    assert r.status_code == 200

    events, _ = await _all(tenant)
    types = [e["type"] for e in events]
    for expected in EVENT_TYPES:
        if expected in ("points.expiring", "webhook_endpoint.disabled") or expected.startswith(("reward.", "voucher.")):
            continue  # their own tests (test_expiring_notices, test_webhooks, test_rewards)
        assert expected in types, f"{expected} not announced: {types}"
    assert types[:2] == ["member.created", "member.updated"]
    assert all(e["member_id"] == "ev-1" for e in events)
    by_type: dict[str, list[dict]] = {}
    for e in events:
        by_type.setdefault(e["type"], []).append(e)
        assert re.fullmatch(r"evt_[0-9a-f]{16}", e["id"])
    # data: the API's own answers
    assert by_type["points.adjusted"][0]["data"] == credit
    assert by_type["points.earned"][0]["data"] == credit
    assert by_type["points.adjusted"][1]["data"] == debit
    assert by_type["points.redeemed"][0]["data"] == redemption
    assert by_type["points.refunded"][0]["data"] == refund
    assert by_type["hold.created"][0]["data"] == hold
    assert by_type["hold.captured"][0]["data"] == captured and by_type["points.redeemed"][1]["data"] == captured
    assert by_type["points.reversed"][0]["data"] == reversed_
    assert purchase in [e["data"] for e in by_type["points.earned"]]
    assert by_type["purchase.returned"][0]["data"] == returned
    assert by_type["hold.expired"][0]["data"]["hold"]["id"] == lapsing["hold"]["id"]
    available = by_type["points.available"][0]["data"]
    assert available["entry"]["kind"] == "activate" and {"account": "available", "points": 20} in \
        available["entry"]["postings"]
    expired = by_type["points.expired"][0]["data"]
    assert expired["entry"]["postings"] == [{"account": "available", "points": -7}, {"account": "expired", "points": 7}]
    assert expired["balance"]["member_id"] == "ev-1"
    assert by_type["tier.changed"][0]["data"]["to_tier"] == "Gold"
    # no personal data anywhere, ever (the member's name and email never entered an event)
    text = str(events)
    assert "Ada" not in text and "ada@example.com" not in text


async def test_paging_cursors_types_and_limits(tenant):
    await tenant.member("pg-1")
    for i in range(7):
        assert (await tenant.adjust("pg-1", 10 + i)).status_code == 201
    everything, end = await _all(tenant)
    assert len(everything) == 1 + 7 * 2
    first = await _feed(tenant, limit=5)
    assert [e["id"] for e in first["data"]] == [e["id"] for e in everything[:5]] and first["has_more"]
    second = await _feed(tenant, limit=5, after=first["next_cursor"])
    assert [e["id"] for e in second["data"]] == [e["id"] for e in everything[5:10]]
    # at the end: an empty page with the same cursor, to poll with
    tail = await _feed(tenant, after=end)
    assert tail == {"data": [], "next_cursor": end, "has_more": False}
    assert (await tenant.adjust("pg-1", 1)).status_code == 201
    assert [e["type"] for e in (await _feed(tenant, after=end))["data"]] == ["points.adjusted", "points.earned"]
    # types
    earned, _ = await _all(tenant, types="points.earned")
    assert [_credited(e) for e in earned] == [10, 11, 12, 13, 14, 15, 16, 1]
    both, _ = await _all(tenant, types="member.created, points.earned")
    assert len(both) == 9
    # the member's own feed
    await tenant.member("pg-2")
    assert (await tenant.adjust("pg-2", 5)).status_code == 201
    mine, _ = await _all(tenant, path="/v1/members/pg-2/changes")
    assert [e["type"] for e in mine] == ["member.created", "points.adjusted", "points.earned"]
    assert {e["member_id"] for e in mine} == {"pg-2"}


async def test_bad_cursors_and_types_are_clear_errors(tenant, other_tenant):
    await tenant.member("bc-1")
    theirs = (await _feed(tenant))["data"][0]["id"]
    for params, code in [({"after": "7"}, "invalid_cursor"), ({"after": "evt_zz"}, "invalid_cursor"),
                         ({"after": "ent_0000000000000001"}, "invalid_cursor"),
                         ({"types": "points.earned,nope.nope"}, "validation_error"),
                         ({"limit": 0}, "validation_error"), ({"limit": 501}, "validation_error")]:
        r = await tenant.client.get("/v1/changes", params=params, headers=tenant.headers())
        assert r.status_code == 422 and r.json()["code"] == code, (params, r.text)
    # another program's event is not a position in this feed; its member does not exist here
    r = await other_tenant.client.get("/v1/changes", params={"after": theirs}, headers=other_tenant.headers())
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    r = await other_tenant.client.get("/v1/members/bc-1/changes", headers=other_tenant.headers())
    assert r.status_code == 404 and r.json()["code"] == "member_not_found"
    assert (await _feed(other_tenant))["data"] == []
    # read scope is enough; earn alone is not
    reader, earner = await tenant.key("read"), await tenant.key("earn")
    assert (await tenant.client.get("/v1/changes", headers=tenant.headers(reader))).status_code == 200
    r = await tenant.client.get("/v1/changes", headers=tenant.headers(earner))
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"


async def test_an_event_waits_for_every_transaction_that_could_precede_it(tenant, db, database_url):
    """The outbox gap: transaction A takes its id first and commits last. B's event must not be handed out
    before A ends, else a consumer past B would never see A's."""
    from app.db.urls import asyncpg_dsn

    await tenant.member("gap-1")
    _, start = await _all(tenant)
    a = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        tx = a.transaction()
        await tx.start()
        await a.execute("SELECT ledger.emit($1, NULL, 'member.updated', now(), '{\"n\": \"A\"}')", tenant.program_id)
        await db.execute("SELECT ledger.emit($1, NULL, 'member.updated', now(), '{\"n\": \"B\"}')", tenant.program_id)
        page = await _feed(tenant, after=start, settle=False)
        assert page["data"] == [] and page["next_cursor"] == start  # B is committed, but A could still precede it
        await tx.commit()
    finally:
        await a.close()
    page = await _feed(tenant, after=start)
    assert [e["data"]["n"] for e in page["data"]] == ["A", "B"]


async def test_readers_see_every_committed_event_once_and_in_order_under_concurrent_writers(tenant, db):
    """Writers post to a few members at once (so transactions commit out of id order) while readers page the
    feed from the start; every reader sees exactly the events of the entries the ledger holds, once each, in
    the one order the feed gives at the end."""
    members = [f"cc-{i}" for i in range(6)]
    for m in members:
        await tenant.member(m)
    _, start = await _all(tenant)
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        rng = random.Random(n)
        for _ in range(25):
            m = rng.choice(members)
            if rng.random() < 0.7:
                r = await tenant.adjust(m, rng.randint(1, 50))
            else:
                r = await tenant.client.post("/v1/redemptions", json={"member_id": m, "points": rng.randint(1, 5)},
                                             headers=tenant.headers(idem=uuid.uuid4().hex))
            assert r.status_code in (201, 422), r.text

    async def reader() -> list[str]:
        seen, after = [], start
        while True:
            # the last pages are read once the feed has settled (the writers are done): before that an empty page
            # means only that the horizon is held back, perhaps by another test worker's transaction
            done = stop.is_set()
            page = await _feed(tenant, after=after, limit=7, settle=done)
            seen += [e["id"] for e in page["data"]]
            after = page["next_cursor"]
            if done and not page["data"]:
                return seen
            await asyncio.sleep(0.002)

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    await asyncio.gather(*(writer(n) for n in range(8)))
    stop.set()
    seen = await asyncio.gather(*readers)
    everything = []
    after = start
    while True:
        page = await _feed(tenant, after=after, limit=500)
        everything += page["data"]
        after = page["next_cursor"]
        if not page["has_more"]:
            break
    order = [e["id"] for e in everything]
    assert len(order) == len(set(order))
    for ids in seen:
        assert ids == order  # nothing missed, nothing twice, the same order
    # checked against the ledger: one points.* event per entry posted meanwhile (and none for a refusal)
    entries = await db.fetch(
        "SELECT ledger.public_id('ent', e.id) AS id, e.kind FROM entries e JOIN members m ON m.id = e.member_id "
        "WHERE m.program_id = $1 AND m.external_id LIKE 'cc-%'", tenant.program_id)
    announced = [_entry_id(e) for e in everything if e["type"] in ("points.adjusted", "points.redeemed")]
    assert sorted(announced) == sorted(r["id"] for r in entries)
    # and per member, events come in the order of the member's entries (the member's lock orders them)
    for m in members:
        ids = [_entry_id(e) for e in everything
               if e["member_id"] == m and e["type"] in ("points.adjusted", "points.redeemed")]
        posted = await db.fetch(
            "SELECT ledger.public_id('ent', e.id) AS id FROM entries e JOIN members mm ON mm.id = e.member_id "
            "WHERE mm.program_id = $1 AND mm.external_id = $2 ORDER BY e.id", tenant.program_id, m)
        assert ids == [r["id"] for r in posted]


async def test_retention_purges_old_events_and_their_cursors_say_so(tenant, db):
    from app.events.service import purge_changes

    await tenant.member("rt-1")
    events, _ = await _all(tenant)
    await db.execute("UPDATE changes SET recorded_at = now() - interval '31 days' WHERE id = "
                     "ledger.row_id('evt', $1)", events[0]["id"])
    assert await purge_changes(db, 30) >= 1
    assert events[0]["id"] not in [e["id"] for e in (await _all(tenant))[0]]
    r = await tenant.client.get("/v1/changes", params={"after": events[0]["id"]}, headers=tenant.headers())
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    assert "retention" in r.json()["detail"]
