"""Operations endpoints: health, readiness, metrics, verify."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import Admin, Pool
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.errors import DomainError
from app.ledger.schemas import VerifyReport
from app.ledger.verify import verify
from app.observability import POOL_IDLE, POOL_SIZE, REGISTRY

router = APIRouter(tags=["operations"], route_class=ApiRoute)


@router.get("/healthz", include_in_schema=True)
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable or not migrated"}})
async def readyz(pool: Pool, request: Request) -> JSONResponse:
    """The database answers and its schema is at the head migration."""
    try:
        current = await pool.fetchval("SELECT version_num FROM alembic_version", timeout=2)
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    head = request.app.state.head_revision
    if current != head:
        return JSONResponse({"status": "unavailable", "migration": current, "head": head}, status_code=503)
    return JSONResponse({"status": "ok", "migration": current})


@router.get("/metrics", response_class=Response, responses={404: {"description": "Metrics are not enabled"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process, when `PL_METRICS_ENABLED` is true (else 404: they are unauthenticated
    and name every route's traffic, so they are off unless an operator turns them on)."""
    if not request.app.state.settings.metrics_enabled:
        raise DomainError("not_found")
    pool = request.app.state.pool
    POOL_SIZE.set(pool.get_size())
    POOL_IDLE.set(pool.get_idle_size())
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/admin/verify", response_model=VerifyReport, responses=responses("insufficient_scope"))
async def verify_program(principal: Admin, pool: Pool) -> VerifyReport:
    """Recompute the program's balances and lots from its postings and allocations, and report any
    discrepancy. Read-only."""
    async with pool.acquire() as conn:
        return await verify(conn, principal.program_id)
