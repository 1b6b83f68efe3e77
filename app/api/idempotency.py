"""Idempotent writes: the key record lives in the same transaction as the effect.

Flow for a write with ``Idempotency-Key: K`` (after the body has been validated; invalid requests are
never stored):

1. ``INSERT`` the key (program, K, request hash) ``ON CONFLICT DO NOTHING``. If another transaction is
   processing K right now, Postgres makes this insert wait for it (bounded by ``lock_timeout``, then
   409 ``request_in_progress``). If K is already stored, its request hash is compared: equal -> the
   stored status and body are replayed with ``Idempotent-Replayed: true``; different -> 422
   ``idempotency_key_reused``.
2. The effect runs in the same transaction; its response is stored on the key row; commit. A crash
   before commit loses both, never one of them.
3. A domain refusal (``insufficient_points``...) rolls the effect back and stores the refusal under
   the key in a fresh transaction, so a retry replays the same outcome even if the member has earned
   points since (TigerBeetle's ``id_already_failed``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.auth import Principal
from app.api.problems import domain_error_body
from app.errors import DomainError

CLAIM = """
INSERT INTO idempotency_keys (program_id, key, request_hash) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING 1
"""
STORED = "SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE program_id = $1 AND key = $2"
COMPLETE = """
UPDATE idempotency_keys SET status_code = $3, response_body = $4::text::jsonb WHERE program_id = $1 AND key = $2
"""
REMEMBER_REFUSAL = """
INSERT INTO idempotency_keys (program_id, key, request_hash, status_code, response_body)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1
"""
PURGE = "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(days => $1)"

# Answers that are not outcomes of the operation: the request was invalid (validation the service does
# itself, after parsing) or the key is busy/reused. A corrected request may reuse the key.
NOT_REMEMBERED = frozenset({
    "idempotency_key_reused", "request_in_progress", "validation_error", "currency_mismatch", "points_out_of_range",
})

# Required (a missing header is answered 400 idempotency_key_missing by the validation handler of
# app.api.problems, so the document and the service agree).
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key", min_length=1, max_length=255,
        description="A unique key per logical operation; a retry with the same key and body replays the "
        "original answer. Missing: 400 `idempotency_key_missing`.",
    ),
]

class SerialisedJSON(JSONResponse):
    """A JSON response whose content is JSON text already (pydantic's ``model_dump_json``)."""

    def render(self, content: Any) -> bytes:
        return content.encode() if isinstance(content, str) else super().render(content)


Effect = Callable[[asyncpg.Connection], Awaitable[tuple[int, BaseModel]]]


def request_hash(method: str, path: str, body: BaseModel | None) -> bytes:
    canonical = "" if body is None else json.dumps(
        body.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).digest()


def _replay(stored: asyncpg.Record, fingerprint: bytes) -> JSONResponse:
    if stored["request_hash"] != fingerprint:
        raise DomainError(
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request; use a new key for a new operation.",
        )
    status = stored["status_code"]
    media = "application/problem+json" if status >= 400 else "application/json"
    return JSONResponse(stored["response_body"], status_code=status, media_type=media,
                        headers={"Idempotent-Replayed": "true"})


async def run_idempotent(
    request: Request, principal: Principal, key: str | None, body: BaseModel | None, effect: Effect
) -> JSONResponse:
    if key is None:
        raise DomainError("idempotency_key_missing", "Send an Idempotency-Key header with every write.")
    fingerprint = request_hash(request.method, request.url.path, body)
    program = principal.program_id
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                try:
                    claimed = await conn.fetchval(CLAIM, program, key, fingerprint)
                except asyncpg.LockNotAvailableError:
                    raise DomainError("request_in_progress") from None
                if not claimed:
                    stored = await conn.fetchrow(STORED, program, key)
                    return _replay(stored, fingerprint)
                status, model = await effect(conn)
                payload = model.model_dump_json()  # serialised once: stored under the key and sent
                await conn.execute(COMPLETE, program, key, status, payload)
            # A natural-key replay (same order id, same content) is a replay too.
            headers = {"Idempotent-Replayed": "true"} if getattr(model, "replayed", False) else None
            return SerialisedJSON(payload, status_code=status, headers=headers)
        except DomainError as refusal:
            if refusal.code in NOT_REMEMBERED:
                raise
            return await _remember_refusal(conn, program, key, fingerprint, refusal)


async def _remember_refusal(
    conn: asyncpg.Connection, program: Any, key: str, fingerprint: bytes, refusal: DomainError
) -> JSONResponse:
    body = domain_error_body(refusal)
    async with conn.transaction():
        stored_now = await conn.fetchval(REMEMBER_REFUSAL, program, key, fingerprint, refusal.status, body)
        if not stored_now:  # a concurrent request with this key won the race: answer as it did
            return _replay(await conn.fetchrow(STORED, program, key), fingerprint)
    return JSONResponse(body, status_code=refusal.status, media_type="application/problem+json")


async def purge_expired(pool: asyncpg.Pool, retention_days: int) -> int:
    result = await pool.execute(PURGE, retention_days)
    return int(result.split()[-1])
