"""Members: upsert and read."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.api.auth import Principal, require
from app.api.deps import Admin, Database, MemberIdPath, Pool, Reader
from app.api.idempotency import run_write
from app.api.idempotency_key import IdempotencyKey
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.members import service
from app.members.schemas import Member, MemberMergeCreate, MemberUpsert, MergeResult

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


@router.post(
    "/{member_id}/merge", status_code=201, response_model=MergeResult,
    responses={200: {"model": MergeResult, "description": "`from` was merged into this member before"},
               **responses("insufficient_scope", "idempotency_key_missing", "idempotency_key_invalid",
                           "idempotency_key_reused", "request_in_progress", "member_busy", "member_not_found",
                           "same_member", "member_has_open_holds", "payload_too_large", "malformed_request")},
)
async def merge_member(member_id: MemberIdPath, body: MemberMergeCreate, principal: Admin, request: Request,
                       idempotency_key: IdempotencyKey, db: Database) -> Response:
    """Merge the member `from` into this one (a customer with two cards): one entry moves its available and pending
    points, its open lots move with their expiry (and pending ones with their activation time), and the tier is the
    higher of the two. Its history stays readable (this member's activity lists it), and its id becomes an alias:
    reads and writes sent to it go to this member. Refused while `from` has open holds (409
    member_has_open_holds). Merging an alias into its survivor again answers the merge (200, `replayed`)."""
    return await run_write(request, principal, idempotency_key, body, lambda fingerprint: service.merge(
        db, principal.program_id, member_id, body, idempotency_key, fingerprint))
