"""A revoked key stops working in every worker process before `DELETE /v1/api-keys/{id}` answers (issue 12 F1),
against a real server with two workers, each caching keys for 10 minutes.

The DELETE waits for an acknowledgement from the key-invalidation listener of every process (found by its
application_name in pg_stat_activity), so a stuck listener makes it answer 503 `revocation_unconfirmed` instead
of a 204 that other processes would contradict. Before, it answered as soon as its own transaction committed,
while other workers might still serve the key from their caches."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.db.urls import asyncpg_dsn

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="serves on SO_REUSEPORT sockets")

BIN = Path(sys.executable).parent / "points-ledger"
ACK_TIMEOUT_MS = 1500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _admin_key(database_url: str) -> str:
    from app.db.pool import create_pool
    from app.programs.schemas import ProgramCreate
    from app.programs.service import create_program

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            _, key = await create_program(conn, ProgramCreate(name="revocation", currency="EUR"))
    finally:
        await pool.close()
    return key.key


async def _listeners(database_url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                       "'points-ledger-keys' AND datname = current_database()"))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[dict[str, Any]]:
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PL_SCHEDULER_ENABLED": "false", "PL_LOG_LEVEL": "WARNING",
           "PL_API_KEY_CACHE_SECONDS": "600", "PL_INVALIDATION_ACK_TIMEOUT_MS": str(ACK_TIMEOUT_MS)}
    proc = subprocess.Popen([str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                             "--no-migrate"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield {"url": f"http://127.0.0.1:{port}", "admin": asyncio.run(_admin_key(database_url)),
               "database_url": database_url}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _get(base: str, key: str, times: int) -> list[int]:
    """``times`` requests with ``key``, each on a new connection (the kernel hands each to either worker)."""
    async def one() -> int:
        async with httpx.AsyncClient(base_url=base, timeout=30,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as c:
            return (await c.get("/v1/program", headers={"Authorization": f"Bearer {key}"})).status_code

    return list(await asyncio.gather(*[one() for _ in range(times)]))


async def _new_key(c: httpx.AsyncClient, admin: str) -> tuple[str, str]:
    r = await c.post("/v1/api-keys", json={"name": "doomed", "scopes": ["read"]},
                     headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


async def _wait_for_listeners(database_url: str, count: int) -> None:
    for _ in range(200):
        if await _listeners(database_url) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} key listeners")


async def test_a_revoked_key_is_refused_by_every_worker_as_soon_as_delete_answers(server):
    await _wait_for_listeners(server["database_url"], 2)
    admin = {"Authorization": f"Bearer {server['admin']}"}
    async with httpx.AsyncClient(base_url=server["url"], timeout=30) as c:
        for _ in range(4):
            key, key_id = await _new_key(c, server["admin"])
            assert await _get(server["url"], key, 12) == [200] * 12  # now cached in both workers
            r = await c.delete(f"/v1/api-keys/{key_id}", headers=admin)
            assert r.status_code == 204, r.text
            assert await _get(server["url"], key, 12) == [401] * 12
            await asyncio.sleep(0.2)
            assert await _get(server["url"], key, 4) == [401] * 4  # and stays revoked


async def test_delete_waits_for_every_listener_and_says_so_when_one_is_silent(server):
    """A listener connection that never acknowledges (a process whose event loop is stuck) holds the DELETE up
    to the timeout, then 503 revocation_unconfirmed; once it acknowledges, the DELETE (repeated) answers 204."""
    await _wait_for_listeners(server["database_url"], 2)
    admin = {"Authorization": f"Bearer {server['admin']}"}
    silent = await asyncpg.connect(asyncpg_dsn(server["database_url"]),
                                   server_settings={"application_name": "points-ledger-keys"})
    acknowledging = False

    def on_notify(conn: Any, pid: int, channel: str, payload: str) -> None:
        if acknowledging:
            token = payload.rsplit(":", 1)[1]
            asyncio.get_running_loop().create_task(conn.execute("SELECT pg_notify('points_ledger_keys_ack', $1)",
                                                                token))

    await silent.add_listener("points_ledger_keys", on_notify)
    try:
        async with httpx.AsyncClient(base_url=server["url"], timeout=30) as c:
            key, key_id = await _new_key(c, server["admin"])
            assert await _get(server["url"], key, 8) == [200] * 8
            started = time.monotonic()
            r = await c.delete(f"/v1/api-keys/{key_id}", headers=admin)
            waited = time.monotonic() - started
            assert r.status_code == 503 and r.json()["code"] == "revocation_unconfirmed", r.text
            assert r.headers["retry-after"] == "1"
            assert waited >= ACK_TIMEOUT_MS / 1000 * 0.9
            assert await _get(server["url"], key, 8) == [401] * 8  # the real workers did evict it
            acknowledging = True
            r = await c.delete(f"/v1/api-keys/{key_id}", headers=admin)  # repeated: the broadcast is repeated
            assert r.status_code == 204, r.text
    finally:
        await silent.close()
    # a listener that is gone is not waited for
    async with httpx.AsyncClient(base_url=server["url"], timeout=30) as c:
        key, key_id = await _new_key(c, server["admin"])
        r = await c.delete(f"/v1/api-keys/{key_id}", headers=admin)
        assert r.status_code == 204
