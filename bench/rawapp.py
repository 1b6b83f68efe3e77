"""The ceiling: the least an HTTP endpoint on this stack can cost. A bare ASGI app (no framework, no
validation, no auth, no idempotency) on plain asyncpg, served by uvicorn exactly like the service (same
workers, same pool size per worker, uvloop + httptools).

* ``GET /ping``: no database (checks the load client is not the bottleneck);
* ``GET /accounts/{id}``: one-row SELECT by primary key;
* ``POST /txn`` ``{"account_id", "amount"}``: INSERT one event + UPDATE one account, in one transaction.

Run by ``bench.run`` as ``uvicorn bench.rawapp:app`` with ``BENCH_RAW_DATABASE_URL`` set; the tables are
created by ``bench.seed`` in schema ``bench_raw``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg

from app.db.urls import asyncpg_dsn

GET_ROW = "SELECT id, balance, updated_at FROM bench_raw.accounts WHERE id = $1"
INSERT_EVENT = "INSERT INTO bench_raw.events (account_id, amount) VALUES ($1, $2)"
UPDATE_ACCOUNT = (
    "UPDATE bench_raw.accounts SET balance = balance + $2, updated_at = now() WHERE id = $1 RETURNING balance"
)

_pool: asyncpg.Pool | None = None
_JSON = [(b"content-type", b"application/json")]


async def _respond(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _lifespan(receive: Any, send: Any) -> None:
    global _pool
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _pool = await asyncpg.create_pool(
                asyncpg_dsn(os.environ["BENCH_RAW_DATABASE_URL"]),
                min_size=int(os.environ.get("PL_POOL_MIN_SIZE", "2")),
                max_size=int(os.environ.get("PL_POOL_MAX_SIZE", "10")),
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _pool is not None:
                await _pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    method: str = scope["method"]
    pool = _pool
    assert pool is not None
    if method == "GET" and path == "/ping":
        await _respond(send, 200, {"ok": True})
    elif method == "GET" and path.startswith("/accounts/"):
        try:
            account = int(path.rsplit("/", 1)[1])
        except ValueError:
            await _respond(send, 422, {"error": "bad id"})
            return
        row = await pool.fetchrow(GET_ROW, account)
        if row is None:
            await _respond(send, 404, {"error": "not found"})
        else:
            await _respond(send, 200, dict(row))
    elif method == "POST" and path == "/txn":
        data = json.loads(await _read_body(receive))
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(INSERT_EVENT, data["account_id"], data["amount"])
            balance = await conn.fetchval(UPDATE_ACCOUNT, data["account_id"], data["amount"])
        await _respond(send, 200, {"account_id": data["account_id"], "balance": balance})
    else:
        await _respond(send, 404, {"error": "not found"})
