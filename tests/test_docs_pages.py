"""/docs (Swagger UI) and /redoc (ReDoc) work offline: a real browser (Playwright driving Debian's Chromium)
loads both from the running service with every request to anywhere else refused, and both render the
whole API from the service's own assets."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# As the machine notes advise for a closed network, as root: no sandbox, no background traffic of its own.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium; `make test` does it as root)",
)


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: Any) -> Any:
    from playwright.async_api import async_playwright

    assert os.access(CHROMIUM, os.X_OK), "install Debian's chromium: apt-get install chromium (`make browser`)"
    async with async_playwright() as p:
        # Everything not on 127.0.0.1 goes to a proxy that is not there: refused, whatever the page asks for.
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True,
                                    proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1"})
        try:
            yield b
        finally:
            await b.close()


async def _open(browser: Any, url: str, service: str, shot: Path) -> tuple[Any, list[str], list[str], list[str]]:
    """Open ``url`` with every request outside ``service`` aborted; return the page, what was refused, what
    was served, and the console errors."""
    context = await browser.new_context()
    refused: list[str] = []
    served: list[str] = []
    errors: list[str] = []

    async def route(r: Any) -> None:
        if r.request.url.startswith(service + "/"):
            served.append(r.request.url)
            await r.continue_()
        else:
            refused.append(r.request.url)
            await r.abort("internetdisconnected")

    await context.route("**/*", route)
    page = await context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = await page.goto(url, wait_until="networkidle")
    assert response is not None and response.status == 200
    await page.screenshot(path=str(shot), full_page=False)
    return page, refused, served, errors


def _operations() -> list[dict[str, Any]]:
    from app.cli import OPENAPI_PATH

    doc = json.loads(OPENAPI_PATH.read_text())
    return [op for ops in doc["paths"].values() for op in ops.values()]


async def test_swagger_ui_renders_every_operation_offline(browser, live_server, tmp_path):
    page, refused, served, errors = await _open(browser, f"{live_server.url}/docs", live_server.url,
                                                tmp_path / "docs.png")
    await page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "points-ledger" in await page.inner_text(".swagger-ui .info .title")
    await page.wait_for_selector(".opblock", timeout=20_000)
    assert await page.locator(".opblock").count() == len(_operations())
    assert refused == [], refused
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in served), served
    assert any(u.endswith("/openapi.json") for u in served), served
    assert errors == [], errors


async def test_redoc_renders_the_reference_offline(browser, live_server, tmp_path):
    page, refused, served, errors = await _open(browser, f"{live_server.url}/redoc", live_server.url,
                                                tmp_path / "redoc.png")
    await page.wait_for_selector("h1", timeout=20_000)
    assert "points-ledger" in await page.inner_text("h1")
    text = await page.inner_text("body")
    for op in _operations()[:5]:
        assert op["summary"] in text, op["summary"]
    assert refused == [], refused
    assert any(u.endswith("/docs-assets/redoc.standalone.js") for u in served), served
    assert errors == [], errors
    if os.environ.get("PL_KEEP_SCREENSHOTS"):
        shutil.copy(tmp_path / "redoc.png", os.environ["PL_KEEP_SCREENSHOTS"])
