"""The programme's books in bulk (issue 15): outstanding liability as of an instant, imports of a legacy system's
members, and exports of balances, the ledger and members, streamed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime

from app.api.deps import Admin, Pool
from app.api.idempotency import JSONText
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.ledger import service as ledger_service
from app.ledger.schemas import Liability

router = APIRouter(prefix="/v1", tags=["bulk"], route_class=ApiRoute)

AsOfNow = Annotated[AwareDatetime | None, Query(
    description="An instant with its offset (default: now): as the ledger recorded it by then")]


@router.get("/liability", response_model=Liability, responses=responses("insufficient_scope"))
async def get_liability(principal: Admin, pool: Pool, as_of: AsOfNow = None) -> Response:
    """The programme's outstanding points as recorded by `as_of`: its members' available, pending and held points
    (what it still owes), from the ledger."""
    at = as_of or datetime.now(UTC)
    return JSONText(await ledger_service.liability_json(pool, principal.program_id, at))
