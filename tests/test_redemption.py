"""Checkout redemption through HTTP: quotes, direct redeems, holds, captures, voids, refunds."""

from __future__ import annotations

import asyncio
import random
import uuid


async def _settings(tenant, **settings):
    r = await tenant.client.patch("/v1/program", json={"settings": settings}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    return r.json()["settings"]


async def _post(tenant, path, body=None, idem=None, key=None):
    return await tenant.client.post(path, json=body, headers=tenant.headers(key, idem=idem or uuid.uuid4().hex))


async def _hold(tenant, member, points, **extra):
    return await _post(tenant, "/v1/holds", {"member_id": member, "points": points, **extra})


async def _lots(db, tenant, member):
    return [r["remaining"] for r in await db.fetch(
        "SELECT l.remaining FROM lots l JOIN members m ON m.id = l.member_id "
        "WHERE m.program_id = $1 AND m.external_id = $2 ORDER BY l.id", tenant.program_id, member)]


async def _funded(tenant, member, *lots):
    await tenant.member(member)
    for points, expires in lots:
        r = await tenant.adjust(member, points, expires_at=expires)
        assert r.status_code == 201


async def test_program_settings_update_merges_and_validates(tenant):
    s = await _settings(tenant, points_per_currency_unit_redeemed=100, redeem_increment=50)
    assert s["redeem_increment"] == 50 and s["hold_default_seconds"] == 900
    s = await _settings(tenant, min_redeem_points=100)
    assert s["redeem_increment"] == 50 and s["min_redeem_points"] == 100
    r = await tenant.client.patch("/v1/program", json={"settings": {"redeem_increment": 0}},
                                  headers=tenant.headers())
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await tenant.client.patch("/v1/program", json={"settings": {"no_such_setting": 1}},
                                  headers=tenant.headers())
    assert r.status_code == 422
    r = await tenant.client.patch("/v1/program", json={"name": "x"}, headers=tenant.headers(await tenant.key("read")))
    assert r.status_code == 403


async def test_quote_example_from_the_issue(tenant):
    # 100 points = 1.00 EUR, at most 50% of the order, multiples of 100, at least 500
    await _settings(tenant, points_per_currency_unit_redeemed=100, max_redeem_share_of_order="0.5",
                    redeem_increment=100, min_redeem_points=500)
    await _funded(tenant, "q1", (1250, None))
    r = await _post(tenant, "/v1/redemptions/quote", {"member_id": "q1", "order_total": "30.00"})
    assert r.status_code == 200, r.text
    body = r.json()
    # share cap: 30.00 * 0.5 * 100 = 1500 points; available 1250 -> increment 100 -> 1200
    assert body["max_points"] == 1200 and body["amount"] == "12.00" and body["limited_by"] == "increment"
    r = await _post(tenant, "/v1/redemptions/quote", {"member_id": "q1", "order_total": "9.00"})
    # share cap: 450 points < min 500 -> nothing usable
    assert r.json()["max_points"] == 0 and r.json()["limited_by"] == "min_redeem_points"
    r = await _post(tenant, "/v1/redemptions/quote", {"member_id": "q1", "order_total": "20.00"})
    assert r.json()["max_points"] == 1000 and r.json()["limited_by"] == "share_of_order"
    r = await _post(tenant, "/v1/redemptions/quote", {"member_id": "q1", "order_total": "20.00",
                                                      "currency": "USD"})
    assert r.status_code == 422 and r.json()["code"] == "currency_mismatch"
    r = await _post(tenant, "/v1/redemptions/quote", {"member_id": "q1", "order_total": "20.001"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"  # more decimals than EUR has
    assert (await tenant.balance("q1"))["available"] == 1250


async def test_redeem_respects_min_increment_and_share(tenant):
    await _settings(tenant, redeem_increment=100, min_redeem_points=200, max_redeem_share_of_order="0.5")
    await _funded(tenant, "q2", (1000, None))
    for body in ({"points": 100}, {"points": 250}, {"points": 600, "order_total": "10.00"}):
        r = await _post(tenant, "/v1/redemptions", {"member_id": "q2", **body})
        assert r.status_code == 422 and r.json()["code"] == "invalid_redeem_amount", body
    r = await _post(tenant, "/v1/redemptions", {"member_id": "q2", "points": 500, "order_total": "10.00"})
    assert r.status_code == 201
    assert (await tenant.balance("q2"))["available"] == 500


async def test_direct_redeem_consumes_soonest_expiring_lots_exactly(tenant, db):
    await _funded(tenant, "r1", (100, None), (100, "2031-01-01T00:00:00Z"), (100, "2030-01-01T00:00:00Z"))
    r = await _post(tenant, "/v1/redemptions", {"member_id": "r1", "points": 150, "reference": "order-1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["redemption"]["points"] == 150 and body["redemption"]["amount"] == "1.50"
    assert body["redemption"]["reference"] == "order-1"
    assert body["balance"]["available"] == 150 and body["balance"]["lifetime_redeemed"] == 150
    assert await _lots(db, tenant, "r1") == [100, 50, 0]
    r = await _post(tenant, "/v1/redemptions", {"member_id": "r1", "points": 151})
    assert r.status_code == 422 and r.json()["code"] == "insufficient_points" and r.json()["available"] == 150
    assert (await tenant.verify())["ok"]


async def test_hundred_concurrent_holds_never_overdraw(tenant):
    await _funded(tenant, "h100", (500, None))
    responses = await asyncio.gather(*[_hold(tenant, "h100", 10) for _ in range(100)])
    codes = [r.status_code for r in responses]
    assert codes.count(201) == 50, codes
    assert all(r.json()["code"] == "insufficient_points" for r in responses if r.status_code != 201)
    balance = await tenant.balance("h100")
    assert (balance["available"], balance["held"]) == (0, 500)
    assert len({r.json()["hold"]["id"] for r in responses if r.status_code == 201}) == 50
    assert (await tenant.verify())["ok"]


async def test_two_checkouts_racing_for_the_last_points(tenant):
    await _funded(tenant, "race", (100, None))
    a, b = await asyncio.gather(_hold(tenant, "race", 80), _post(tenant, "/v1/redemptions",
                                                                 {"member_id": "race", "points": 80}))
    assert sorted([a.status_code, b.status_code]) == [201, 422]
    loser = a if a.status_code == 422 else b
    assert loser.json()["code"] == "insufficient_points" and loser.json()["available"] == 20


async def test_partial_capture_returns_the_remainder(tenant, db):
    await _funded(tenant, "cap", (100, "2030-01-01T00:00:00Z"), (100, "2032-01-01T00:00:00Z"))
    hold = (await _hold(tenant, "cap", 150, reference="cart-9")).json()
    assert hold["hold"]["status"] == "open" and hold["balance"]["held"] == 150
    assert await _lots(db, tenant, "cap") == [0, 50]
    r = await _post(tenant, f"/v1/holds/{hold['hold']['id']}/capture", {"points": 120})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hold"]["status"] == "captured" and body["hold"]["captured_points"] == 120
    assert body["redemption"]["points"] == 120 and body["redemption"]["hold_id"] == hold["hold"]["id"]
    assert (body["balance"]["available"], body["balance"]["held"]) == (80, 0)
    # the capture keeps the soonest-expiring reserved points; the 30 released go back to the later lot
    assert await _lots(db, tenant, "cap") == [0, 80]
    r = await _post(tenant, f"/v1/holds/{hold['hold']['id']}/capture", {"points": 200})
    assert r.status_code == 409 and r.json()["code"] == "hold_not_open"
    assert (await tenant.verify())["ok"]


async def test_capture_more_than_held_is_refused(tenant):
    await _funded(tenant, "cap2", (100, None))
    hold_id = (await _hold(tenant, "cap2", 50)).json()["hold"]["id"]
    r = await _post(tenant, f"/v1/holds/{hold_id}/capture", {"points": 51})
    assert r.status_code == 422 and r.json()["code"] == "capture_exceeds_hold"
    r = await _post(tenant, f"/v1/holds/{hold_id}/capture")
    assert r.status_code == 200 and r.json()["hold"]["captured_points"] == 50


async def test_void_restores_points_to_their_lots_and_replays(tenant, db):
    await _funded(tenant, "void", (60, "2030-01-01T00:00:00Z"), (60, None))
    hold_id = (await _hold(tenant, "void", 100)).json()["hold"]["id"]
    assert await _lots(db, tenant, "void") == [0, 20]
    first = await _post(tenant, f"/v1/holds/{hold_id}/void", {"reason": "payment failed"}, idem="v-1")
    assert first.status_code == 200 and first.json()["hold"]["status"] == "voided"
    assert await _lots(db, tenant, "void") == [60, 60]
    again = await _post(tenant, f"/v1/holds/{hold_id}/void", {"reason": "payment failed"}, idem="v-1")
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await _post(tenant, f"/v1/holds/{hold_id}/void", idem="v-2")
    assert other.status_code == 409 and other.json()["code"] == "hold_not_open"
    cap = await _post(tenant, f"/v1/holds/{hold_id}/capture")
    assert cap.status_code == 409 and cap.json()["code"] == "hold_not_open"
    assert (await tenant.balance("void"))["available"] == 120


async def test_capture_racing_void_exactly_one_wins(tenant):
    for i in range(5):
        member = f"cv-{i}"
        await _funded(tenant, member, (100, None))
        hold_id = (await _hold(tenant, member, 70)).json()["hold"]["id"]
        cap, void = await asyncio.gather(_post(tenant, f"/v1/holds/{hold_id}/capture"),
                                         _post(tenant, f"/v1/holds/{hold_id}/void"))
        assert sorted([cap.status_code, void.status_code]) == [200, 409], (cap.text, void.text)
        loser = cap if cap.status_code == 409 else void
        assert loser.json()["code"] == "hold_not_open"
        balance = await tenant.balance(member)
        assert balance["held"] == 0
        assert balance["available"] == (30 if cap.status_code == 200 else 100)
    assert (await tenant.verify())["ok"]


async def test_expired_holds_release_at_read_time_and_by_the_job(tenant, db):
    from app.redemption.service import release_expired_holds

    await _funded(tenant, "exp", (100, None))
    hold_id = (await _hold(tenant, "exp", 40, expires_in_seconds=60)).json()["hold"]["id"]
    await db.execute("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = ledger.row_id('hold', $1)",
                     hold_id)
    # read time: not held any more, although the job has not run
    balance = await tenant.balance("exp")
    assert (balance["available"], balance["held"]) == (100, 0)
    got = await tenant.client.get(f"/v1/holds/{hold_id}", headers=tenant.headers())
    assert got.json()["status"] == "expired"
    r = await _post(tenant, f"/v1/holds/{hold_id}/capture")
    assert r.status_code == 409 and r.json()["code"] == "hold_expired"
    assert await release_expired_holds(db) >= 1
    got = await tenant.client.get(f"/v1/holds/{hold_id}", headers=tenant.headers())
    assert got.json()["status"] == "expired" and got.json()["resolve_entry_id"] is not None
    assert await release_expired_holds(db, program_id=tenant.program_id) == 0  # a hold resolves once
    balance = await tenant.balance("exp")
    assert (balance["available"], balance["held"]) == (100, 0)
    assert (await tenant.verify())["ok"]


async def test_a_lapsed_hold_is_spendable_before_the_job_runs(tenant, db):
    await _funded(tenant, "lapse", (100, None))
    hold_id = (await _hold(tenant, "lapse", 100)).json()["hold"]["id"]
    await db.execute("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = ledger.row_id('hold', $1)",
                     hold_id)
    r = await _post(tenant, "/v1/redemptions", {"member_id": "lapse", "points": 90})
    assert r.status_code == 201, r.text
    assert r.json()["balance"]["available"] == 10
    assert (await tenant.verify())["ok"]


async def test_hold_lifetime_limits(tenant):
    await _settings(tenant, hold_max_seconds=3600)
    await _funded(tenant, "life", (100, None))
    r = await _hold(tenant, "life", 10, expires_in_seconds=3601)
    assert r.status_code == 422 and r.json()["code"] == "hold_too_long"
    r = await _hold(tenant, "life", 10)
    assert r.status_code == 201
    created, expires = r.json()["hold"]["created_at"], r.json()["hold"]["expires_at"]
    from datetime import datetime

    delta = datetime.fromisoformat(expires) - datetime.fromisoformat(created)
    assert 890 <= delta.total_seconds() <= 910


async def test_refund_restores_expiry_and_reports_expired_part(tenant, db):
    await _funded(tenant, "ref", (100, "2030-01-01T00:00:00Z"), (100, "2035-01-01T00:00:00Z"))
    redemption = (await _post(tenant, "/v1/redemptions", {"member_id": "ref", "points": 150})).json()["redemption"]
    assert await _lots(db, tenant, "ref") == [0, 50]
    # the first lot expires meanwhile
    await db.execute(
        "UPDATE lots SET expires_at = now() - interval '1 day' WHERE member_id = "
        "(SELECT id FROM members WHERE program_id = $1 AND external_id = 'ref') AND points = 100 "
        "AND expires_at < '2031-01-01'", tenant.program_id)
    r = await _post(tenant, f"/v1/redemptions/{redemption['id']}/refunds", {"points": 30})
    assert r.status_code == 201, r.text
    body = r.json()
    # latest-expiring first: the 30 go back to the 2035 lot, available
    assert (body["refund"]["available_points"], body["refund"]["expired_points"]) == (30, 0)
    r = await _post(tenant, f"/v1/redemptions/{redemption['id']}/refunds", {"points": 120})
    body = r.json()
    assert (body["refund"]["available_points"], body["refund"]["expired_points"]) == (20, 100)
    assert body["redemption"]["refunded_points"] == 150
    assert body["balance"]["available"] == 100
    assert await _lots(db, tenant, "ref") == [0, 100]
    r = await _post(tenant, f"/v1/redemptions/{redemption['id']}/refunds", {"points": 1})
    assert r.status_code == 422 and r.json()["code"] == "refund_exceeds_redemption"
    assert r.json()["refundable"] == 0
    entry = await tenant.client.get(f"/v1/entries/{body['refund']['entry_id']}", headers=tenant.headers())
    assert sorted((p["account"], p["points"]) for p in entry.json()["postings"]) == [
        ("available", 20), ("expired", 100), ("redeemed", -120)]
    assert (await tenant.verify())["ok"]


async def test_refund_of_a_captured_hold(tenant):
    await _funded(tenant, "ref2", (200, None))
    hold_id = (await _hold(tenant, "ref2", 150)).json()["hold"]["id"]
    redemption = (await _post(tenant, f"/v1/holds/{hold_id}/capture")).json()["redemption"]
    r = await _post(tenant, f"/v1/redemptions/{redemption['id']}/refunds", {"points": 150})
    assert r.status_code == 201 and r.json()["balance"]["available"] == 200
    assert (await tenant.verify())["ok"]


async def test_other_programs_holds_and_redemptions_are_404(tenant, other_tenant):
    await _funded(tenant, "mine", (100, None))
    hold_id = (await _hold(tenant, "mine", 10)).json()["hold"]["id"]
    redemption_id = (await _post(tenant, "/v1/redemptions", {"member_id": "mine", "points": 10})).json()[
        "redemption"]["id"]
    for method, path in [("GET", f"/v1/holds/{hold_id}"), ("POST", f"/v1/holds/{hold_id}/capture"),
                         ("POST", f"/v1/holds/{hold_id}/void"), ("GET", f"/v1/redemptions/{redemption_id}"),
                         ("POST", f"/v1/redemptions/{redemption_id}/refunds")]:
        body = {"points": 5} if path.endswith("refunds") else None
        r = await other_tenant.client.request(method, path, json=body,
                                              headers=other_tenant.headers(idem=uuid.uuid4().hex))
        assert r.status_code == 404, (path, r.text)
    for path, body in [("/v1/holds", {"member_id": "mine", "points": 5}),
                       ("/v1/redemptions", {"member_id": "mine", "points": 5}),
                       ("/v1/redemptions/quote", {"member_id": "mine", "order_total": "5.00"})]:
        r = await _post(other_tenant, path, body)
        assert r.status_code == 404 and r.json()["code"] == "member_not_found"
    balance = await tenant.balance("mine")
    assert (balance["available"], balance["held"]) == (80, 10)


async def test_redeem_scope_is_required(tenant):
    await _funded(tenant, "scope", (100, None))
    earn = await tenant.key("earn", "read")
    r = await _post(tenant, "/v1/redemptions", {"member_id": "scope", "points": 5}, key=earn)
    assert r.status_code == 403
    redeem = await tenant.key("redeem")
    r = await _post(tenant, "/v1/redemptions", {"member_id": "scope", "points": 5}, key=redeem)
    assert r.status_code == 201


async def test_randomised_mix_verifies(tenant, db):
    from app.redemption.service import release_expired_holds

    members = [f"rm-{i}" for i in range(3)]
    for m in members:
        await _funded(tenant, m, (300, "2030-01-01T00:00:00Z"), (300, None), (200, "2029-01-01T00:00:00Z"))
    rng = random.Random(11)
    holds: list[int] = []
    redemptions: list[int] = []

    async def one() -> int:
        m = rng.choice(members)
        roll = rng.random()
        if roll < 0.25:
            r = await _hold(tenant, m, rng.randint(1, 120))
            if r.status_code == 201:
                holds.append(r.json()["hold"]["id"])
        elif roll < 0.45 and holds:
            h = rng.choice(holds)
            r = await _post(tenant, f"/v1/holds/{h}/capture", {"points": rng.randint(0, 30)} if rng.random() < .5
                            else None)
            if r.status_code == 200 and r.json()["redemption"]:
                redemptions.append(r.json()["redemption"]["id"])
        elif roll < 0.6 and holds:
            r = await _post(tenant, f"/v1/holds/{rng.choice(holds)}/void")
        elif roll < 0.8:
            r = await _post(tenant, "/v1/redemptions", {"member_id": m, "points": rng.randint(1, 100)})
            if r.status_code == 201:
                redemptions.append(r.json()["redemption"]["id"])
        elif roll < 0.9 and redemptions:
            r = await _post(tenant, f"/v1/redemptions/{rng.choice(redemptions)}/refunds",
                            {"points": rng.randint(1, 40)})
        else:
            r = await tenant.adjust(m, rng.randint(1, 50))
        return r.status_code

    for _ in range(4):
        statuses = await asyncio.gather(*[one() for _ in range(40)])
        assert all(s < 500 for s in statuses), statuses
        if holds:
            await db.execute("UPDATE holds SET expires_at = now() "
                             "WHERE id = ledger.row_id('hold', $1) AND status = 'open'",
                             holds[0])
        await release_expired_holds(db)
    report = await tenant.verify()
    assert report["ok"], report
    for m in members:
        assert (await tenant.balance(m))["available"] >= 0


async def test_write_answers_equal_what_reads_return_afterwards(tenant):
    """Redeem, hold, capture and void answer from what the write function returns (one round trip), not by
    reading back: those answers must be exactly what the read endpoints show right after."""
    await _funded(tenant, "ans", (500, "2031-01-01T00:00:00Z"), (200, None))

    async def get(path):
        r = await tenant.client.get(path, headers=tenant.headers())
        assert r.status_code == 200, r.text
        return r.json()

    redeemed = await _post(tenant, "/v1/redemptions", {"member_id": "ans", "points": 5, "reference": "o-1",
                                                        "description": "coffee"})
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["redemption"] == await get(f"/v1/redemptions/{redeemed.json()['redemption']['id']}")
    assert redeemed.json()["balance"] == await get("/v1/members/ans/balance")
    for resolution, body in (("capture", {"points": 60}), ("void", {})):
        held = await _post(tenant, "/v1/holds", {"member_id": "ans", "points": 100, "reference": f"o-{resolution}",
                                                  "description": "checkout", "metadata": {"cart": 7}})
        assert held.status_code == 201, held.text
        hold_id = held.json()["hold"]["id"]
        assert held.json()["hold"] == await get(f"/v1/holds/{hold_id}")
        assert held.json()["balance"] == await get("/v1/members/ans/balance")
        resolved = await _post(tenant, f"/v1/holds/{hold_id}/{resolution}", body)
        assert resolved.status_code in (200, 201), resolved.text
        assert resolved.json()["hold"] == await get(f"/v1/holds/{hold_id}")
        assert resolved.json()["balance"] == await get("/v1/members/ans/balance")
        if resolution == "capture":
            redemption = resolved.json()["redemption"]
            assert redemption["points"] == 60
            assert redemption == await get(f"/v1/redemptions/{redemption['id']}")
    assert (await get("/v1/members/ans/balance"))["available"] == 700 - 5 - 60
