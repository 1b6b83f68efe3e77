"""Rewards: the catalogue (admin), browsing (apps), exchanges, vouchers (wallet, validation at the POS, redeem,
cancel), partner codes and the outstanding vouchers."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ValidationError

from app.api.auth import Principal, require
from app.api.deps import Admin, Database, MemberIdPath, Pool
from app.api.idempotency import IdempotencyKey, JSONText, run_write
from app.api.problems import responses
from app.api.routes.base import UNSUPPORTED_MEDIA_TYPE_RESPONSE, ApiRoute, UnsupportedMediaType
from app.api.routes.ledger import WRITE_ERRORS
from app.errors import DomainError
from app.ledger.schemas import MemberRef
from app.rewards import service
from app.rewards.codes import FailureGuard
from app.rewards.schemas import (
    ExchangeCreate,
    OutstandingVouchers,
    PartnerCodesResult,
    PartnerCodesUpload,
    Reward,
    RewardCreate,
    RewardPage,
    RewardPatch,
    Voucher,
    VoucherCancel,
    VoucherPage,
    VoucherRedeem,
    VoucherResult,
    VoucherStatus,
    VoucherWithBalance,
)

router = APIRouter(prefix="/v1", tags=["rewards"], route_class=ApiRoute)

Reader = Annotated[Principal, Depends(require("read"))]
Redeemer = Annotated[Principal, Depends(require("redeem"))]
Validator = Annotated[Principal, Depends(require("read", "redeem"))]
Checkout = Annotated[Principal, Depends(require("redeem", "earn"))]
RewardId = Annotated[str, Path(min_length=1, max_length=64, examples=["rwd_4c1e0b7a9d2f3e65"])]
CodePath = Annotated[str, Path(min_length=1, max_length=64, examples=["K7QM-3XDP-W9TF"],
                               description="The voucher's code, any case, hyphens optional")]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=64)]


async def voucher_guard(request: Request) -> FailureGuard:
    guard: FailureGuard = request.app.state.voucher_guard
    return guard


Guard = Annotated[FailureGuard, Depends(voucher_guard)]


async def guard_lookups(request: Request, principal: Principal, call: Callable[[], Awaitable[Response]]) -> Response:
    """A write that looks vouchers up by code: refused (429) while the key's failed lookups are spent, and an answer
    404 ``voucher_not_found`` spends one (app/rewards/codes.py). Purchases carrying codes use it too."""
    guard: FailureGuard = request.app.state.voucher_guard
    guard.check(principal.key_id)
    response = await call()
    if response.status_code == 404 and b'"voucher_not_found"' in bytes(response.body):
        guard.failed(principal.key_id)
    return response


# --- the catalogue -------------------------------------------------------------------------------------------


@router.post("/rewards", status_code=201, response_model=Reward, responses=responses("insufficient_scope"))
async def create_reward(body: RewardCreate, principal: Admin, pool: Pool) -> Response:
    """Add a reward to the catalogue: a `voucher` (amount or percentage off, optional minimum spend), a `product`
    (a free item by SKU), a `gift` (shipped by the merchant) or a `partner_code` (codes uploaded in bulk)."""
    return JSONText(await service.create_reward(pool, principal, body), status_code=201)


@router.get("/rewards", response_model=RewardPage,
            responses=responses("insufficient_scope", "member_not_found", "invalid_cursor"))
async def list_rewards(
    principal: Reader, pool: Pool,
    member_id: Annotated[MemberRef | None, Query(description="Browse as this member: only rewards it can still see "
                                                "(active, window not ended), each with `for_member`")] = None,
    status: Annotated[Literal["active", "archived", "all"], Query(description="Without member_id")] = "active",
    limit: Limit = 50, cursor: Cursor = None,
) -> Response:
    """The catalogue in creation order. With `member_id`: whether each reward is affordable and eligible for the
    member, and if not, why (the codes an exchange would answer)."""
    return JSONText(await service.rewards_json(pool, principal, member_id, status, limit, cursor))


@router.get("/rewards/{reward_id}", response_model=Reward,
            responses=responses("insufficient_scope", "reward_not_found", "member_not_found"))
async def get_reward(reward_id: RewardId, principal: Reader, pool: Pool,
                     member_id: Annotated[MemberRef | None, Query()] = None) -> Response:
    return JSONText(await service.reward_json(pool, principal, reward_id, member_id))


@router.patch("/rewards/{reward_id}", response_model=Reward, responses=responses("insufficient_scope",
                                                                                  "reward_not_found"))
async def patch_reward(reward_id: RewardId, body: RewardPatch, principal: Admin, pool: Pool) -> Response:
    """Change a reward (fields left out keep their value; null clears one). Its kind never changes, and vouchers
    already issued keep the terms they were issued with."""
    return JSONText(await service.patch_reward(pool, principal, reward_id, body))


@router.post("/rewards/{reward_id}/archive", response_model=Reward,
             responses=responses("insufficient_scope", "reward_not_found"))
async def archive_reward(reward_id: RewardId, principal: Admin, pool: Pool) -> Response:
    """Archive: no more exchanges (409 `reward_unavailable`). Rewards are never deleted; vouchers issued stay valid.
    Idempotent."""
    return JSONText(await service.archive_reward(pool, principal, reward_id))


_UPLOAD_SCHEMA = PartnerCodesUpload.model_json_schema()
_UPLOAD_SCHEMA.pop("title", None)


@router.post(
    "/rewards/{reward_id}/codes", response_model=PartnerCodesResult,
    responses={**responses("insufficient_scope", "reward_not_found", "payload_too_large"),
               415: UNSUPPORTED_MEDIA_TYPE_RESPONSE},
    # The JSON form only: a `text/csv` body is accepted too (see the description), but typed clients generated from
    # the document (openapi-python-client) cannot express it, and it is an operator's tool (curl, a spreadsheet).
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _UPLOAD_SCHEMA}}}},
)
async def upload_partner_codes(reward_id: RewardId, principal: Admin, pool: Pool,
                               request: Request) -> PartnerCodesResult:
    """Upload a partner-code reward's codes, as JSON (`{"codes": [...]}`) or as CSV with `Content-Type: text/csv`
    (one code per line, the first column; a header line `code` is skipped). At most 10,000 per upload. Idempotent per
    code: codes the reward has already are counted as `duplicates` and skipped. Each exchange takes one unused code;
    no code is ever handed out twice, and only its member sees it."""
    upload = _codes(request.headers.get("content-type"), await request.body())
    return await service.upload_partner_codes(pool, principal, reward_id, upload.codes)


def _codes(content_type: str | None, raw: bytes) -> PartnerCodesUpload:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DomainError("malformed_request", "The body is not UTF-8.") from None
    try:
        if media == "application/json":
            return PartnerCodesUpload.model_validate_json(text)
        if media in ("text/csv", "text/plain"):
            rows = [row[0].strip() for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
            if rows and rows[0].lower() == "code":
                rows = rows[1:]
            return PartnerCodesUpload(codes=rows)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise DomainError("malformed_request", "The body is not valid JSON.") from None
        raise DomainError("validation_error", "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                        for e in errors[:5]),
                          errors=[{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                                  for e in errors]) from None
    except csv.Error as exc:
        raise DomainError("malformed_request", f"The CSV could not be read: {exc}.") from None
    raise UnsupportedMediaType(content_type)


# --- exchanges and vouchers ----------------------------------------------------------------------------------


@router.post(
    "/rewards/{reward_id}/exchanges", status_code=201, response_model=VoucherWithBalance,
    responses=responses(*WRITE_ERRORS, "reward_not_found", "member_not_found", "insufficient_points", "out_of_stock",
                        "limit_reached", "not_eligible", "reward_unavailable", "member_suspended", "member_closed"),
)
async def exchange(reward_id: RewardId, body: ExchangeCreate, principal: Redeemer, request: Request,
                   idempotency_key: IdempotencyKey, db: Database) -> Response:
    """Exchange the member's points for one unit of the reward: one transaction debits the points (soonest-expiring
    first), takes the unit of stock (and a partner code) and issues the voucher. Refusals write nothing."""
    return await run_write(request, principal, idempotency_key, body, lambda fingerprint: service.exchange(
        db, principal, reward_id, body, idempotency_key, fingerprint))


@router.get("/members/{member_id}/vouchers", response_model=VoucherPage,
            responses=responses("insufficient_scope", "member_not_found", "invalid_cursor"))
async def get_wallet(member_id: MemberIdPath, principal: Reader, pool: Pool,
                     status: Annotated[VoucherStatus | None, Query()] = None, limit: Limit = 50,
                     cursor: Cursor = None) -> Response:
    """The member's wallet, newest first, with partner codes and delivery details (only here and in the exchange's
    answer)."""
    return JSONText(await service.wallet_json(pool, principal, member_id, status, limit, cursor))


@router.get("/vouchers/outstanding", response_model=OutstandingVouchers, responses=responses("insufficient_scope"))
async def get_outstanding_vouchers(principal: Admin, pool: Pool) -> Response:
    """Vouchers issued and not yet used, cancelled or expired: how many, the points they cost, and the money off
    the amount vouchers still grant, per reward."""
    return JSONText(await service.outstanding_json(pool, principal))


@router.get("/vouchers/{code}", response_model=Voucher,
            responses=responses("insufficient_scope", "voucher_not_found"))
async def get_voucher(code: CodePath, principal: Validator, pool: Pool, guard: Guard) -> Response:
    """Validate a code before applying it (a POS). Another program's code is 404. Failed lookups are limited per
    key: past the limit, 429 `rate_limited`."""
    guard.check(principal.key_id)
    try:
        return JSONText(await service.voucher_json(pool, principal, code))
    except DomainError as exc:
        if exc.code == "voucher_not_found":
            guard.failed(principal.key_id)
        raise


@router.post(
    "/vouchers/{code}/redeem", response_model=VoucherResult,
    responses=responses(*WRITE_ERRORS, "voucher_not_found", "voucher_not_issued", "voucher_expired",
                        "voucher_not_applicable"),
)
async def redeem_voucher(code: CodePath, body: VoucherRedeem, principal: Checkout, request: Request,
                         idempotency_key: IdempotencyKey, db: Database) -> Response:
    """Use the voucher on an order: succeeds exactly once, even under concurrency (then 409 `voucher_not_issued`)."""
    return await guard_lookups(request, principal, lambda: run_write(
        request, principal, idempotency_key, body,
        lambda fingerprint: service.redeem_voucher(db, principal, code, body, idempotency_key, fingerprint)))


@router.post(
    "/vouchers/{code}/cancel", response_model=VoucherWithBalance,
    responses=responses(*WRITE_ERRORS, "voucher_not_found", "voucher_not_issued", "voucher_expired"),
)
async def cancel_voucher(code: CodePath, principal: Redeemer, request: Request, idempotency_key: IdempotencyKey,
                         db: Database, body: VoucherCancel | None = None) -> Response:
    """Cancel an issued voucher: its points come back to the lots they came from with their original expiry (points
    whose lot expired meanwhile come back expired, as refunds do), and its unit back to stock. Admin keys may cancel
    any time; redeem keys within the reward's `cancel_window_hours` (else 403 `insufficient_scope`)."""
    data = body or VoucherCancel()
    return await guard_lookups(request, principal, lambda: run_write(
        request, principal, idempotency_key, data,
        lambda fingerprint: service.cancel_voucher(db, principal, code, data, idempotency_key, fingerprint)))

