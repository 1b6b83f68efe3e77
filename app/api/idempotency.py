"""Idempotent writes: the key record lives in the same statement as the effect.

Flow for a write with ``Idempotency-Key: K`` (after the body has been validated; invalid requests are never
stored): the service computes the request's fingerprint (method, path, canonical body) and runs the write's SQL
function, which (migrations/functions/40_idempotency.sql)

1. looks K up: stored with the same fingerprint -> the stored answer, replayed byte for byte with
   ``Idempotent-Replayed: true``; with another fingerprint -> 422 ``idempotency_key_reused``;
2. else runs the effect and stores its answer under K, in the same statement, so there is never an effect
   without its key or a key without its effect. A concurrent duplicate waits for the first to commit (bounded by
   ``lock_timeout``, then 409 ``request_in_progress``), rolls back, and runs again: a replay.
3. A domain refusal (``insufficient_points``...) writes nothing; this module stores it under K (``ledger.remember``),
   so a retry replays the same outcome even if the member has earned points since (TigerBeetle's
   ``id_already_failed``). If a concurrent request with K stored an answer first, that answer is sent instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import Header, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app.api.auth import Principal
from app.api.problems import domain_error_body
from app.errors import DomainError
from app.ledger.writes import Answer

REMEMBER = "SELECT * FROM ledger.remember($1, $2, $3, $4, $5)"
PURGE = "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(days => $1)"

# Answers that are not outcomes of the operation: the request was invalid (validation the service does
# itself, after parsing) or the key is busy/reused. A corrected request may reuse the key.
NOT_REMEMBERED = frozenset({
    "idempotency_key_reused", "request_in_progress", "validation_error", "currency_mismatch", "points_out_of_range",
    "member_busy",
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


class JSONText(Response):
    """A JSON answer whose body is JSON text already (rendered by Postgres, or stored under a key)."""

    media_type = "application/json"


def request_hash(method: str, path: str, body: BaseModel | None) -> bytes:
    canonical = "" if body is None else json.dumps(
        body.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).digest()


def answer_response(answer: Answer) -> Response:
    """The HTTP response of an 'ok' answer (a stored refusal replays as the problem it was)."""
    assert answer.http_status is not None and answer.body is not None
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    media = "application/problem+json" if answer.http_status >= 400 else "application/json"
    return Response(answer.body, status_code=answer.http_status, media_type=media, headers=headers)


Perform = Callable[[bytes], Awaitable[Answer]]


async def run_write(request: Request, principal: Principal, key: str | None, body: BaseModel | None,
                    perform: Perform) -> Response:
    """Run a write (``perform``, given the request's fingerprint) and answer it: its stored answer, or its refusal
    remembered under the key."""
    if key is None:
        raise DomainError("idempotency_key_missing", "Send an Idempotency-Key header with every write.")
    fingerprint = request_hash(request.method, request.url.path, body)
    try:
        answer = await perform(fingerprint)
        answer.raise_for_status()
    except DomainError as refusal:
        if refusal.code in NOT_REMEMBERED:
            raise
        return await remember(request.app.state.pool, principal.program_id, key, fingerprint, refusal)
    return answer_response(answer)


async def remember(pool: asyncpg.Pool, program: UUID, key: str, fingerprint: bytes, refusal: DomainError) -> Response:
    body = json.dumps(domain_error_body(refusal), separators=(",", ":"))
    answer = Answer.of(await pool.fetchrow(REMEMBER, program, key, fingerprint, refusal.status, body))
    answer.raise_for_status()  # idempotency_key_reused: the key was stored meanwhile for another request
    return answer_response(answer)


async def purge_expired(pool: asyncpg.Pool, retention_days: int) -> int:
    result = await pool.execute(PURGE, retention_days)
    return int(result.split()[-1])
