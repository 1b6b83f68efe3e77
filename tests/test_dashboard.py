"""The dashboard over plain HTTP (httpx against the app, real Postgres): sign-in with an admin key only, the
session cookie's flags, the CSRF checks of every form, logout, revocation ending sessions, the security headers,
and pages that show this program's figures only. The browser test is tests/test_dashboard_browser.py."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from app.dashboard import sessions
from app.dashboard.routes import CSP
from app.programs.keys import parse_prefix
from tests.conftest import Tenant, make_tenant

FORM = {"content-type": "application/x-www-form-urlencoded"}


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the form"
    return m.group(1)


def _set_cookies(r: httpx.Response) -> dict[str, str]:
    """name -> the whole Set-Cookie header, lower-cased."""
    return {h.split("=", 1)[0]: h.lower() for h in r.headers.get_list("set-cookie")}


@pytest.fixture
async def browser_client(app: Any) -> Any:
    """A client of its own (its own cookie jar), as a browser on the service's origin."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


async def _sign_in(c: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await c.get("/dashboard/login")
    assert page.status_code == 200
    return await c.post("/dashboard/login", data={"api_key": key, "csrf": _csrf(page.text)})


async def test_the_sign_in_page_and_its_headers(browser_client):
    r = await browser_client.get("/dashboard/login")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'none'" in CSP and "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "<script" not in r.text and " style=" not in r.text
    cookie = _set_cookies(r)[sessions.SIGNIN_COOKIE]
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back
    css = await browser_client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "@import" not in css.text and "url(" not in css.text  # nothing fetched from elsewhere


async def test_pages_without_a_session_send_to_the_sign_in(browser_client):
    for path in ("/dashboard", "/dashboard/segments", "/dashboard/liability", "/dashboard/rewards",
                 "/dashboard/members?member_id=x", "/dashboard/segments/champions",
                 "/dashboard/segments/champions/export.csv"):
        r = await browser_client.get(path)
        assert (r.status_code, r.headers["location"]) == (303, "/dashboard/login"), path
        assert r.headers["content-security-policy"] == CSP
    forged = await browser_client.get("/dashboard", headers={"Cookie": f"{sessions.COOKIE}=made-up"})
    assert forged.status_code == 303


async def test_an_admin_key_signs_in_and_gets_a_strict_cookie(tenant, browser_client, db):
    r = await _sign_in(browser_client, tenant.admin_key)
    assert (r.status_code, r.headers["location"]) == (303, "/dashboard")
    cookies = _set_cookies(r)
    session = cookies[sessions.COOKIE]
    assert "httponly" in session and "samesite=strict" in session and "path=/dashboard" in session
    assert "max-age=" in session and "secure" not in session
    assert "max-age=0" in cookies[sessions.SIGNIN_COOKIE] or 'expires=thu, 01 jan 1970' in cookies[
        sessions.SIGNIN_COOKIE]
    token = browser_client.cookies[sessions.COOKIE]
    rows = await db.fetch("SELECT token_hash, program_id FROM dashboard_sessions WHERE token_hash = $1",
                          sessions.token_hash(token))
    assert [r["program_id"] for r in rows] == [tenant.program_id]  # the database holds the hash, not the token
    assert not await db.fetchval("SELECT count(*) FROM dashboard_sessions WHERE token_hash = $1", token.encode())
    page = await browser_client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "Sign out" in page.text and str(tenant.program_id) in page.text


async def test_over_tls_the_cookies_are_secure(tenant, app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://test") as c:
        page = await c.get("/dashboard/login")
        assert "secure" in _set_cookies(page)[sessions.SIGNIN_COOKIE]
        r = await c.post("/dashboard/login", data={"api_key": tenant.admin_key, "csrf": _csrf(page.text)})
        assert r.status_code == 303
        assert "; secure" in _set_cookies(r)[sessions.COOKIE]


async def test_x_forwarded_proto_is_not_trusted(tenant, browser_client):
    page = await browser_client.get("/dashboard/login", headers={"X-Forwarded-Proto": "https"})
    assert "secure" not in _set_cookies(page)[sessions.SIGNIN_COOKIE]


@pytest.mark.parametrize("scopes", [("read",), ("earn", "redeem", "read")])
async def test_a_key_without_admin_cannot_sign_in(tenant, browser_client, scopes):
    key = await tenant.key(*scopes)
    r = await _sign_in(browser_client, key)
    assert r.status_code == 403
    assert "Only an admin key can sign in" in r.text
    assert sessions.COOKIE not in _set_cookies(r)
    assert (await browser_client.get("/dashboard")).status_code == 303


async def test_a_wrong_key_is_refused_and_counted_by_the_failed_auth_limiter(tenant, browser_client, app):
    limiter = app.state.failed_auth_limiter
    wrong = tenant.admin_key[:-4] + "AAAA"
    prefix = parse_prefix(wrong)
    assert prefix is not None
    assert prefix not in limiter.prefixes._items
    r = await _sign_in(browser_client, wrong)
    assert r.status_code == 401 and "not valid" in r.text
    assert sessions.COOKIE not in _set_cookies(r)
    assert prefix in limiter.prefixes._items  # the failure cost the prefix a token
    r = await _sign_in(browser_client, "not a key")
    assert r.status_code == 401


async def test_the_sign_in_form_is_csrf_safe(tenant, browser_client):
    page = await browser_client.get("/dashboard/login")
    token = _csrf(page.text)
    # no token, a token that is not the cookie's, and the right token from another site
    for data, headers in (({"api_key": tenant.admin_key}, {}),
                          ({"api_key": tenant.admin_key, "csrf": "x" * 43}, {}),
                          ({"api_key": tenant.admin_key, "csrf": token}, {"Origin": "https://evil.example"}),
                          ({"api_key": tenant.admin_key, "csrf": token}, {"Sec-Fetch-Site": "cross-site"})):
        r = await browser_client.post("/dashboard/login", data=data, headers=headers)
        assert r.status_code == 403, (data, headers)
        assert sessions.COOKIE not in _set_cookies(r)
    # a post without the sign-in cookie (a forged form: the attacker cannot set it) is refused too
    async with httpx.AsyncClient(transport=browser_client._transport, base_url="http://test") as other:
        r = await other.post("/dashboard/login", data={"api_key": tenant.admin_key, "csrf": token})
        assert r.status_code == 403


async def test_logout_needs_the_session_token_and_ends_the_session(tenant, browser_client, db):
    await _sign_in(browser_client, tenant.admin_key)
    page = await browser_client.get("/dashboard")
    csrf = _csrf(page.text)
    token = browser_client.cookies[sessions.COOKIE]
    assert csrf == sessions.csrf_for(token) and csrf not in token
    forged = await browser_client.post("/dashboard/logout", data={"csrf": "0" * 64})
    assert forged.status_code == 403 and "CSRF" in forged.text
    missing = await browser_client.post("/dashboard/logout", content=b"", headers=FORM)
    assert missing.status_code == 403
    cross = await browser_client.post("/dashboard/logout", data={"csrf": csrf}, headers={"Origin": "http://evil"})
    assert cross.status_code == 403
    assert (await browser_client.get("/dashboard")).status_code == 200  # still signed in
    assert (await browser_client.get("/dashboard/logout")).status_code == 405  # no state change by GET
    r = await browser_client.post("/dashboard/logout", data={"csrf": csrf},
                                  headers={"Origin": "http://test", "Sec-Fetch-Site": "same-origin"})
    assert (r.status_code, r.headers["location"]) == (303, "/dashboard/login?signed_out=1")
    assert not await db.fetchval("SELECT count(*) FROM dashboard_sessions WHERE token_hash = $1",
                                 sessions.token_hash(token))
    browser_client.cookies.clear()
    again = await browser_client.get("/dashboard", headers={"Cookie": f"{sessions.COOKIE}={token}"})  # replayed
    assert again.status_code == 303


async def test_revoking_the_key_ends_its_sessions(tenant, browser_client, db):
    key = await tenant.key("admin")
    await _sign_in(browser_client, key)
    assert (await browser_client.get("/dashboard")).status_code == 200
    listed = await tenant.client.get("/v1/api-keys", headers=tenant.headers())
    key_id = next(k["id"] for k in listed.json()["data"] if key.startswith(f"plk_{k['prefix']}_"))
    assert await sessions.sessions_of_key(db, uuid.UUID(key_id)) == 1
    r = await tenant.client.delete(f"/v1/api-keys/{key_id}", headers=tenant.headers())
    assert r.status_code == 204
    r = await browser_client.get("/dashboard")
    assert (r.status_code, r.headers["location"]) == (303, "/dashboard/login")


async def test_member_lookup_shows_the_apis_figures_and_never_another_programs_member(
        tenant: Tenant, browser_client, app, client):
    await tenant.member("dash-1", name="Ada")
    assert (await tenant.adjust("dash-1", 1500)).status_code == 201
    assert (await tenant.adjust("dash-1", -200)).status_code == 201
    other = await make_tenant(app, client)
    await other.member("dash-other")
    await _sign_in(browser_client, tenant.admin_key)
    page = await browser_client.get("/dashboard/members", params={"member_id": "dash-1"})
    assert page.status_code == 200
    balance = await tenant.balance("dash-1")
    assert f'id="available">{balance["available"]:,}<' in page.text
    assert f'id="lifetime-redeemed">{balance["lifetime_redeemed"]:,}<' in page.text
    activity = (await tenant.client.get("/v1/members/dash-1/activity", headers=tenant.headers())).json()
    assert all(f'data-entry-id="{e["id"]}"' in page.text for e in activity["data"])
    assert ">+1,500<" in page.text and ">-200<" in page.text  # the entries' movements of available points
    hidden = await browser_client.get("/dashboard/members", params={"member_id": "dash-other"})
    assert hidden.status_code == 404 and "No member dash-other in this programme" in hidden.text
    assert "dash-other" not in hidden.text.split('id="error"')[0].split("<main>")[1].replace(
        'value="dash-other"', "")
    bad = await browser_client.get("/dashboard/members", params={"member_id": "<script>"})
    assert bad.status_code == 422 and "<script>" not in bad.text


async def test_top_rewards_counts_the_exchanges_of_the_period(tenant: Tenant, browser_client):
    await tenant.member("dash-r")
    assert (await tenant.adjust("dash-r", 2000)).status_code == 201
    ids = {}
    for name, cost in (("Free coffee", 100), ("Tote bag", 300)):
        r = await tenant.client.post("/v1/rewards", json={"name": name, "kind": "product", "sku": name.upper(),
                                                          "cost_points": cost}, headers=tenant.headers())
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    for name, n in (("Free coffee", 3), ("Tote bag", 1)):
        for _ in range(n):
            r = await tenant.client.post(f"/v1/rewards/{ids[name]}/exchanges", json={"member_id": "dash-r"},
                                         headers=tenant.headers(idem=uuid.uuid4().hex))
            assert r.status_code == 201, r.text
    await _sign_in(browser_client, tenant.admin_key)
    page = await browser_client.get("/dashboard/rewards")
    assert page.status_code == 200
    rows = re.findall(r'<tr data-reward-id="([^"]+)">.*?data-field="exchanges">([\d,]+)<.*?data-field="points">'
                      r"([\d,]+)<", page.text, re.S)
    assert rows == [(ids["Free coffee"], "3", "300"), (ids["Tote bag"], "1", "300")]
    assert "<svg" in page.text
    past = await browser_client.get("/dashboard/rewards", params={"from": "2020-01-01", "to": "2020-01-31"})
    assert "No reward was exchanged in this period" in past.text


async def test_the_dashboard_is_not_in_the_api_document(app):
    assert not [p for p in app.openapi()["paths"] if p.startswith("/dashboard")]


async def test_failed_sign_ins_are_limited_like_failed_api_keys(tenant, browser_client, app):
    from app.api.auth import FailedAuthLimiter

    saved = app.state.failed_auth_limiter
    app.state.failed_auth_limiter = FailedAuthLimiter(rate=0.001, burst=1)
    try:
        wrong = tenant.admin_key[:-4] + "AAAA"
        assert (await _sign_in(browser_client, wrong)).status_code == 401
        r = await _sign_in(browser_client, wrong)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in r.text
        # the limit is per address and key prefix: the right key of that prefix waits too, without a lookup
        assert (await _sign_in(browser_client, tenant.admin_key)).status_code == 429
    finally:
        app.state.failed_auth_limiter = saved
    assert (await _sign_in(browser_client, tenant.admin_key)).status_code == 303


async def test_an_expired_session_sends_back_to_the_sign_in(tenant, browser_client, db):
    await _sign_in(browser_client, tenant.admin_key)
    token = browser_client.cookies[sessions.COOKIE]
    await db.execute("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
                     sessions.token_hash(token))
    r = await browser_client.get("/dashboard")
    assert (r.status_code, r.headers["location"]) == (303, "/dashboard/login")
    assert 'max-age=0' in _set_cookies(r)[sessions.COOKIE] or "01 jan 1970" in _set_cookies(r)[sessions.COOKIE]


async def test_forms_with_too_many_fields_or_the_wrong_type_are_refused(tenant, browser_client):
    page = await browser_client.get("/dashboard/login")
    token = _csrf(page.text)
    again = await browser_client.get("/dashboard/login")
    assert _csrf(again.text) == token  # one token per browser: two open sign-in tabs both work
    many = "&".join(f"f{i}=1" for i in range(50)) + f"&csrf={token}&api_key={tenant.admin_key}"
    r = await browser_client.post("/dashboard/login", content=many.encode(), headers=FORM)
    assert r.status_code == 403
    r = await browser_client.post("/dashboard/login", json={"csrf": token, "api_key": tenant.admin_key})
    assert r.status_code == 403
    assert (await browser_client.post("/dashboard/login", data={"csrf": token, "api_key": tenant.admin_key})
            ).status_code == 303


async def _purchase(tenant: Tenant, member: str, days_ago: int, amount: str) -> None:
    from datetime import UTC, datetime, timedelta

    r = await tenant.client.post("/v1/purchases", json={
        "member_id": member, "order_id": uuid.uuid4().hex, "currency": "EUR", "total": amount,
        "occurred_at": (datetime.now(UTC) - timedelta(days=days_ago, seconds=1)).isoformat(),
        "lines": [{"sku": "X", "quantity": 1, "unit_price": amount}]}, headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 201, r.text


def _cells(html: str, key: str) -> dict[str, dict[str, str]]:
    """The segments (or stages) table of the page: name -> {field: text}."""
    table = html.split(f'<table id="{key}s">')[1].split("</table>")[0]
    out = {}
    for name, row in re.findall(rf'<tr data-{key}="([^"]+)">(.*?)</tr>', table, re.S):
        out[name] = dict(re.findall(r'data-field="(\w+)">([^<]*)<', row))
    return out


async def test_segments_and_the_members_insight_are_the_apis(tenant: Tenant, browser_client, db, other_tenant):
    from datetime import UTC, datetime

    from app.insight.service import refresh

    await _sign_in(browser_client, tenant.admin_key)
    page = await browser_client.get("/dashboard/segments")
    assert page.status_code == 200 and 'id="not-refreshed"' in page.text
    for member, (last, count) in {"s-ann": (1, 5), "s-bob": (10, 4), "s-cyd": (50, 3), "s-dan": (100, 2),
                                  "s-eve": (300, 1)}.items():
        await tenant.member(member)
        for i in range(count):
            await _purchase(tenant, member, last + i, "100.00")
    await tenant.member("s-fay")
    await other_tenant.member("s-other")
    await _purchase(other_tenant, "s-other", 1, "999.00")
    await refresh(db, datetime.now(UTC), tenant.program_id)
    await _purchase(tenant, "s-eve", 0, "50.00")  # eve comes back: she moves at the next refresh
    await refresh(db, datetime.now(UTC), tenant.program_id)
    await refresh(db, datetime.now(UTC), other_tenant.program_id)

    api = (await tenant.client.get("/v1/segments", headers=tenant.headers())).json()
    page = await browser_client.get("/dashboard/segments")
    assert page.status_code == 200 and "<svg" in page.text
    for key in ("segment", "stage"):
        shown = _cells(page.text, key)
        expected = {(g[key] or "unscored"): {"members": f"{g['members']:,}", "spend": g["spend"],
                                             "moved_in": f"{g['moved_in']:,}", "moved_out": f"{g['moved_out']:,}"}
                    for g in api[f"{key}s"]}
        assert shown == expected, key
    assert sum(int(c["members"]) for c in _cells(page.text, "segment").values()) == 6  # not the other programme's
    assert sum(g["moved_in"] for g in api["segments"]) >= 1

    for g in api["segments"]:
        if not g["segment"] or not g["members"]:
            continue
        listed = (await tenant.client.get(f"/v1/segments/{g['segment']}/members", headers=tenant.headers())).json()
        one = await browser_client.get(f"/dashboard/segments/{g['segment']}")
        assert one.status_code == 200
        assert re.findall(r'<tr data-member-id="([^"]+)">', one.text) == [m["member_id"] for m in listed["data"]]
        csv_page = await browser_client.get(f"/dashboard/segments/{g['segment']}/export.csv")
        csv_api = await tenant.client.get(f"/v1/segments/{g['segment']}/members/export", params={"format": "csv"},
                                          headers=tenant.headers())
        assert csv_page.status_code == 200 and csv_page.headers["content-type"].startswith("text/csv")
        assert csv_page.headers["content-disposition"] == f'attachment; filename="{g["segment"]}.csv"'
        assert csv_page.text == csv_api.text and "s-other" not in csv_page.text
    assert (await browser_client.get("/dashboard/segments/nonsense")).status_code == 404
    assert (await browser_client.get("/dashboard/segments/champions?cursor=forged")).status_code == 422

    insight = (await tenant.client.get("/v1/members/s-ann/insights", headers=tenant.headers())).json()
    member = await browser_client.get("/dashboard/members", params={"member_id": "s-ann"})
    assert f'id="segment">{insight["segment"].replace("_", " ")}<' in member.text
    assert f'id="stage">{insight["stage"].replace("_", " ")}<' in member.text
    assert f'id="outstanding-value">{insight["points"]["outstanding_value"]} EUR<' in member.text


async def test_programme_health_shows_the_analytics_summary(tenant: Tenant, browser_client):
    from datetime import UTC, datetime, timedelta

    for member, days in (("h-ann", (1, 3, 40)), ("h-bob", (2,)), ("h-cyd", (70, 71))):
        await tenant.member(member)
        for d in days:
            await _purchase(tenant, member, d, "20.00")
    assert (await tenant.adjust("h-bob", -10)).status_code == 201
    await _sign_in(browser_client, tenant.admin_key)
    today = datetime.now(UTC).date()
    for params in ({"from": (today - timedelta(days=90)).isoformat(), "to": (today + timedelta(days=1)).isoformat(),
                    "granularity": "month"},
                   {"from": (today - timedelta(days=14)).isoformat(), "to": (today + timedelta(days=1)).isoformat(),
                    "granularity": "day"}):
        api = (await tenant.client.get("/v1/analytics/summary", params=params, headers=tenant.headers())).json()
        page = await browser_client.get("/dashboard", params=params)
        assert page.status_code == 200 and page.text.count("<svg") == 4
        rows = re.findall(r'<tr data-start="([^"]+)">(.*?)</tr>', page.text.split('id="periods"')[1], re.S)
        assert [start for start, _ in rows] == [p["start"] for p in api["periods"]]
        for (_, row), period in zip(rows, api["periods"], strict=True):
            shown = dict(re.findall(r'data-field="([\w.]+)" data-value="([^"]*)"', row))
            expected = {}
            for key, value in period.items():
                if isinstance(value, dict):
                    expected.update({f"{key}.{k}": str(v) for k, v in value.items()})
                elif key not in ("start", "end"):
                    expected[key] = str(value)
            assert shown == expected
        assert sum(p["purchases"] for p in api["periods"]) > 0
    bad = await browser_client.get("/dashboard", params={"from": "2026-01-01", "to": "2025-01-01"})
    assert bad.status_code == 422 and 'id="error"' in bad.text


async def test_liability_is_the_members_balances_and_the_summarys_value(tenant: Tenant, browser_client):
    from datetime import UTC, datetime, timedelta

    for member, points in (("l-ann", 1200), ("l-bob", 300)):
        await tenant.member(member)
        assert (await tenant.adjust(member, points)).status_code == 201
    await _purchase(tenant, "l-ann", 0, "30.00")  # pending points (the return window) count too
    await _sign_in(browser_client, tenant.admin_key)
    page = await browser_client.get("/dashboard/liability")
    assert page.status_code == 200
    balances = [await tenant.balance(m) for m in ("l-ann", "l-bob")]
    outstanding = sum(b["available"] + b["pending"] + b["held"] for b in balances)
    assert f'id="outstanding">{outstanding:,}<' in page.text
    assert f'id="available">{sum(b["available"] for b in balances):,}<' in page.text
    today = datetime.now(UTC).date()
    api = (await tenant.client.get("/v1/analytics/summary", params={
        "from": today.replace(day=1).isoformat(), "to": (today + timedelta(days=1)).isoformat(),
        "granularity": "month"}, headers=tenant.headers())).json()
    assert api["periods"][-1]["points"]["outstanding"] == outstanding
    assert f'id="outstanding-value">{api["periods"][-1]["points"]["outstanding_value"]} EUR<' in page.text
    forecast = (await tenant.client.get("/v1/analytics/liability", headers=tenant.headers())).json()
    assert forecast["outstanding"] == outstanding
    assert f'id="expected-redeemed">{forecast["expected_redeemed"]:,}<' in page.text
    assert f'id="expected-breakage">{forecast["expected_breakage"]:,}<' in page.text
    months = re.findall(r'<tr data-month="([^"]+)">.*?data-field="redeemed" data-value="(\d+)".*?'
                        r'data-field="breakage" data-value="(\d+)"', page.text, re.S)
    assert months == [(m["month"], str(m["redeemed"]), str(m["breakage"])) for m in forecast["months"]]


async def test_behind_a_tls_proxy_the_operator_makes_the_cookie_secure(tenant, browser_client, app):
    saved = app.state.settings
    app.state.settings = saved.model_copy(update={"dashboard_secure_cookie": True})
    try:
        page = await browser_client.get("/dashboard/login")
        assert "; secure" in _set_cookies(page)[sessions.SIGNIN_COOKIE]
    finally:
        app.state.settings = saved


@pytest.mark.parametrize("path", [
    "/dashboard?from=0001-01-01&to=9999-12-31&granularity=month",
    "/dashboard?from=2026-01-01&to=2026-01-01&granularity=day",
    "/dashboard?from=1999-01-01&to=2026-01-01&granularity=day",
    "/dashboard?from=x&to=y&granularity=hour",
    "/dashboard?from=9999-01-01&to=9999-12-31&granularity=month",
    "/dashboard?from=0001-01-01&to=0001-02-01&granularity=week",
    "/dashboard/rewards?from=0001-01-01&to=9999-12-31",
    "/dashboard/rewards?from=2026-02-30",
    "/dashboard/members?member_id=" + "x" * 200,
    "/dashboard/members?member_id=%00",
])
async def test_odd_queries_are_answered_not_crashed(tenant, browser_client, path):
    await _sign_in(browser_client, tenant.admin_key)
    r = await browser_client.get(path)
    assert r.status_code in (200, 404, 422), (path, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
