"""The dashboard in a real browser: Playwright drives Debian's Chromium against the service started as
`points-ledger serve` (the live_server fixture). Every request the browser makes is recorded, and anything not
for the service on 127.0.0.1 is refused, so the pages provably need nothing from elsewhere. The console must
stay clean (a Content-Security-Policy violation is a console error).

The test signs in (a read key cannot), checks the figures on each page against the API, checks that a forged
cross-site form cannot sign the user out (SameSite=Strict, CSRF token), signs out, and saves a screenshot of each
page in PL_SCREENSHOT_DIR (default build/screenshots/; the README's are in tests/screenshots/, refreshed with
`PL_SCREENSHOT_DIR=tests/screenshots .venv/bin/pytest tests/test_dashboard_browser.py`)."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.insight.service import refresh
from tests.test_docs_pages import ARGS, CHROMIUM

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium; `make test` does it as root)",
)

ROOT = Path(__file__).resolve().parents[1]
EVIL = "http://evil.test"


def _shots() -> Path:
    folder = Path(os.environ.get("PL_SCREENSHOT_DIR") or ROOT / "build" / "screenshots")
    folder = folder if folder.is_absolute() else ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
async def browser() -> Any:
    from playwright.async_api import async_playwright

    assert os.access(CHROMIUM, os.X_OK), "install Debian's chromium: apt-get install chromium (`make browser`)"
    async with async_playwright() as p:
        # Everything not on 127.0.0.1 goes to a proxy that is not there, should the route below miss it.
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True,
                                    proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1"})
        try:
            yield b
        finally:
            await b.close()


class Recorder:
    """Routes every request of a browser context: the service's go through, the forged site's page is served
    from here (it never reaches a network), anything else is refused and noted."""

    def __init__(self, service: str) -> None:
        self.service = urlsplit(service)
        self.seen: list[str] = []
        self.refused: list[str] = []
        self.evil_page = ""

    async def route(self, r: Any) -> None:
        url = r.request.url
        parts = urlsplit(url)
        self.seen.append(url)
        if (parts.scheme, parts.hostname, parts.port) == ("http", "127.0.0.1", self.service.port):
            await r.continue_()
        elif url.startswith(EVIL + "/"):
            await r.fulfill(status=200, content_type="text/html", body=self.evil_page)
        else:
            self.refused.append(url)
            await r.abort("internetdisconnected")


async def _api(live_server: Any, key: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=live_server.url, headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.get(path)
        assert r.status_code == 200, r.text
        return r.json()


async def _sign_in(page: Any, url: str, key: str) -> None:
    await page.goto(f"{url}/dashboard/login")
    await page.fill("#api_key", key)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")


async def test_the_dashboard_in_a_browser(browser, live_server, tenant, other_tenant):
    url = live_server.url
    # A programme with a member, points, two rewards and exchanges; another programme with its own member.
    await tenant.member("cust-1001", name="Ada Lovelace")
    assert (await tenant.adjust("cust-1001", 2500)).status_code == 201
    ids = {}
    for name, cost in (("Free coffee", 150), ("Tote bag", 400)):
        r = await tenant.client.post("/v1/rewards", json={"name": name, "kind": "product", "sku": name.upper(),
                                                          "cost_points": cost}, headers=tenant.headers())
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    for name, n in (("Free coffee", 2), ("Tote bag", 1)):
        for _ in range(n):
            r = await tenant.client.post(f"/v1/rewards/{ids[name]}/exchanges", json={"member_id": "cust-1001"},
                                         headers=tenant.headers(idem=uuid.uuid4().hex))
            assert r.status_code == 201, r.text
    await other_tenant.member("cust-elsewhere")
    # Purchases over the last months, so that the health and segment pages have something to draw.
    for n, (member, days) in enumerate({"cust-1001": (2, 20, 45, 80), "cust-1002": (5, 100, 130),
                                        "cust-1003": (1, 9, 33, 61, 150, 200), "cust-1004": (250,),
                                        "cust-1005": (3,)}.items()):
        await tenant.member(member)
        for d in days:
            r = await tenant.client.post("/v1/purchases", json={
                "member_id": member, "order_id": uuid.uuid4().hex, "currency": "EUR", "total": f"{20 + 7 * n}.00",
                "occurred_at": (datetime.now(UTC) - timedelta(days=d, seconds=1)).isoformat(),
                "lines": [{"sku": "X", "quantity": 1, "unit_price": f"{20 + 7 * n}.00"}]},
                headers=tenant.headers(idem=uuid.uuid4().hex))
            assert r.status_code == 201, r.text
    await refresh(tenant.pool, datetime.now(UTC) - timedelta(days=30), tenant.program_id)
    await refresh(tenant.pool, datetime.now(UTC), tenant.program_id)
    read_key = await tenant.key("read")

    recorder = Recorder(url)
    context = await browser.new_context(viewport={"width": 1200, "height": 820})
    await context.route("**/*", recorder.route)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    shots = _shots()
    try:
        # A read key cannot sign in: the page says why, and no session cookie is set.
        await _sign_in(page, url, read_key)
        assert "Only an admin key can sign in" in await page.inner_text("#error")
        assert page.url.endswith("/dashboard/login")
        assert not [c for c in await context.cookies() if c["name"] == "pl_dashboard"]
        await page.screenshot(path=str(shots / "dashboard-sign-in-refused.png"))

        # The admin key signs in: a session cookie the page's own code could not read (HttpOnly), Strict.
        await _sign_in(page, url, tenant.admin_key)
        assert urlsplit(page.url).path == "/dashboard"
        (cookie,) = [c for c in await context.cookies() if c["name"] == "pl_dashboard"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
        assert "Sign out" in await page.inner_text("header")
        # Programme health: the figures of GET /v1/analytics/summary for the same query, period by period.
        query = f"from={date.today().replace(day=1) - timedelta(days=330)}&to={date.today() + timedelta(days=1)}"
        await page.goto(f"{url}/dashboard?{query}&granularity=month")
        summary = await _api(live_server, tenant.admin_key, f"/v1/analytics/summary?{query}&granularity=month")
        shown = await page.eval_on_selector_all(
            "#periods tbody tr", "rows => rows.map(r => [r.dataset.start, Object.fromEntries("
            "[...r.querySelectorAll('[data-field]')].map(c => [c.dataset.field, c.dataset.value]))])")
        assert [s for s, _ in shown] == [p["start"] for p in summary["periods"]]
        for (_, cells), period in zip(shown, summary["periods"], strict=True):
            assert cells["purchases"] == str(period["purchases"]) and cells["spend"] == period["spend"]
            assert cells["points.outstanding"] == str(period["points"]["outstanding"])
            assert cells["members.active"] == str(period["members"]["active"])
        assert await page.locator("svg.chart-line").count() == 4
        await page.screenshot(path=str(shots / "dashboard-health.png"), full_page=True)

        # Segments: the sizes of GET /v1/segments.
        await page.click("nav >> text=Segments")
        segments = await _api(live_server, tenant.admin_key, "/v1/segments")
        sizes = await page.eval_on_selector_all(
            "#segments tbody tr", "rows => rows.map(r => [r.dataset.segment, "
            "r.querySelector('[data-field=members]').textContent])")
        assert sizes == [[g["segment"] or "unscored", f"{g['members']:,}"] for g in segments["segments"]]
        await page.screenshot(path=str(shots / "dashboard-segments.png"), full_page=True)

        # Liability: the outstanding points and the forecast of GET /v1/analytics/liability.
        await page.click("nav >> text=Liability")
        forecast = await _api(live_server, tenant.admin_key, "/v1/analytics/liability")
        assert await page.inner_text("#outstanding") == f"{forecast['outstanding']:,}"
        assert await page.inner_text("#expected-redeemed") == f"{forecast['expected_redeemed']:,}"
        assert await page.inner_text("#expected-breakage") == f"{forecast['expected_breakage']:,}"
        months = await page.eval_on_selector_all("#forecast-months tbody tr", "rows => rows.map(r => r.dataset.month)")
        assert months == [m["month"] for m in forecast["months"]]
        await page.screenshot(path=str(shots / "dashboard-liability.png"), full_page=True)

        # Member lookup: the figures of GET /v1/members/{id}/balance and the activity of the API.
        await page.click("nav >> text=Member lookup")
        await page.fill("#member_id", "cust-1001")
        await page.click("form.lookup button")
        await page.wait_for_selector("#member")
        balance = await _api(live_server, tenant.admin_key, "/v1/members/cust-1001/balance")
        for field in ("available", "pending", "held"):
            assert await page.inner_text(f"#{field}") == f"{balance[field]:,}", field
        assert await page.inner_text("#lifetime-redeemed") == f"{balance['lifetime_redeemed']:,}"
        activity = await _api(live_server, tenant.admin_key, "/v1/members/cust-1001/activity")
        shown = await page.eval_on_selector_all("#activity tbody tr", "rows => rows.map(r => r.dataset.entryId)")
        assert shown == [e["id"] for e in activity["data"]]
        await page.screenshot(path=str(shots / "dashboard-member.png"), full_page=True)

        # Another programme's member is not found.
        await page.fill("#member_id", "cust-elsewhere")
        await page.click("form.lookup button")
        assert "No member cust-elsewhere in this programme" in await page.inner_text("#error")

        # Top rewards: the exchanges made above, most exchanged first, as the SVG chart and the table say.
        await page.click("nav >> text=Top rewards")
        rows = await page.eval_on_selector_all(
            "#top-rewards tbody tr",
            "rows => rows.map(r => [r.dataset.rewardId, r.querySelector('[data-field=exchanges]').textContent])")
        assert rows == [[ids["Free coffee"], "2"], [ids["Tote bag"], "1"]]
        bars = await page.eval_on_selector_all("svg.chart-bar g.bar", "gs => gs.map(g => g.dataset.value)")
        assert bars == ["2", "1"]
        await page.screenshot(path=str(shots / "dashboard-rewards.png"), full_page=True)

        # A forged form on another site posting to the logout: the browser does not send the Strict cookie with
        # it (and the token is wrong anyway), so the session survives.
        recorder.evil_page = (f'<form method="post" action="{url}/dashboard/logout">'
                              '<input type="hidden" name="csrf" value="forged"><button id="go">win</button></form>')
        await page.goto(f"{EVIL}/prize")
        await page.click("#go")
        await page.wait_for_load_state("networkidle")
        assert urlsplit(page.url).path == "/dashboard/login"
        await page.goto(f"{url}/dashboard")
        assert urlsplit(page.url).path == "/dashboard" and "Sign out" in await page.inner_text("header")
        # The same post from the dashboard's own origin with the session cookie but a wrong token: refused.
        forged = await page.request.post(f"{url}/dashboard/logout", form={"csrf": "0" * 64},
                                         headers={"Origin": url}, max_redirects=0)
        assert forged.status == 403
        await page.goto(f"{url}/dashboard")
        assert urlsplit(page.url).path == "/dashboard"

        # Sign out: back on the sign-in page; the pages ask for a sign-in again.
        await page.click("form.logout button")
        await page.wait_for_load_state("networkidle")
        assert "You are signed out" in await page.inner_text("#notice")
        await page.goto(f"{url}/dashboard/rewards")
        assert urlsplit(page.url).path == "/dashboard/login"
    finally:
        await context.close()

    # Nothing left the machine: every request was for the service on 127.0.0.1 (or the forged page, served here).
    assert recorder.refused == []
    hosts = {urlsplit(u).hostname for u in recorder.seen if not u.startswith(EVIL + "/")}
    assert hosts == {"127.0.0.1"}
    assert any(u.endswith("/dashboard/static/dashboard.css") for u in recorder.seen)
    # The console reports the refused sign-in (403) and the member of another programme (404), nothing else: no
    # Content-Security-Policy violation, no failed resource.
    expected = [f"Failed to load resource: the server responded with a status of {s}" for s in
                ("403 (Forbidden)", "404 (Not Found)")]
    assert errors == expected, errors
    assert re.search(r"dashboard-health\.png", " ".join(p.name for p in shots.iterdir()))
