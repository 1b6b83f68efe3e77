"""Balances as of an instant (issue 15): a random history through the API, the balances recorded after each step
with the instant, and the as-of answers (balance, activity, liability) compared with them afterwards."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.expiry.service import expire_due

EXPIRIES = [None, "2030-01-01T00:00:00Z", "2031-06-30T00:00:00Z"]
FIELDS = ("available", "pending", "held", "lifetime_earned", "lifetime_redeemed", "tier")

steps = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), st.integers(0, 1), st.integers(1, 60), st.sampled_from(EXPIRIES)),
        st.tuples(st.just("purchase"), st.integers(0, 1), st.integers(1, 40), st.none()),
        st.tuples(st.just("debit"), st.integers(0, 1), st.integers(1, 50), st.none()),
        st.tuples(st.just("redeem"), st.integers(0, 1), st.integers(1, 50), st.none()),
        st.tuples(st.just("hold"), st.integers(0, 1), st.integers(1, 50), st.none()),
        st.tuples(st.just("void"), st.integers(0, 1), st.integers(0, 5), st.none()),
        st.tuples(st.just("capture"), st.integers(0, 1), st.integers(0, 5), st.none()),
        st.tuples(st.just("expire"), st.integers(0, 1), st.just(0), st.sampled_from(["2030-06-01", "2032-01-01"])),
    ),
    min_size=1, max_size=14,
)


# Every member the property test made, per program: the program's liability is theirs (hypothesis reuses the tenant
# across examples, and an expiry sweep of the program touches earlier examples' members too).
MEMBERS: dict[object, list[str]] = {}


async def _now(db) -> datetime:
    return await db.fetchval("SELECT clock_timestamp()")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps)
async def test_as_of_answers_what_the_balance_was_then(tenant, db, history):
    await tenant.client.patch("/v1/program", json={"settings": {"pending_days": 30}}, headers=tenant.headers())
    members = [f"asof-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    everyone = MEMBERS.setdefault(tenant.program_id, [])
    everyone += members
    for m in members:
        await tenant.member(m)
    start = await _now(db)
    holds: list[list[str]] = [[], []]
    expired = [0, 0]
    # (instant, {member: balance then}, {member: entries then}, {member: expired then}, liability then)
    snapshots = []
    for kind, who, points, extra in history:
        member = members[who]
        idem = tenant.headers(idem=uuid.uuid4().hex)
        if kind == "credit":
            assert (await tenant.adjust(member, points, expires_at=extra)).status_code == 201
        elif kind == "purchase":
            r = await tenant.client.post("/v1/purchases", json={
                "member_id": member, "order_id": uuid.uuid4().hex, "currency": "EUR", "total": f"{points}.00",
                "lines": [{"sku": "X", "quantity": 1, "unit_price": f"{points}.00"}]}, headers=idem)
            assert r.status_code == 201, r.text
        elif kind == "debit":
            assert (await tenant.adjust(member, -points)).status_code in (201, 422)
        elif kind == "redeem":
            r = await tenant.client.post("/v1/redemptions", json={"member_id": member, "points": points}, headers=idem)
            assert r.status_code in (201, 422), r.text
        elif kind == "hold":
            r = await tenant.client.post("/v1/holds", json={"member_id": member, "points": points,
                                                            "expires_in_seconds": 86400}, headers=idem)
            assert r.status_code in (201, 422), r.text
            if r.status_code == 201:
                holds[who].append(r.json()["hold"]["id"])
        elif kind in ("void", "capture"):
            if not holds[who]:
                continue
            hold = holds[who].pop(points % len(holds[who]))
            r = await tenant.client.post(f"/v1/holds/{hold}/{kind}", headers=idem)
            assert r.status_code in (200, 201), r.text
        else:
            result = await expire_due(tenant.pool, datetime.fromisoformat(extra).replace(tzinfo=UTC),
                                      program_id=tenant.program_id)
            assert result.points >= 0
        at = await _now(db)
        balances, entries, liability = {}, {}, 0
        for m in everyone:
            b = await tenant.balance(m)
            balances[m] = b
            liability += b["available"] + b["pending"] + b["held"]
        for i, m in enumerate(members):
            entries[m] = await db.fetchval(
                "SELECT count(*) FROM entries e JOIN members m ON m.id = e.member_id "
                "WHERE m.program_id = $1 AND m.external_id = $2", tenant.program_id, m)
            expired[i] = await db.fetchval(
                "SELECT coalesce(sum(p.points), 0) FROM postings p JOIN members m ON m.id = p.member_id "
                "WHERE m.program_id = $1 AND m.external_id = $2 AND p.account = 'expired'", tenant.program_id, m)
        snapshots.append((at, balances, entries, list(expired), liability))

    for at, balances, entries, expired_then, liability in snapshots:
        for i, m in enumerate(members):
            r = await tenant.client.get(f"/v1/members/{m}/balance", params={"as_of": at.isoformat()},
                                        headers=tenant.headers())
            assert r.status_code == 200, r.text
            then = r.json()
            assert {f: then[f] for f in FIELDS} == {f: balances[m][f] for f in FIELDS}, (at, m)
            assert then["expired"] == expired_then[i]
            assert datetime.fromisoformat(then["as_of"]) == at
            page = await tenant.client.get(f"/v1/members/{m}/activity", params={"as_of": at.isoformat(),
                                                                                "limit": 200},
                                           headers=tenant.headers())
            assert len(page.json()["data"]) == entries[m]
        r = await tenant.client.get("/v1/liability", params={"as_of": at.isoformat()}, headers=tenant.headers())
        assert r.json()["outstanding"] == liability
    # before anything happened: nothing
    for m in members:
        r = await tenant.client.get(f"/v1/members/{m}/balance", params={"as_of": start.isoformat()},
                                    headers=tenant.headers())
        assert {f: r.json()[f] for f in ("available", "pending", "held", "expired")} == dict.fromkeys(
            ("available", "pending", "held", "expired"), 0)
    assert (await tenant.verify())["ok"]


async def test_as_of_refuses_naive_instants_and_other_programs(tenant, other_tenant):
    await tenant.member("asof-a")
    await tenant.adjust("asof-a", 10)
    r = await tenant.client.get("/v1/members/asof-a/balance", params={"as_of": "2026-01-01T00:00:00"},
                                headers=tenant.headers())
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    for number in ("0", "-3727", "1700000000.5"):  # not seconds since 1970: the document says date-time
        r = await tenant.client.get("/v1/liability", params={"as_of": number}, headers=tenant.headers())
        assert r.status_code == 422 and r.json()["code"] == "validation_error", number
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = await tenant.client.get("/v1/members/asof-a/balance", params={"as_of": future}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["available"] == 10 and r.json()["expired"] == 0
    r = await other_tenant.client.get("/v1/members/asof-a/balance", params={"as_of": future},
                                      headers=other_tenant.headers())
    assert r.status_code == 404 and r.json()["code"] == "member_not_found"
    r = await other_tenant.client.get("/v1/members/asof-a/activity", params={"as_of": future},
                                      headers=other_tenant.headers())
    assert r.status_code == 404
    theirs = await other_tenant.client.get("/v1/liability", params={"as_of": future},
                                           headers=other_tenant.headers())
    assert theirs.status_code == 200 and theirs.json()["outstanding"] == 0
    reader = await tenant.key("read")
    r = await tenant.client.get("/v1/liability", headers=tenant.headers(reader))
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
