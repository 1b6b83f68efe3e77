"""The caller's program and its API keys."""

from __future__ import annotations

import logging
from uuid import UUID

from fastapi import APIRouter, Request, Response

from app.api.auth import KeyInvalidation
from app.api.deps import Admin, Pool, Reader
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.errors import DomainError
from app.programs import service
from app.programs.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated, ApiKeyList, Program, ProgramUpdate

router = APIRouter(prefix="/v1", tags=["program"], route_class=ApiRoute)
log = logging.getLogger(__name__)


@router.get("/program", response_model=Program, responses=responses("insufficient_scope"))
async def get_program(principal: Reader, pool: Pool) -> Program:
    """The program the API key belongs to."""
    async with pool.acquire() as conn:
        return await service.get_program(conn, principal.program_id)


@router.patch("/program", response_model=Program, responses=responses("insufficient_scope"))
async def update_program(body: ProgramUpdate, principal: Admin, pool: Pool, request: Request) -> Program:
    """Rename the program or change some of its settings (fields left out keep their value). Answers once every
    process has dropped the keys it cached with the old settings (or after PL_INVALIDATION_ACK_TIMEOUT_MS)."""
    invalidation: KeyInvalidation = request.app.state.key_invalidation
    async with invalidation.broadcast() as broadcast:
        async with pool.acquire() as conn, conn.transaction():
            program = await service.update_program(conn, principal.program_id, body)
            await broadcast.publish(conn, f"program:{program.id}")  # cached keys carry the settings
        request.app.state.key_cache.evict(f"program:{program.id}")
        unconfirmed = await broadcast.confirm()
    if unconfirmed:  # the settings are committed; a silent process sees them at the latest when its cache expires
        log.warning("settings change not confirmed by %d listener(s)", len(unconfirmed))
    return program


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreated, responses=responses("insufficient_scope"))
async def create_api_key(body: ApiKeyCreate, principal: Admin, pool: Pool) -> ApiKeyCreated:
    """Create a key for this program. The secret is in this response only."""
    async with pool.acquire() as conn, conn.transaction():
        return await service.create_api_key(conn, principal.program_id, body)


@router.get("/api-keys", response_model=ApiKeyList, responses=responses("insufficient_scope"))
async def list_api_keys(principal: Admin, pool: Pool) -> ApiKeyList:
    async with pool.acquire() as conn:
        return ApiKeyList(data=await service.list_api_keys(conn, principal.program_id))


@router.delete(
    "/api-keys/{key_id}", status_code=204,
    responses=responses("insufficient_scope", "api_key_not_found", "last_admin_key", "revocation_unconfirmed"),
)
async def revoke_api_key(key_id: UUID, principal: Admin, pool: Pool, request: Request) -> Response:
    """Revoke a key. The answer comes once every process of the service has evicted the key from its cache, so
    the key is refused everywhere from the next request on. If a process does not confirm within
    PL_INVALIDATION_ACK_TIMEOUT_MS: 503 `revocation_unconfirmed` (the revocation is committed; repeat the
    DELETE). Revoking twice is harmless. The program's last active admin key cannot be revoked (409
    `last_admin_key`): create another admin key first."""
    invalidation: KeyInvalidation = request.app.state.key_invalidation
    async with invalidation.broadcast() as broadcast:
        async with pool.acquire() as conn, conn.transaction():
            key: ApiKey = await service.revoke_api_key(conn, principal.program_id, key_id)
            await broadcast.publish(conn, f"key:{key.id}")  # every process evicts it when this commits, and says so
        request.app.state.key_cache.evict(f"key:{key.id}")
        unconfirmed = await broadcast.confirm()
    if unconfirmed:
        log.warning("revocation not confirmed by %d listener(s)", len(unconfirmed))
        raise DomainError("revocation_unconfirmed", "The key is revoked, but not every process of the service "
                          "confirmed it in time; repeat the DELETE.")
    return Response(status_code=204)
