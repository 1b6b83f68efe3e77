"""Idempotency-Key semantics on ledger writes."""

from __future__ import annotations

import asyncio


async def test_missing_key_is_400_and_writes_nothing(tenant, db):
    await tenant.member("i0")
    r = await tenant.client.post("/v1/adjustments", json={"member_id": "i0", "points": 5, "reason": "x"},
                                 headers=tenant.headers())
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_missing"
    assert (await tenant.balance("i0"))["available"] == 0


async def test_same_key_same_body_replays_without_second_effect(tenant):
    await tenant.member("i1")
    first = await tenant.adjust("i1", 40, idem="k-1")
    second = await tenant.adjust("i1", 40, idem="k-1")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert (await tenant.balance("i1"))["available"] == 40


async def test_body_key_order_and_whitespace_do_not_matter(tenant):
    await tenant.member("i1b")
    a = await tenant.client.post(
        "/v1/adjustments", content=b'{"member_id":"i1b","points":3,"reason":"x"}',
        headers={**tenant.headers(idem="k-order"), "content-type": "application/json"})
    b = await tenant.client.post(
        "/v1/adjustments", content=b'{ "reason": "x",  "points": 3, "member_id": "i1b" }',
        headers={**tenant.headers(idem="k-order"), "content-type": "application/json"})
    assert a.status_code == b.status_code == 201
    assert b.headers["idempotent-replayed"] == "true"
    assert (await tenant.balance("i1b"))["available"] == 3


async def test_same_key_different_body_is_422(tenant):
    await tenant.member("i2")
    await tenant.adjust("i2", 40, idem="k-2")
    r = await tenant.adjust("i2", 41, idem="k-2")
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    r = await tenant.client.post("/v1/entries/1/reverse", json={"reason": "x"}, headers=tenant.headers(idem="k-2"))
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert (await tenant.balance("i2"))["available"] == 40


async def test_keys_are_scoped_per_program(tenant, other_tenant):
    for t in (tenant, other_tenant):
        await t.member("i3")
        assert (await t.adjust("i3", 7, idem="shared-key")).status_code == 201
        assert (await t.balance("i3"))["available"] == 7


async def test_a_refusal_is_remembered_for_its_key(tenant):
    """A retry can never flip an outcome the client may already have shown."""
    await tenant.member("i4")
    refused = await tenant.adjust("i4", -10, idem="k-4")
    assert refused.status_code == 422 and refused.json()["code"] == "insufficient_points"
    await tenant.adjust("i4", 100)
    retry = await tenant.adjust("i4", -10, idem="k-4")
    assert retry.status_code == 422
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == refused.json()
    assert (await tenant.balance("i4"))["available"] == 100


async def test_validation_failures_are_not_stored(tenant):
    await tenant.member("i5")
    bad = await tenant.adjust("i5", 0, idem="k-5")
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    good = await tenant.adjust("i5", 9, idem="k-5")
    assert good.status_code == 201


async def test_fifty_concurrent_identical_requests_have_one_effect(tenant, db):
    await tenant.member("i6")
    responses = await asyncio.gather(*[tenant.adjust("i6", 25, idem="k-6") for _ in range(50)])
    statuses = [r.status_code for r in responses]
    # Every duplicate waited for the original and replayed it; none may fail.
    assert statuses == [201] * 50, statuses
    bodies = [r.json() for r in responses]
    assert all(b == bodies[0] for b in bodies)
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
    assert (await tenant.balance("i6"))["available"] == 25
    entries = await db.fetchval("SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id)
    assert entries == 1
    assert (await tenant.verify())["ok"]


async def test_concurrent_identical_refusals_are_one_outcome(tenant):
    await tenant.member("i7")
    responses = await asyncio.gather(*[tenant.adjust("i7", -5, idem="k-7") for _ in range(20)])
    assert {r.status_code for r in responses} == {422}
    assert len({r.json()["code"] for r in responses}) == 1


async def test_purge_removes_only_expired_keys(tenant, db):
    from app.api.idempotency import purge_expired

    await tenant.member("i8")
    await tenant.adjust("i8", 1, idem="old")
    await tenant.adjust("i8", 1, idem="new")
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '8 days' WHERE program_id = $1 AND key = 'old'",
        tenant.program_id,
    )
    assert await purge_expired(db, 7) >= 1
    keys = await db.fetch("SELECT key FROM idempotency_keys WHERE program_id = $1", tenant.program_id)
    assert [k["key"] for k in keys] == ["new"]


