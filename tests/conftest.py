"""Test fixtures: real Postgres, one migrated database per xdist worker, a fresh program per test.

* ``TEST_DATABASE_URL`` or ``DATABASE_URL`` set: databases are created on that server (needs CREATEDB).
  Unset: the embedded Postgres of ``PL_DATA_DIR`` (default ``.data/pg``) is started.
* Tests commit for real (triggers, concurrency and idempotency races need real commits) and are isolated
  by tenant: every test gets its own program, and every query is scoped by program.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import TypeAdapter

from app.config import Settings
from app.db.urls import asyncpg_dsn, with_database

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    from app.db.embedded import start_embedded

    handle, uri = start_embedded(Settings().data_dir)
    _HANDLES.append(handle)
    return uri


_HANDLES: list[Any] = []


async def _create_db(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_db(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def fresh_database(server_url: str) -> Iterator[Any]:
    """Factory for empty databases on the test server, dropped at the end of the session."""
    created: list[str] = []

    def make(tag: str) -> str:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
        name = f"pl_test_{tag}_{worker}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        asyncio.run(_create_db(server_url, name))
        created.append(name)
        return with_database(server_url, name)

    yield make
    for name in created:
        asyncio.run(_drop_db(server_url, name))


@pytest.fixture(scope="session")
def database_url(fresh_database: Any) -> str:
    from app.db.migrate import upgrade

    url: str = fresh_database("main")
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, pool_min_size=2, pool_max_size=20, lock_timeout_ms=1500,
                    scheduler_enabled=False, webhook_worker=False, webhook_allow_private_urls=True,
                    statement_timeout_ms=10_000)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Any]:
    from app.main import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def db(app: Any) -> asyncpg.Pool:
    """Direct database access for assertions and for tampering in tests."""
    return app.state.pool  # type: ignore[no-any-return]


@dataclass
class Tenant:
    program_id: uuid.UUID
    admin_key: str
    client: httpx.AsyncClient
    pool: Any = None

    async def settled(self, seconds: float = 30.0) -> None:
        """Wait until the feed lists every event this program has committed. An event is listed once every
        transaction that could precede it has ended, and that horizon is the database server's: a write of
        another test worker (in its own database) holds it back for a moment too."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not await self.pool.fetchval(
                "SELECT ledger.changes_horizon() > coalesce(max(xid), 0) FROM changes WHERE program_id = $1",
                self.program_id):
            assert asyncio.get_running_loop().time() < deadline, "the feed did not settle"
            await asyncio.sleep(0.01)

    def headers(self, key: str | None = None, idem: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {key or self.admin_key}"}
        if idem:
            h["Idempotency-Key"] = idem
        return h

    async def key(self, *scopes: str) -> str:
        r = await self.client.post("/v1/api-keys", json={"name": "test", "scopes": list(scopes)},
                                   headers=self.headers())
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    async def member(self, member_id: str, **fields: Any) -> dict[str, Any]:
        r = await self.client.put(f"/v1/members/{member_id}", json=fields, headers=self.headers())
        assert r.status_code in (200, 201), r.text
        return r.json()  # type: ignore[no-any-return]

    async def adjust(self, member_id: str, points: int, idem: str | None = None, **extra: Any) -> httpx.Response:
        body = {"member_id": member_id, "points": points, "reason": extra.pop("reason", "test"), **extra}
        return await self.client.post("/v1/adjustments", json=body,
                                      headers=self.headers(idem=idem or uuid.uuid4().hex))

    async def balance(self, member_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/members/{member_id}/balance", headers=self.headers())
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def verify(self) -> dict[str, Any]:
        r = await self.client.post("/v1/admin/verify", headers=self.headers())
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def _documented_models() -> list[tuple[Any, set[str], dict[int, Any]]]:
    """(path regex, methods, status -> response model) of every API route, from the routers themselves."""
    from fastapi.routing import APIRoute

    from app.main import API_ROUTES

    out = []
    for module in API_ROUTES:
        for route in module.router.routes:
            if not isinstance(route, APIRoute) or route.response_model is None:
                continue
            models = {route.status_code or 200: route.response_model}
            for status, spec in (route.responses or {}).items():
                if isinstance(spec, dict) and "model" in spec and int(status) < 300:
                    models[int(status)] = spec["model"]
            out.append((route.path_regex, set(route.methods or ()), models))
    return out


_MODELS: list[tuple[Any, set[str], dict[int, Any]]] = []


async def conforms_to_the_document(response: httpx.Response) -> None:
    """Every successful JSON answer, rendered by Postgres or by pydantic, is exactly what its documented response
    model would render: the same fields, types and formats (a field too many, one missing, a date-time or a
    Decimal written differently fails)."""
    if not 200 <= response.status_code < 300 or response.headers.get("content-type") != "application/json":
        return
    if not _MODELS:
        _MODELS.extend(_documented_models())
    await response.aread()
    path, method = response.request.url.path, response.request.method
    for regex, methods, models in _MODELS:
        if method in methods and regex.match(path) and response.status_code in models:
            adapter = TypeAdapter(models[response.status_code])
            body = json.loads(response.content)
            rendered = json.loads(adapter.dump_json(adapter.validate_python(body)))
            assert rendered == body, f"{method} {path}: the answer differs from its documented model"
            return


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 event_hooks={"response": [conforms_to_the_document]}) as c:
        yield c


async def make_tenant(app: Any, client: httpx.AsyncClient, currency: str = "EUR") -> Tenant:
    from app.programs.schemas import ProgramCreate
    from app.programs.service import create_program

    async with app.state.pool.acquire() as conn, conn.transaction():
        program, key = await create_program(
            conn, ProgramCreate(name=f"test {uuid.uuid4().hex[:6]}", currency=currency, timezone="Europe/Berlin")
        )
    return Tenant(program_id=program.id, admin_key=key.key, client=client, pool=app.state.pool)


@pytest.fixture
async def tenant(app: Any, client: httpx.AsyncClient) -> Tenant:
    return await make_tenant(app, client)


@pytest.fixture
async def other_tenant(app: Any, client: httpx.AsyncClient) -> Tenant:
    return await make_tenant(app, client)


@dataclass
class LiveServer:
    url: str
    process: Any


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[LiveServer]:
    """The service as an integrator meets it: `points-ledger serve` in its own process, on a free port of
    127.0.0.1, against the session's test database (for browser and generated-client tests)."""
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PL_SCHEDULER_ENABLED": "false", "PL_WEBHOOK_WORKER": "false",
           "PL_LOG_LEVEL": "WARNING",
           "PL_PORT": str(port), "PL_WORKERS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--no-migrate"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)
        yield LiveServer(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
