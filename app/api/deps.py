"""Shared API dependencies."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Path, Request

from app.api.auth import Principal, require
from app.ledger.schemas import MemberRef

MemberIdPath = Annotated[
    MemberRef, Path(description="The program's own customer id", examples=["cust-1001"])
]
EntryIdPath = Annotated[int, Path(ge=1, le=2**63 - 1)]

Admin = Annotated[Principal, Depends(require("admin"))]
Reader = Annotated[Principal, Depends(require("read"))]
Earner = Annotated[Principal, Depends(require("earn"))]


async def pool(request: Request) -> asyncpg.Pool:
    """async on purpose: a plain function dependency would run in the thread pool on every request."""
    pool: asyncpg.Pool = request.app.state.pool
    return pool


Pool = Annotated[asyncpg.Pool, Depends(pool)]