# --- the Idempotency-Key header itself (issue 12 F5) -------------------------------------------------------------


def _adjustment(member_id: str, points: int) -> dict:
    return {"member_id": member_id, "points": points, "reason": "ws"}


async def test_surrounding_whitespace_is_stripped_on_both_sides(tenant):
    """" k", "k " and "k" are one key: the first posts, the other two replay it (trailing whitespace used to
    make a new key while leading whitespace was stripped)."""
    await tenant.member("i-ws")
    answers = []
    for value in ("k-ws", " k-ws", "k-ws ", "\tk-ws\t "):
        answers.append(await tenant.client.post("/v1/adjustments", json=_adjustment("i-ws", 7),
                                                headers={**tenant.headers(), "Idempotency-Key": value}))
    assert [r.status_code for r in answers] == [201] * 4
    assert "idempotent-replayed" not in answers[0].headers
    assert all(r.headers["idempotent-replayed"] == "true" and r.json() == answers[0].json() for r in answers[1:])
    assert (await tenant.balance("i-ws"))["available"] == 7
    # another body under the stripped key is the reuse of that key
    r = await tenant.client.post("/v1/adjustments", json=_adjustment("i-ws", 8),
                                 headers={**tenant.headers(), "Idempotency-Key": "k-ws  "})
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"


async def test_two_idempotency_key_headers_are_refused_and_write_nothing(tenant, db):
    await tenant.member("i-two")
    headers = [("Authorization", f"Bearer {tenant.admin_key}"), ("Idempotency-Key", "k-two-a"),
               ("Idempotency-Key", "k-two-b")]
    r = await tenant.client.post("/v1/adjustments", json=_adjustment("i-two", 5), headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_invalid", r.text
    assert "exactly one" in r.json()["detail"]
    assert (await tenant.balance("i-two"))["available"] == 0
    stored = await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE program_id = $1 AND key LIKE 'k-two%'",
                               tenant.program_id)
    assert stored == 0
    # the same header twice with the same value is still two headers
    same = [headers[0], ("Idempotency-Key", "k-two-a"), ("Idempotency-Key", "k-two-a")]
    r = await tenant.client.post("/v1/adjustments", json=_adjustment("i-two", 5), headers=same)
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_invalid"
    # one header: accepted
    r = await tenant.client.post("/v1/adjustments", json=_adjustment("i-two", 5), headers=headers[:2])
    assert r.status_code == 201


async def test_malformed_keys_are_400_and_authentication_comes_first(tenant, client):
    await tenant.member("i-bad")
    for value, code in (("   ", "idempotency_key_missing"), ("k" * 256, "idempotency_key_invalid"),
                        ("caf\u00e9".encode(), "idempotency_key_invalid"), ("a\x7fb", "idempotency_key_invalid")):
        r = await tenant.client.post("/v1/adjustments", json=_adjustment("i-bad", 5),
                                     headers={**tenant.headers(), "Idempotency-Key": value})
        assert r.status_code == 400 and r.json()["code"] == code, (value, r.text)
    r = await tenant.client.post("/v1/adjustments", json=_adjustment("i-bad", 5),
                                 headers={**tenant.headers(), "Idempotency-Key": "k" * 255})
    assert r.status_code == 201
    # without a valid API key, two headers are still 401 first
    r = await client.post("/v1/adjustments", json=_adjustment("i-bad", 5),
                          headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
    assert r.status_code == 401
    assert (await tenant.balance("i-bad"))["available"] == 5


def test_parse_idempotency_key_rules():
    import pytest

    from app.api.idempotency_key import parse_idempotency_key
    from app.errors import DomainError

    assert parse_idempotency_key([" order 7 \t"]) == "order 7"
    for values in ([], [""], ["a", "b"], ["x" * 256], ["\u00e9"]):
        with pytest.raises(DomainError):
            parse_idempotency_key(values)
