"""Expiration policy (versioned) and expiring-soon lists."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.api.auth import Principal, announce_program_change, require
from app.api.deps import Admin, MemberIdPath, Pool
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.expiry import service
from app.expiry.service import ExpiringList, PolicyUpdate, PolicyVersion, PolicyVersionList

router = APIRouter(prefix="/v1", tags=["expiry"], route_class=ApiRoute)

Reader = Annotated[Principal, Depends(require("read"))]


@router.put("/program/expiration-policy", response_model=PolicyVersion, status_code=201,
            responses=responses("insufficient_scope"))
async def put_policy(request: Request, body: PolicyUpdate, principal: Admin, pool: Pool) -> PolicyVersion:
    """A new policy version from `effective_from` (default now). A lot's expiry is fixed when the lot
    is created, by the version in force at its `occurred_at`: changing the policy never moves the
    expiry of points already earned."""
    async with pool.acquire() as conn, conn.transaction():
        version = await service.put_policy(conn, principal, body)
        await announce_program_change(request, conn, principal.program_id)
        return version


@router.get("/program/expiration-policy", response_model=PolicyVersion, responses=responses("insufficient_scope"))
async def get_policy(principal: Reader, pool: Pool) -> PolicyVersion:
    """The version in force now (version 0: points never expire)."""
    return (await service.current_policy(pool, principal.program_id))[1]


@router.get("/program/expiration-policy/versions", response_model=PolicyVersionList,
            responses=responses("insufficient_scope"))
async def list_policies(principal: Reader, pool: Pool) -> PolicyVersionList:
    return PolicyVersionList(data=await service.policy_versions(pool, principal))


@router.get("/members/{member_id}/expiring", response_model=ExpiringList,
            responses=responses("insufficient_scope", "member_not_found"))
async def expiring(member_id: MemberIdPath, principal: Reader, pool: Pool,
                   within_days: Annotated[int, Query(ge=1, le=3650)] = 30) -> ExpiringList:
    """Points that will expire within `within_days`, by expiry time (pending points included: they expire
    on the same date once available)."""
    return await service.expiring(pool, principal, member_id, within_days)
