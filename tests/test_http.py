"""HTTP behaviour shared by every route: problem+json, request ids, limits, health and metrics."""

from __future__ import annotations

import json

import httpx
import pytest


async def test_unknown_route_and_method_are_problems(client):
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "not_found"
    r = await client.patch("/healthz")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


async def test_request_id_is_echoed_or_generated(client):
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/healthz")
    assert len(r.headers["x-request-id"]) == 32
    r = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"


async def test_problem_bodies_carry_the_request_id_and_no_internals(tenant):
    r = await tenant.client.get("/v1/members/nobody/balance", headers={**tenant.headers(), "X-Request-ID": "rid-1"})
    body = r.json()
    assert body["request_id"] == "rid-1"
    assert set(body) >= {"type", "title", "status", "code", "detail"}
    assert "Traceback" not in r.text and "SELECT" not in r.text


async def test_oversized_body_is_413_and_writes_nothing(tenant, db):
    await tenant.member("big")
    big = {"member_id": "big", "points": 1, "reason": "x", "metadata": {"blob": "x" * 2_000_000}}
    r = await tenant.client.post("/v1/adjustments", content=json.dumps(big),
                                 headers={**tenant.headers(idem="big"), "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert (await tenant.balance("big"))["available"] == 0


async def test_deeply_nested_body_is_a_client_error(tenant):
    await tenant.member("deep")
    nested = "[" * 5000 + "]" * 5000
    body = '{"member_id": "deep", "points": 1, "reason": "x", "metadata": {"n": ' + nested + "}}"
    r = await tenant.client.post("/v1/adjustments", content=body,
                                 headers={**tenant.headers(idem="deep"), "content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert (await tenant.balance("deep"))["available"] == 0


async def test_health_readiness_and_metrics_off_by_default(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    # issue 12 F9: /metrics is unauthenticated, so it is off unless PL_METRICS_ENABLED: 404 like any unknown path
    r = await client.get("/metrics")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert "points_ledger" not in r.text


async def test_metrics_when_enabled(settings):
    import httpx

    from app.main import create_app

    app = create_app(settings.model_copy(update={"metrics_enabled": True}))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://m") as c:
        await c.get("/v1/members/x/balance")
        r = await c.get("/metrics")
        assert r.status_code == 200
        line = 'points_ledger_http_requests_total{method="GET",route="/v1/members/{member_id}/balance",status="401"}'
        assert line in r.text
        assert "points_ledger_db_pool_size" in r.text


async def test_unexpected_errors_are_bare_500s_with_the_request_id(tenant, monkeypatch):
    from app.ledger import service

    async def boom(*args, **kwargs):
        raise RuntimeError("SELECT secret FROM internals")

    monkeypatch.setattr(service, "balance_json", boom)
    await tenant.member("boom")
    r = await tenant.client.get("/v1/members/boom/balance", headers={**tenant.headers(), "X-Request-ID": "rid-500"})
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error" and r.json()["request_id"] == "rid-500"
    assert r.headers["x-request-id"] == "rid-500"
    assert "SELECT" not in r.text and "Traceback" not in r.text


async def test_405_carries_allow(client):
    r = await client.request("TRACE", "/healthz")
    assert r.status_code == 405 and "GET" in r.headers.get("allow", "")


async def test_oversized_chunked_body_is_413(tenant):
    async def chunks():
        for _ in range(20):
            yield b"x" * 100_000

    r = await tenant.client.post("/v1/adjustments", content=chunks(),
                                 headers={**tenant.headers(idem="chunked"), "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


async def test_the_conformance_check_of_every_answer_catches_a_drift():
    """tests/conftest.py checks every successful answer against its documented model; prove it is not vacuous."""
    from tests.conftest import conforms_to_the_document

    request = httpx.Request("GET", "http://test/v1/members/m-1/balance")
    good = {"member_id": "m-1", "available": 1, "pending": 0, "held": 0, "lifetime_earned": 1, "lifetime_redeemed": 0,
            "next_expiry_at": "2027-01-01T00:00:00Z", "next_expiry_points": 1, "tier": None}
    await conforms_to_the_document(httpx.Response(200, json=good, request=request))
    for bad in ({**good, "extra": 1}, {**good, "next_expiry_at": "2027-01-01T00:00:00+00:00"},
                {k: v for k, v in good.items() if k != "tier"}):
        with pytest.raises(AssertionError):
            await conforms_to_the_document(httpx.Response(200, json=bad, request=request))
