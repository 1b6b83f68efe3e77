"""Shared API dependencies."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Path, Request

from app.api.auth import Principal, require
from app.db.access import Db
from app.ledger.schemas import MemberRef

MemberIdPath = Annotated[
    MemberRef, Path(description="The program's own customer id", examples=["cust-1001"])
]
# Public ids are opaque strings (`ent_...`); anything that is not one of this program's ids is 404.
EntryIdPath = Annotated[str, Path(min_length=1, max_length=64, description="An entry's id",
                                  examples=["ent_3f9c2a7d1e4b8c60"])]

Admin = Annotated[Principal, Depends(require("admin"))]
Reader = Annotated[Principal, Depends(require("read"))]
Earner = Annotated[Principal, Depends(require("earn"))]


async def pool(request: Request) -> asyncpg.Pool:
    """async on purpose: a plain function dependency would run in the thread pool on every request."""
    pool: asyncpg.Pool = request.app.state.pool
    return pool


Pool = Annotated[asyncpg.Pool, Depends(pool)]


async def database(request: Request) -> Db:
    db: Db = request.app.state.db
    return db


Database = Annotated[Db, Depends(database)]
