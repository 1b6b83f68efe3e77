"""Members: upsert and read."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.api.auth import Principal, require
from app.api.deps import Admin, MemberIdPath, Pool, Reader
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.members import service
from app.members.schemas import Member, MemberUpsert

router = APIRouter(prefix="/v1/members", tags=["members"], route_class=ApiRoute)


@router.put(
    "/{member_id}",
    response_model=Member,
    responses={201: {"model": Member, "description": "Created"}, **responses("insufficient_scope")},
)
async def upsert_member(
    member_id: MemberIdPath, body: MemberUpsert, pool: Pool,
    principal: Principal = Depends(require("earn")),
) -> JSONResponse:
    """Create the member (201) or update it (200). Naturally idempotent: no Idempotency-Key needed."""
    async with pool.acquire() as conn, conn.transaction():
        member, created = await service.upsert(conn, principal.program_id, member_id, body)
    return JSONResponse(member.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/{member_id}", response_model=Member, responses=responses("insufficient_scope", "member_not_found"))
async def get_member(member_id: MemberIdPath, principal: Reader, pool: Pool) -> Member:
    return await service.get(pool, principal.program_id, member_id)


@router.delete("/{member_id}/personal-data", response_model=Member,
               responses=responses("insufficient_scope", "member_not_found"))
async def erase_personal_data(member_id: MemberIdPath, principal: Admin, pool: Pool) -> Member:
    """Erase the member's personal data (name, email, phone, birthday, attributes). Balances and history
    stay intact and still verify. Idempotent."""
    async with pool.acquire() as conn, conn.transaction():
        return await service.erase_personal_data(conn, principal.program_id, member_id)
