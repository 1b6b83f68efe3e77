"""API documentation pages that work offline: ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their
scripts, styles and icon served by this service from an installed package (``fastapi-offline`` ships the
Swagger UI and ReDoc bundles), never from a CDN. An operator behind a firewall, or a developer on a train,
sees the same pages. ReDoc's Google Fonts are off (the page falls back to local fonts), Swagger UI's
online validator badge is off, and the one address ReDoc's bundle still fetches by itself (the "API docs by
Redocly" logo, an image that hides itself when it fails to load) is replaced in the served copy by an empty
data URL, so the browser asks nothing of the network. A browser test (``tests/test_docs_pages.py``) loads
both pages with every request to anywhere but this service refused.

Registered as plain Starlette routes: they are public and not part of the API (nor of its document).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

ASSETS_URL = "/docs-assets"
ASSETS = Path(str(files("fastapi_offline") / "static"))
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


def install_docs(app: FastAPI, title: str) -> None:
    redoc_js = (ASSETS / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, b"data:,")

    async def redoc_bundle(request: Request) -> Response:
        return Response(redoc_js, media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"})

    # (before the mount, which would otherwise serve the file as shipped)
    app.add_route(f"{ASSETS_URL}/redoc.standalone.js", redoc_bundle, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - API reference",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False,
        )

    app.add_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
