"""Balances, activity, entries, adjustments and reversals."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.api.auth import Principal, require
from app.api.deps import Admin, Database, EntryIdPath, MemberIdPath, Pool, Reader
from app.api.idempotency import JSONText, run_write
from app.api.idempotency_key import IdempotencyKey
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.ledger import service, transfers
from app.ledger.schemas import (
    ActivityPage,
    AdjustmentCreate,
    Balance,
    BalanceAsOf,
    Entry,
    EntryWithBalance,
    Instant,
    ReverseCreate,
    TransferCreate,
    TransferResult,
)

router = APIRouter(prefix="/v1", tags=["ledger"], route_class=ApiRoute)

WRITE_ERRORS = ("insufficient_scope", "idempotency_key_missing", "idempotency_key_invalid", "idempotency_key_reused",
                "request_in_progress", "member_busy", "payload_too_large", "malformed_request")


AsOf = Annotated[Instant | None, Query(
    description="An instant with its offset: the answer is the ledger as recorded by then (entries recorded at or "
                "before it), README \"Balances as of an instant\"")]


@router.get(
    "/members/{member_id}/balance", response_model=BalanceAsOf | Balance,
    responses=responses("insufficient_scope", "member_not_found"),
)
async def get_balance(member_id: MemberIdPath, principal: Reader, pool: Pool, as_of: AsOf = None) -> Response:
    """The member's materialised balance with what reads fold in at once (lapsed holds, due pending points,
    expired points): one statement, its JSON rendered by Postgres. With `as_of`: the balances as the ledger
    recorded them by that instant (`BalanceAsOf`: with `expired`, without the next expiry)."""
    if as_of is not None:
        return JSONText(await service.balance_as_of_json(pool, principal.program_id, member_id, as_of))
    return JSONText(await service.balance_json(pool, principal.program_id, member_id))


@router.get(
    "/members/{member_id}/activity", response_model=ActivityPage,
    responses=responses("insufficient_scope", "member_not_found", "invalid_cursor"),
)
async def get_activity(
    member_id: MemberIdPath, principal: Reader, pool: Pool,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    as_of: Annotated[Instant | None, Query(
        description="Only entries recorded at or before this instant (the activity behind a balance `as_of`)")] = None,
) -> Response:
    """Entries touching the member, newest first, with cursor pagination stable under concurrent writes."""
    return JSONText(await service.activity_json(pool, principal.program_id, member_id, limit, cursor, as_of))


@router.get("/entries/{entry_id}", response_model=Entry, responses=responses("insufficient_scope", "entry_not_found"))
async def get_entry(entry_id: EntryIdPath, principal: Reader, pool: Pool) -> Response:
    return JSONText(await service.entry_json(pool, principal.program_id, entry_id))


@router.post(
    "/adjustments", status_code=201, response_model=EntryWithBalance,
    responses=responses(*WRITE_ERRORS, "member_not_found", "insufficient_points", "external_ref_conflict",
                        "points_out_of_range"),
)
async def create_adjustment(
    body: AdjustmentCreate, principal: Admin, request: Request, idempotency_key: IdempotencyKey, db: Database
) -> Response:
    """Credit (positive points, a new lot) or debit (negative, soonest-expiring lots first) a member by
    hand, with a reason. A debit never takes `available` below zero."""
    return await run_write(request, principal, idempotency_key, body,
                           lambda fingerprint: service.adjust(db, principal, body, idempotency_key, fingerprint))


@router.post(
    "/entries/{entry_id}/reverse", status_code=201, response_model=EntryWithBalance,
    responses=responses(*WRITE_ERRORS, "entry_not_found", "entry_not_reversible", "entry_already_reversed",
                        "insufficient_points"),
)
async def reverse_entry(
    entry_id: EntryIdPath, body: ReverseCreate, principal: Admin, request: Request,
    idempotency_key: IdempotencyKey, db: Database,
) -> Response:
    """Post the mirror entry of `entry_id`, once. Debited points return to the lots they came from (with
    their original expiry); credited points are taken back from the lots the entry created first."""
    return await run_write(request, principal, idempotency_key, body, lambda fingerprint: service.reverse(
        db, principal, entry_id, body, idempotency_key, fingerprint))


Spender = Annotated[Principal, Depends(require("redeem"))]


@router.post(
    "/transfers", status_code=201, response_model=TransferResult,
    responses=responses(*WRITE_ERRORS, "member_not_found", "insufficient_points", "transfers_disabled",
                        "transfer_amount_invalid", "transfer_limit_reached", "same_member", "member_suspended",
                        "member_closed", "points_out_of_range"),
)
async def create_transfer(
    body: TransferCreate, principal: Spender, request: Request, idempotency_key: IdempotencyKey, db: Database
) -> Response:
    """Give points to another member of the program (gifting, family pooling): one entry takes them from the
    sender's available points, soonest-expiring lots first, and credits them to the receiver in lots that keep that
    expiry (a transfer never extends the life of points). Off unless the program setting `transfers_enabled` is on;
    the settings `transfer_min_points`, `transfer_max_points` and `transfer_daily_limit_points` (per sender and
    local day) bound it."""
    return await run_write(request, principal, idempotency_key, body, lambda fingerprint: transfers.transfer(
        db, principal, body, idempotency_key, fingerprint))
