"""Earning: the program's earn rules, purchases from POS and shops, returns, custom events."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from app.api.auth import Principal, announce_program_change, require
from app.api.deps import Admin, Database, Pool
from app.api.idempotency import JSONText, run_write
from app.api.idempotency_key import IdempotencyKey
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.api.routes.ledger import WRITE_ERRORS
from app.api.routes.rewards import guard_lookups
from app.earning import batch, service
from app.earning.schemas import (
    EarnRulesUpdate,
    EarnRuleVersion,
    EarnRuleVersionList,
    EventCreate,
    EventResult,
    Purchase,
    PurchaseBatch,
    PurchaseBatchResult,
    PurchaseCreate,
    PurchaseQuote,
    PurchaseQuoteRequest,
    PurchaseResult,
    ReturnCreate,
    ReturnResult,
)

router = APIRouter(prefix="/v1", tags=["earning"], route_class=ApiRoute)

Earner = Annotated[Principal, Depends(require("earn"))]
Quoter = Annotated[Principal, Depends(require("earn", "redeem"))]
Reader = Annotated[Principal, Depends(require("read", "earn"))]
OrderIdPath = Annotated[str, Path(min_length=1, max_length=200)]


@router.put("/program/earn-rules", response_model=EarnRuleVersion, status_code=201,
            responses=responses("insufficient_scope"))
async def put_earn_rules(body: EarnRulesUpdate, principal: Admin, pool: Pool, request: Request) -> EarnRuleVersion:
    """Replace the rule set as a new version from `effective_from` (default now). Purchases are always
    evaluated with the version in force at their `occurred_at`, so a change never alters past awards."""
    async with pool.acquire() as conn, conn.transaction():
        version = await service.put_rules(conn, principal, body)
        await announce_program_change(request, conn, principal.program_id)
        return version


@router.get("/program/earn-rules", response_model=EarnRuleVersion, responses=responses("insufficient_scope"))
async def get_earn_rules(principal: Reader, pool: Pool) -> EarnRuleVersion:
    """The version in force now (version 0: the default, 1 point per currency unit)."""
    return await service.current_rules(pool, principal)


@router.get("/program/earn-rules/versions", response_model=EarnRuleVersionList,
            responses=responses("insufficient_scope"))
async def list_earn_rule_versions(principal: Reader, pool: Pool) -> EarnRuleVersionList:
    return EarnRuleVersionList(data=await service.rule_versions(pool, principal))


@router.post(
    "/purchases", status_code=201, response_model=PurchaseResult,
    responses={200: {"model": PurchaseResult, "description": "The order was posted before with this content"},
               **responses(*WRITE_ERRORS, "member_not_found", "currency_mismatch", "order_already_posted",
                           "points_out_of_range", "member_closed", "voucher_not_found", "voucher_not_issued",
                           "voucher_expired", "voucher_not_applicable")},
)
async def post_purchase(body: PurchaseCreate, principal: Earner, request: Request,
                        idempotency_key: IdempotencyKey, db: Database) -> Response:
    """Award the points of a purchase by the earn rules in force at `occurred_at`, with a breakdown per
    line and per rule. Unknown members are enrolled (program setting `enrol_on_purchase`). Points stay
    pending for the program's `pending_days`. `voucher_codes`: vouchers used on the order, redeemed with it (or
    the purchase is refused and nothing is written)."""
    def write() -> Awaitable[Response]:
        return run_write(request, principal, idempotency_key, body, lambda fingerprint: service.post_purchase(
            db, principal, body, idempotency_key, fingerprint))

    if body.voucher_codes:  # issue-14: a key's failed lookups of voucher codes are bounded (app/rewards/codes.py)
        return await guard_lookups(request, principal, write)
    return await write()


@router.post(
    "/purchases/batch", response_model=PurchaseBatchResult,
    responses=responses(*WRITE_ERRORS, "points_out_of_range"),
)
async def post_purchase_batch(body: PurchaseBatch, principal: Earner, request: Request,
                              idempotency_key: IdempotencyKey, db: Database) -> Response:
    """An offline till's purchases and returns, up to 1,000, in one request and one transaction: each item is
    posted as its single request would be (`POST /v1/purchases`, `POST /v1/purchases/{order_id}/returns`), by the
    earn rules, windows and tiers of its own `occurred_at`, idempotent by its order id (and return id); each
    member's items in `occurred_at` order. The answer has one result per item, in the request's order: `created`,
    `replayed` (posted before with this content), or `refused` with the problem the single request would have
    answered; one refused item never fails the others. The whole answer is stored under the Idempotency-Key.
    A body of the wrong shape is 422 for the whole batch, and nothing is written."""
    return await run_write(request, principal, idempotency_key, body, lambda fingerprint: batch.post_batch(
        db, principal, body, idempotency_key, fingerprint))


@router.post("/purchases/quote", response_model=PurchaseQuote,
             responses=responses("insufficient_scope", "currency_mismatch", "points_out_of_range"))
async def quote_purchase(body: PurchaseQuoteRequest, principal: Quoter, db: Database) -> PurchaseQuote:
    """"You will earn N points": the same evaluation as posting, as a dry run. Writes nothing; no key."""
    return await service.quote_purchase(db, principal, body)


@router.get("/purchases/{order_id}", response_model=Purchase,
            responses=responses("insufficient_scope", "purchase_not_found"))
async def get_purchase(order_id: OrderIdPath, principal: Reader, pool: Pool) -> Response:
    """The award, its breakdown, and the returns so far."""
    return JSONText(await service.purchase_json(pool, principal, order_id))


@router.post(
    "/purchases/{order_id}/returns", status_code=201, response_model=ReturnResult,
    responses={200: {"model": ReturnResult, "description": "This return_id was posted before with this content"},
               **responses(*WRITE_ERRORS, "purchase_not_found", "return_already_posted")},
)
async def post_return(order_id: OrderIdPath, body: ReturnCreate, principal: Earner, request: Request,
                      idempotency_key: IdempotencyKey, db: Database) -> Response:
    """Claw back the points attributable to returned `lines` (sku + quantity) or a refunded `amount`:
    from the purchase's pending points first, then available; returning more than was bought is 422."""
    return await run_write(request, principal, idempotency_key, body, lambda fingerprint: service.post_return(
        db, principal, order_id, body, idempotency_key, fingerprint))


@router.post(
    "/events", status_code=201, response_model=EventResult,
    responses={200: {"model": EventResult, "description": "This event_id was posted before"},
               **responses(*WRITE_ERRORS, "member_not_found", "external_ref_conflict", "member_closed")},
)
async def post_event(body: EventCreate, principal: Earner, request: Request,
                     idempotency_key: IdempotencyKey, db: Database) -> Response:
    """A named custom event (survey_completed, social_share, ...) earning points by the event rules of the
    rule set, within their per-day/month/ever limits. Unknown event names are 422."""
    return await run_write(request, principal, idempotency_key, body, lambda fingerprint: service.post_event(
        db, principal, body, idempotency_key, fingerprint))
