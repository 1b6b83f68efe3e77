"""Tiers: the program's tier configuration (versioned), a member's tier and progress, manual assignment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.api.auth import Principal, announce_program_change, require
from app.api.deps import Admin, MemberIdPath, Pool
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.errors import DomainError
from app.tiers import service
from app.tiers.service import MemberTier, TierAssign, TierConfigUpdate, TierConfigVersion, TierConfigVersionList

router = APIRouter(prefix="/v1", tags=["tiers"], route_class=ApiRoute)

Reader = Annotated[Principal, Depends(require("read"))]


@router.put("/program/tiers", response_model=TierConfigVersion, status_code=201,
            responses=responses("insufficient_scope"))
async def put_tiers(request: Request, body: TierConfigUpdate, principal: Admin, pool: Pool) -> TierConfigVersion:
    """A new tier configuration version from `effective_from` (default now). Run the evaluation
    (`points-ledger evaluate-tiers`, or wait for the scheduler) to move members onto a changed ladder."""
    async with pool.acquire() as conn, conn.transaction():
        version = await service.put_config(conn, principal, body)
        await announce_program_change(request, conn, principal.program_id)
        return version


@router.get("/program/tiers", response_model=TierConfigVersion,
            responses=responses("insufficient_scope", "not_found"))
async def get_tiers(principal: Reader, pool: Pool) -> TierConfigVersion:
    versions = [v for v in await service.config_versions(pool, principal)]
    _, version, _ = await service.current_config(pool, principal.program_id)
    current = next((v for v in versions if v.version == version), None)
    if current is None:
        raise DomainError("not_found", "The program has no tiers.")
    return current


@router.get("/program/tiers/versions", response_model=TierConfigVersionList,
            responses=responses("insufficient_scope"))
async def list_tiers(principal: Reader, pool: Pool) -> TierConfigVersionList:
    return TierConfigVersionList(data=await service.config_versions(pool, principal))


@router.get("/members/{member_id}/tier", response_model=MemberTier,
            responses=responses("insufficient_scope", "member_not_found"))
async def member_tier(member_id: MemberIdPath, principal: Reader, pool: Pool) -> MemberTier:
    """Current tier, valid_until, the metric in the window, the next tier and what is missing to reach it,
    what is needed to keep the current one, and the tier history."""
    return await service.member_tier(pool, principal, member_id)


@router.post("/members/{member_id}/tier", response_model=MemberTier,
             responses=responses("insufficient_scope", "member_not_found"))
async def assign_tier(member_id: MemberIdPath, body: TierAssign, principal: Admin, pool: Pool) -> MemberTier:
    """Manual assignment with an end date and a reason (recorded in the history). The member holds the tier
    at least until `until`; after that the evaluation decides again."""
    async with pool.acquire() as conn, conn.transaction():
        return await service.assign(conn, principal, member_id, body)
