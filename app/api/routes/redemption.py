"""Checkout redemption: quote, direct redeem, holds (authorise / capture / void), refunds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from app.api.auth import Principal, require
from app.api.deps import Database, Pool
from app.api.idempotency import JSONText, run_write
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
HoldId = Annotated[str, Path(min_length=1, max_length=64, examples=["hold_8a41c0d2e97f3b15"])]
RedemptionId = Annotated[str, Path(min_length=1, max_length=64, examples=["rdm_51e0b9c4d3a27f86"])]


@router.post("/redemptions/quote", response_model=Quote,
             responses=responses("insufficient_scope", "member_not_found", "currency_mismatch"))
async def quote(body: QuoteRequest, principal: Redeemer, pool: Pool) -> Quote:
    """The most points the member can use on an order of `order_total`, and their value. Writes nothing."""
    return await service.quote(pool, principal, body)


@router.post(
    "/redemptions", status_code=201, response_model=RedemptionWithBalance,
    responses=responses(*WRITE_ERRORS, "member_not_found", "insufficient_points", "invalid_redeem_amount",
                        "member_suspended", "member_closed"),
)
async def redeem(body: RedeemCreate, principal: Redeemer, request: Request,
                 idempotency_key: IdempotencyKey, db: Database) -> Response:
    """Spend points now, soonest-expiring lots first. Not enough: 422 `insufficient_points` with
    `available`."""
    return await run_write(request, principal, idempotency_key, body,
                           lambda fingerprint: service.redeem(db, principal, body, idempotency_key, fingerprint))


@router.get("/redemptions/{redemption_id}", response_model=Redemption,
            responses=responses("insufficient_scope", "redemption_not_found"))
async def get_redemption(redemption_id: RedemptionId, principal: Reader, pool: Pool) -> Response:
    return JSONText(await service.redemption_json(pool, principal, redemption_id))


@router.post(
    "/redemptions/{redemption_id}/refunds", status_code=201, response_model=RefundResult,
    responses=responses(*WRITE_ERRORS, "redemption_not_found", "refund_exceeds_redemption"),
)
async def refund(redemption_id: RedemptionId, body: RefundCreate, principal: Redeemer, request: Request,
                 idempotency_key: IdempotencyKey, db: Database) -> Response:
    """Give redeemed points back (order cancelled after capture). They return to the lots they came
    from with their original expiry; points whose lot expired meanwhile come back expired, and the
    response says how many of each."""
    return await run_write(request, principal, idempotency_key, body, lambda fingerprint: service.refund(
        db, principal, redemption_id, body, idempotency_key, fingerprint))


@router.post(
    "/holds", status_code=201, response_model=HoldWithBalance,
    responses=responses(*WRITE_ERRORS, "member_not_found", "insufficient_points", "invalid_redeem_amount",
                        "hold_too_long", "member_suspended", "member_closed"),
)
async def create_hold(body: HoldCreate, principal: Redeemer, request: Request,
                      idempotency_key: IdempotencyKey, db: Database) -> Response:
    """Reserve points at checkout (available -> held) until captured, voided or expired."""
    return await run_write(request, principal, idempotency_key, body,
                           lambda fingerprint: service.hold(db, principal, body, idempotency_key, fingerprint))


@router.get("/holds/{hold_id}", response_model=Hold, responses=responses("insufficient_scope", "hold_not_found"))
async def get_hold(hold_id: HoldId, principal: Reader, pool: Pool) -> Response:
    return JSONText(await service.hold_json(pool, principal, hold_id))


@router.post(
    "/holds/{hold_id}/capture", response_model=CaptureResult,
    responses=responses(*WRITE_ERRORS, "hold_not_found", "hold_not_open", "hold_expired",
                        "capture_exceeds_hold", "invalid_redeem_amount", "member_suspended", "member_closed"),
)
async def capture_hold(hold_id: HoldId, principal: Redeemer, request: Request,
                       idempotency_key: IdempotencyKey, db: Database,
                       body: CaptureRequest | None = None) -> Response:
    """Redeem the held points (all, or `points` of them: the rest goes back to available). A partial capture
    follows the program's redemption rules (`min_redeem_points`, `redeem_increment`)."""
    data = body or CaptureRequest()
    return await run_write(request, principal, idempotency_key, data, lambda fingerprint: service.capture(
        db, principal, hold_id, data, idempotency_key, fingerprint))


@router.post(
    "/holds/{hold_id}/void", response_model=HoldWithBalance,
    responses=responses(*WRITE_ERRORS, "hold_not_found", "hold_not_open"),
)
async def void_hold(hold_id: HoldId, principal: Redeemer, request: Request,
                    idempotency_key: IdempotencyKey, db: Database,
                    body: VoidRequest | None = None) -> Response:
    """Cancel the hold: its points go back to available, in the lots they came from."""
    data = body or VoidRequest()
    return await run_write(request, principal, idempotency_key, data,
                           lambda fingerprint: service.void(db, principal, hold_id, idempotency_key, fingerprint))
