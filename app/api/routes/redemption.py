"""Checkout redemption: quote, direct redeem, holds (authorise / capture / void), refunds."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from app.api.auth import Principal, require
from app.api.deps import Pool
from app.api.idempotency import run_idempotent
from app.api.idempotency_key import IdempotencyKey
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.api.routes.ledger import WRITE_ERRORS
from app.redemption import service
from app.redemption.schemas import (
    CaptureRequest,
    CaptureResult,
    Hold,
    HoldCreate,
    HoldWithBalance,
    Quote,
    QuoteRequest,
    RedeemCreate,
    Redemption,
    RedemptionWithBalance,
    RefundCreate,
    RefundResult,
    VoidRequest,
)

router = APIRouter(prefix="/v1", tags=["redemption"], route_class=ApiRoute)

Redeemer = Annotated[Principal, Depends(require("redeem"))]
Reader = Annotated[Principal, Depends(require("read", "redeem"))]
HoldId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RedemptionId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("/redemptions/quote", response_model=Quote,
             responses=responses("insufficient_scope", "member_not_found", "currency_mismatch"))
async def quote(body: QuoteRequest, principal: Redeemer, pool: Pool) -> Quote:
    """The most points the member can use on an order of `order_total`, and their value. Writes nothing."""
    return await service.quote(pool, principal, body)


@router.post(
    "/redemptions", status_code=201, response_model=RedemptionWithBalance,
    responses=responses(*WRITE_ERRORS, "member_not_found", "insufficient_points", "invalid_redeem_amount"),
)
async def redeem(body: RedeemCreate, principal: Redeemer, request: Request,
                 idempotency_key: IdempotencyKey) -> JSONResponse:
    """Spend points now, soonest-expiring lots first. Not enough: 422 `insufficient_points` with
    `available`."""

    async def effect(conn: asyncpg.Connection) -> tuple[int, RedemptionWithBalance]:
        return 201, await service.redeem(conn, principal, body)

    return await run_idempotent(request, principal, idempotency_key, body, effect)


@router.get("/redemptions/{redemption_id}", response_model=Redemption,
            responses=responses("insufficient_scope", "redemption_not_found"))
async def get_redemption(redemption_id: RedemptionId, principal: Reader, pool: Pool) -> Redemption:
    return await service.get_redemption(pool, principal, redemption_id)


@router.post(
    "/redemptions/{redemption_id}/refunds", status_code=201, response_model=RefundResult,
    responses=responses(*WRITE_ERRORS, "redemption_not_found", "refund_exceeds_redemption"),
)
async def refund(redemption_id: RedemptionId, body: RefundCreate, principal: Redeemer, request: Request,
                 idempotency_key: IdempotencyKey) -> JSONResponse:
    """Give redeemed points back (order cancelled after capture). They return to the lots they came
    from with their original expiry; points whose lot expired meanwhile come back expired, and the
    response says how many of each."""

    async def effect(conn: asyncpg.Connection) -> tuple[int, RefundResult]:
        return 201, await service.refund(conn, principal, redemption_id, body)

    return await run_idempotent(request, principal, idempotency_key, body, effect)


@router.post(
    "/holds", status_code=201, response_model=HoldWithBalance,
    responses=responses(*WRITE_ERRORS, "member_not_found", "insufficient_points", "invalid_redeem_amount",
                        "hold_too_long"),
)
async def create_hold(body: HoldCreate, principal: Redeemer, request: Request,
                      idempotency_key: IdempotencyKey) -> JSONResponse:
    """Reserve points at checkout (available -> held) until captured, voided or expired."""

    async def effect(conn: asyncpg.Connection) -> tuple[int, HoldWithBalance]:
        return 201, await service.hold(conn, principal, body)

    return await run_idempotent(request, principal, idempotency_key, body, effect)


@router.get("/holds/{hold_id}", response_model=Hold, responses=responses("insufficient_scope", "hold_not_found"))
async def get_hold(hold_id: HoldId, principal: Reader, pool: Pool) -> Hold:
    return await service.get_hold(pool, principal, hold_id)


@router.post(
    "/holds/{hold_id}/capture", response_model=CaptureResult,
    responses=responses(*WRITE_ERRORS, "hold_not_found", "hold_not_open", "hold_expired",
                        "capture_exceeds_hold"),
)
async def capture_hold(hold_id: HoldId, principal: Redeemer, request: Request,
                       idempotency_key: IdempotencyKey, body: CaptureRequest | None = None) -> JSONResponse:
    """Redeem the held points (all, or `points` of them: the rest goes back to available)."""
    data = body or CaptureRequest()

    async def effect(conn: asyncpg.Connection) -> tuple[int, CaptureResult]:
        return 200, await service.capture(conn, principal, hold_id, data)

    return await run_idempotent(request, principal, idempotency_key, data, effect)


@router.post(
    "/holds/{hold_id}/void", response_model=HoldWithBalance,
    responses=responses(*WRITE_ERRORS, "hold_not_found", "hold_not_open"),
)
async def void_hold(hold_id: HoldId, principal: Redeemer, request: Request,
                    idempotency_key: IdempotencyKey, body: VoidRequest | None = None) -> JSONResponse:
    """Cancel the hold: its points go back to available, in the lots they came from."""
    data = body or VoidRequest()

    async def effect(conn: asyncpg.Connection) -> tuple[int, HoldWithBalance]:
        return 200, await service.void(conn, principal, hold_id, data)

    return await run_idempotent(request, principal, idempotency_key, data, effect)
