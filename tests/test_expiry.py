"""Expiration through HTTP and the CLI: policies, the sweep, read-time hiding, expiring-soon lists."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.expiry.policy import ExpirationPolicy, activity_expires_at, lot_expires_at

BERLIN = ZoneInfo("Europe/Berlin")


def test_fixed_and_period_policies():
    earned = datetime(2026, 1, 31, 10, 0, tzinfo=BERLIN)
    assert lot_expires_at(ExpirationPolicy(kind="fixed", months=1), earned, BERLIN) == datetime(
        2026, 2, 28, 10, 0, tzinfo=BERLIN)
    assert lot_expires_at(ExpirationPolicy(kind="fixed", days=30), earned, BERLIN) == datetime(
        2026, 3, 2, 10, 0, tzinfo=BERLIN)
    rounded = ExpirationPolicy(kind="fixed", months=12, round_to_end_of_month=True)
    assert lot_expires_at(rounded, earned, BERLIN) == datetime(2027, 2, 1, tzinfo=BERLIN)
    quarter = ExpirationPolicy(kind="end_of_period", period="quarter", periods=1)
    assert lot_expires_at(quarter, earned, BERLIN) == datetime(2026, 7, 1, tzinfo=BERLIN)
    year = ExpirationPolicy(kind="end_of_period", period="year")
    # 31 Dec 23:30 UTC is already 1 January in Berlin: the next year's period
    assert lot_expires_at(year, datetime(2026, 12, 31, 23, 30, tzinfo=UTC), BERLIN) == datetime(
        2028, 1, 1, tzinfo=BERLIN)
    assert lot_expires_at(ExpirationPolicy(kind="none"), earned, BERLIN) is None
    activity = ExpirationPolicy(kind="activity", months=6, activities=["purchase"])
    assert lot_expires_at(activity, earned, BERLIN) is None
    assert activity_expires_at(activity, earned, "purchase", BERLIN) == datetime(2026, 7, 31, 10, 0, tzinfo=BERLIN)
    assert activity_expires_at(activity, earned, "event", BERLIN) is None
    with pytest.raises(ValueError):
        ExpirationPolicy(kind="fixed")


async def _policy(tenant, **policy):
    r = await tenant.client.put("/v1/program/expiration-policy",
                                json={"effective_from": "2020-01-01T00:00:00Z", **policy}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return r.json()


async def _buy(tenant, member, order, amount, occurred_at):
    r = await tenant.client.post("/v1/purchases", json={
        "member_id": member, "order_id": order, "occurred_at": occurred_at, "currency": "EUR", "total": amount,
        "lines": [{"sku": "X", "quantity": 1, "unit_price": amount}]}, headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 201, r.text
    return r.json()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_fixed_policy_sets_lot_expiry_and_the_sweep_expires_exactly(tenant, db):
    from app.expiry.service import expire_due

    await _policy(tenant, kind="fixed", days=30)
    now = datetime.now(UTC)
    old = await _buy(tenant, "fx", "fx-1", "40.00", _iso(now - timedelta(days=40)))   # expired 10 days ago
    await _buy(tenant, "fx", "fx-2", "25.00", _iso(now - timedelta(days=20)))         # expires in 10 days
    expires = datetime.fromisoformat(old["purchase"]["lot"]["expires_at"])
    # 30 days of local wall-clock time in the program's zone (across a DST change, UTC differs by an hour)
    assert expires == datetime.fromisoformat(old["purchase"]["occurred_at"]).astimezone(BERLIN) + timedelta(days=30)
    # reads hide the expired lot before any job has run
    balance = await tenant.balance("fx")
    assert balance["available"] == 25
    assert balance["next_expiry_points"] == 25
    soon = (await tenant.client.get("/v1/members/fx/expiring", params={"within_days": 15},
                                    headers=tenant.headers())).json()
    assert [b["points"] for b in soon["data"]] == [25]
    assert (await tenant.client.get("/v1/members/fx/expiring", params={"within_days": 5},
                                    headers=tenant.headers())).json()["data"] == []
    # the sweep expires exactly the remaining points of the due lot, once
    first = await expire_due(db)
    assert first.points >= 40
    await expire_due(db)
    activity = (await tenant.client.get("/v1/members/fx/activity", headers=tenant.headers())).json()["data"]
    expires_entries = [e for e in activity if e["kind"] == "expire"]
    assert len(expires_entries) == 1
    assert sorted((p["account"], p["points"]) for p in expires_entries[0]["postings"]) == [
        ("available", -40), ("expired", 40)]
    assert (await tenant.balance("fx"))["available"] == 25
    # the sweep as of a later date takes the rest
    await expire_due(db, as_of=now + timedelta(days=11))
    assert (await tenant.verify())["ok"]


async def test_partially_spent_lot_expires_only_what_remains(tenant, db):
    from app.expiry.service import expire_due

    await _policy(tenant, kind="fixed", days=30)
    now = datetime.now(UTC)
    await _buy(tenant, "ps", "ps-1", "100.00", _iso(now - timedelta(days=10)))
    r = await tenant.client.post("/v1/redemptions", json={"member_id": "ps", "points": 70},
                                 headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 201
    result = await expire_due(db, as_of=now + timedelta(days=25))
    assert result.points >= 30
    balance = await tenant.balance("ps")
    assert balance["available"] == 0
    assert (await tenant.verify())["ok"]


async def test_held_points_survive_expiry_until_voided(tenant, db):
    from app.expiry.service import expire_due

    await _policy(tenant, kind="fixed", days=30)
    now = datetime.now(UTC)
    bought = await _buy(tenant, "hx", "hx-1", "50.00", _iso(now - timedelta(days=10)))
    hold = (await tenant.client.post("/v1/holds", json={"member_id": "hx", "points": 30, "expires_in_seconds": 3600},
                                     headers=tenant.headers(idem=uuid.uuid4().hex))).json()["hold"]
    # the lot's date passes while 30 of its points are held: only the 20 not held expire
    await db.execute("UPDATE lots SET expires_at = now() - interval '1 second' WHERE id = ledger.row_id('lot', $1)",
                     bought["purchase"]["lot"]["id"])
    await expire_due(db)
    balance = await tenant.balance("hx")
    assert (balance["available"], balance["held"]) == (0, 30)
    # voided after their expiry, they come back to their (expired) lot: reads hide them at once ...
    r = await tenant.client.post(f"/v1/holds/{hold['id']}/void", headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 200
    assert (await tenant.balance("hx"))["available"] == 0
    # ... and the next run expires them
    await expire_due(db)
    entries = (await tenant.client.get("/v1/members/hx/activity", headers=tenant.headers())).json()["data"]
    expired = [-p["points"] for e in entries if e["kind"] == "expire"
               for p in e["postings"] if p["account"] == "available"]
    assert sorted(expired) == [20, 30]
    assert (await tenant.verify())["ok"]


async def test_concurrent_sweeps_never_expire_a_point_twice(tenant, db):
    from app.expiry.service import expire_due

    await _policy(tenant, kind="fixed", days=1)
    now = datetime.now(UTC)
    for i in range(12):
        await _buy(tenant, f"cc-{i % 4}", f"cc-{i}", "10.00", _iso(now - timedelta(days=5)))
    results = await asyncio.gather(*[expire_due(db, batch=2) for _ in range(3)])
    assert sum(r.points for r in results) >= 120
    total = await db.fetchval(
        "SELECT sum(p.points) FROM postings p JOIN entries e ON e.id = p.entry_id "
        "WHERE e.program_id = $1 AND e.kind = 'expire' AND p.account = 'expired'", tenant.program_id)
    assert total == 120
    assert (await tenant.verify())["ok"]


async def test_the_sweep_over_many_members_matches_what_reads_showed_member_by_member(tenant, db):
    """The sweep expires a batch of members with one set-based statement per step (ledger.expire_locked over
    ledger.post_many): across batches of members with several, partly spent lots each, every member ends where
    its balance read stood before the sweep (reads hide due lots already), with one 'expire' entry for exactly its
    due points and one points.expired event showing the balance that results."""
    import random

    from app.expiry.service import expire_due

    now = datetime.now(UTC)
    rng = random.Random(7)
    members = [f"sw-{i:02d}" for i in range(14)]
    for m in members:
        await tenant.member(m)
        for _ in range(rng.randint(1, 4)):
            # a lot that came due up to a day ago, or comes due within a day (one second in the past is due)
            r = await tenant.adjust(m, rng.randint(1, 60),
                                    expires_at=_iso(now + timedelta(seconds=rng.randint(-86_400, 86_400))))
            assert r.status_code == 201, r.text
        if rng.random() < 0.5:
            r = await tenant.client.post("/v1/redemptions", json={"member_id": m, "points": rng.randint(1, 5)},
                                         headers=tenant.headers(idem=uuid.uuid4().hex))
            assert r.status_code in (201, 422), r.text
    due = {r["external_id"]: r["points"] for r in await db.fetch(
        "SELECT m.external_id, sum(l.remaining)::bigint AS points FROM lots l JOIN members m ON m.id = l.member_id "
        "WHERE l.program_id = $1 AND l.remaining > 0 AND NOT l.pending AND l.expires_at <= now() "
        "GROUP BY m.external_id", tenant.program_id)}
    assert 3 <= len(due) < len(members)  # some members have nothing due: the batches mix both
    async def expire_entries(m: str) -> list[dict]:
        r = await tenant.client.get(f"/v1/members/{m}/activity", headers=tenant.headers())
        return [e for e in r.json()["data"] if e["kind"] == "expire"]  # (a redeem expired what was due then)

    before = {m: (await tenant.balance(m), {e["id"] for e in await expire_entries(m)}) for m in members}
    result = await expire_due(db, batch=3, program_id=tenant.program_id)
    assert (result.members, result.points) == (len(due), sum(due.values()))
    await tenant.settled()
    events = {e["data"]["entry"]["id"]: e for e in (await tenant.client.get(
        "/v1/changes", params={"types": "points.expired", "limit": 100}, headers=tenant.headers())).json()["data"]}
    for m in members:
        after = await tenant.balance(m)
        assert after["available"] == before[m][0]["available"], m
        entries = [e for e in await expire_entries(m) if e["id"] not in before[m][1]]
        if m not in due:
            assert entries == [], m
            continue
        assert len(entries) == 1 and sorted((p["account"], p["points"]) for p in entries[0]["postings"]) == [
            ("available", -due[m]), ("expired", due[m])], m
        event = events.pop(entries[0]["id"])
        assert event["member_id"] == m and event["data"]["balance"]["available"] == after["available"]
    # the rest are the events of the expiries the redeems did: one event per 'expire' entry in all
    assert sorted(events) == sorted(i for m in members for i in before[m][1])
    assert (await expire_due(db, program_id=tenant.program_id)).points == 0
    assert (await tenant.verify())["ok"]


async def test_end_of_period_policy(tenant):
    await _policy(tenant, kind="end_of_period", period="year", periods=1)
    r = await _buy(tenant, "ep", "ep-1", "10.00", "2026-03-10T10:00:00Z")
    assert datetime.fromisoformat(r["purchase"]["lot"]["expires_at"]) == datetime(2028, 1, 1, tzinfo=BERLIN)


async def test_activity_policy_each_activity_pushes_the_date_out(tenant, db):
    from app.expiry.service import expire_due

    await _policy(tenant, kind="activity", months=6)
    now = datetime.now(UTC)
    await _buy(tenant, "act", "act-1", "10.00", _iso(now - timedelta(days=300)))  # 10 months ago
    # lapsed: 6 months after that activity; reads hide the points before the sweep
    assert (await tenant.balance("act"))["available"] == 0
    # a new activity does not revive lapsed points, and pushes the date out for the new ones
    await _buy(tenant, "act", "act-2", "20.00", _iso(now - timedelta(days=10)))
    balance = await tenant.balance("act")
    assert balance["available"] == 20
    assert balance["next_expiry_points"] == 20
    assert datetime.fromisoformat(balance["next_expiry_at"]) > now + timedelta(days=150)
    await expire_due(db, as_of=now + timedelta(days=100))
    assert (await tenant.balance("act"))["available"] == 20
    await expire_due(db, as_of=now + timedelta(days=200))
    assert (await tenant.balance("act"))["available"] == 0
    assert (await tenant.verify())["ok"]


async def test_policy_change_never_moves_existing_lots(tenant):
    await _policy(tenant, kind="fixed", months=12)
    first = await _buy(tenant, "pc", "pc-1", "10.00", "2026-05-01T10:00:00Z")
    r = await tenant.client.put("/v1/program/expiration-policy", json={"kind": "none"}, headers=tenant.headers())
    assert r.status_code == 201
    second = await _buy(tenant, "pc", "pc-2", "10.00", _iso(datetime.now(UTC)))
    assert first["purchase"]["lot"]["expires_at"] is not None
    assert second["purchase"]["lot"]["expires_at"] is None
    got = (await tenant.client.get("/v1/purchases/pc-1", headers=tenant.headers())).json()
    assert got["lot"]["expires_at"] == first["purchase"]["lot"]["expires_at"]
    versions = (await tenant.client.get("/v1/program/expiration-policy/versions", headers=tenant.headers())).json()
    assert [v["policy"]["kind"] for v in versions["data"]] == ["fixed", "none"]
    bad = await tenant.client.put("/v1/program/expiration-policy", json={"kind": "fixed"}, headers=tenant.headers())
    assert bad.status_code == 422


async def test_adjustment_credits_follow_the_policy(tenant):
    await _policy(tenant, kind="fixed", days=90)
    await tenant.member("adj")
    r = await tenant.adjust("adj", 10)
    assert r.json()["balance"]["next_expiry_points"] == 10


def test_expire_cli_with_as_of(database_url):
    env = {**os.environ, "DATABASE_URL": database_url}
    r = subprocess.run([sys.executable, "-m", "app.cli", "expire", "--as-of", "2020-01-01T00:00:00Z", "--progress"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("expired ")
    bad = subprocess.run([sys.executable, "-m", "app.cli", "expire", "--as-of", "2020-01-01T00:00:00"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
