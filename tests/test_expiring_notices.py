"""points.expiring: the notice N days before points expire, each lot once per threshold (program setting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


async def _expiring(tenant):
    await tenant.settled()
    r = await tenant.client.get("/v1/changes", params={"types": "points.expiring", "limit": 500},
                                headers=tenant.headers())
    assert r.status_code == 200
    return r.json()["data"]


async def test_each_lot_is_announced_once_per_threshold(tenant, db):
    from app.expiry.service import announce_expiring

    now = datetime.now(UTC)
    await tenant.member("xp-1")
    for points, days in ((100, 20), (30, 5), (7, 40)):
        r = await tenant.adjust("xp-1", points, expires_at=(now + timedelta(days=days)).isoformat())
        assert r.status_code == 201, r.text
    await announce_expiring(db, now)
    first = await _expiring(tenant)
    assert sorted((e["data"]["within_days"], e["data"]["points"]) for e in first) == [(7, 30), (30, 100)]
    notice = next(e for e in first if e["data"]["within_days"] == 7)
    assert notice["member_id"] == "xp-1" and notice["data"]["member_id"] == "xp-1"
    bucket = notice["data"]["data"]
    assert len(bucket) == 1 and bucket[0]["points"] == 30
    # the bucket is what GET /expiring shows for that date
    listed = (await tenant.client.get("/v1/members/xp-1/expiring", params={"within_days": 7},
                                      headers=tenant.headers())).json()["data"]
    assert bucket == listed
    # again: nothing new
    await announce_expiring(db, now)
    assert len(await _expiring(tenant)) == 2
    # two weeks on, the 20-day lot is 6 days from its expiry (its 7-day notice), the 40-day one 26 (its 30-day)
    later = now + timedelta(days=14)
    await announce_expiring(db, later)
    await announce_expiring(db, later)
    notices = await _expiring(tenant)
    assert sorted((e["data"]["within_days"], e["data"]["points"]) for e in notices) == [
        (7, 30), (7, 100), (30, 7), (30, 100)]
    # points spent meanwhile are not announced
    r = await tenant.client.post("/v1/redemptions", json={"member_id": "xp-1", "points": 137},
                                 headers=tenant.headers(idem="spend-all"))
    assert r.status_code == 201, r.text
    await announce_expiring(db, now + timedelta(days=36))
    assert len(await _expiring(tenant)) == 4


async def test_thresholds_are_a_program_setting(tenant, db):
    from app.expiry.service import announce_expiring

    r = await tenant.client.patch("/v1/program", json={"settings": {"expiring_notice_days": [0]}},
                                  headers=tenant.headers())
    assert r.status_code == 422
    r = await tenant.client.patch("/v1/program", json={"settings": {"expiring_notice_days": [3, 14, 14]}},
                                  headers=tenant.headers())
    assert r.status_code == 200 and r.json()["settings"]["expiring_notice_days"] == [14, 3]
    now = datetime.now(UTC)
    await tenant.member("xs-1")
    assert (await tenant.adjust("xs-1", 10, expires_at=(now + timedelta(days=10)).isoformat())).status_code == 201
    await announce_expiring(db, now)
    assert [e["data"]["within_days"] for e in await _expiring(tenant)] == [14]
    r = await tenant.client.patch("/v1/program", json={"settings": {"expiring_notice_days": []}},
                                  headers=tenant.headers())
    assert r.status_code == 200
    await announce_expiring(db, now + timedelta(days=8))
    assert len(await _expiring(tenant)) == 1
