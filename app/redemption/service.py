"""Redemption use cases: quote, redeem, hold, capture, void, refund, release of expired holds.
Callers own the transaction (except ``release_expired_holds``, a job that commits per hold)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from app.errors import DomainError
from app.ledger.schemas import Balance
from app.ledger.service import balance_of, get_balance
from app.money import fits_currency
from app.programs.context import Principal
from app.redemption import queries as q
from app.redemption.conversion import check_amount, max_redeemable, points_value
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

_STATUS_ERRORS = {
    "member_not_found", "hold_not_found", "hold_not_open", "hold_expired", "capture_exceeds_hold",
    "redemption_not_found",
}


def _check(status: str, available: int | None = None) -> None:
    """Raise the domain error of a ledger function's status. ``available``: the balance a refused debit
    found too small (the debit function answers it)."""
    if status == "ok":
        return
    if status == "insufficient_points":
        raise DomainError("insufficient_points", "The member does not have enough available points.",
                          available=available)
    if status in _STATUS_ERRORS:
        raise DomainError(status)
    raise RuntimeError(f"unexpected ledger status {status!r}")


def _check_money(p: Principal, amount: Decimal | None) -> None:
    if amount is not None and not fits_currency(amount, p.currency):
        raise DomainError("validation_error", f"order_total: {amount} has more decimals than {p.currency} allows.")


def _check_currency(p: Principal, currency: str | None) -> None:
    if currency is not None and currency != p.currency:
        raise DomainError("currency_mismatch", f"This program works in {p.currency}.", expected=p.currency)


async def quote(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, data: QuoteRequest) -> Quote:
    _check_currency(p, data.currency)
    _check_money(p, data.order_total)
    balance = await get_balance(conn, p.program_id, data.member_id)
    points, limited_by = max_redeemable(balance.available, data.order_total, p.settings)
    return Quote(
        member_id=data.member_id, currency=p.currency, order_total=data.order_total, available=balance.available,
        max_points=points, amount=points_value(points, p.settings, p.currency),
        points_per_currency_unit=p.settings.points_per_currency_unit_redeemed,
        limited_by="none" if points == balance.available and points > 0 else limited_by,
    )


def _validate_amount(p: Principal, data: RedeemCreate) -> None:
    reason = check_amount(data.points, p.settings, data.order_total)
    if reason:
        raise DomainError("invalid_redeem_amount", reason)


async def _debit(conn: asyncpg.Connection, p: Principal, data: RedeemCreate, kind: str,
                 expires_at: datetime | None) -> tuple[asyncpg.Record, Balance]:
    """Redeem or hold: one round trip that also answers the balance after it (or, refused for insufficient
    points, the balance that was too small)."""
    row = await conn.fetchrow(q.REDEEM_OR_HOLD, p.program_id, data.member_id, data.points, kind,
                              data.reference, data.description, data.metadata, expires_at)
    _check(row["status"], row["available"])
    return row, balance_of(row)


async def redeem(conn: asyncpg.Connection, p: Principal, data: RedeemCreate) -> RedemptionWithBalance:
    """The answer is built from what was just written (a new redemption has no refunds), not read back."""
    _check_money(p, data.order_total)
    _validate_amount(p, data)
    row, balance = await _debit(conn, p, data, "redeem", None)
    redemption = Redemption(
        id=row["object_id"], member_id=data.member_id, points=data.points, refunded_points=0,
        amount=points_value(data.points, p.settings, p.currency), currency=p.currency, reference=data.reference,
        entry_id=row["entry_id"], hold_id=None, created_at=row["created_at"], refunds=[],
    )
    return RedemptionWithBalance(redemption=redemption, balance=balance)


async def hold(conn: asyncpg.Connection, p: Principal, data: HoldCreate) -> HoldWithBalance:
    _check_money(p, data.order_total)
    _validate_amount(p, data)
    seconds = data.expires_in_seconds or p.settings.hold_default_seconds
    if seconds > p.settings.hold_max_seconds:
        raise DomainError("hold_too_long", f"Holds last at most {p.settings.hold_max_seconds} seconds.")
    expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
    row, balance = await _debit(conn, p, data, "hold", expires_at)
    hold = Hold(
        id=row["object_id"], member_id=data.member_id, points=data.points, captured_points=0,
        status="open" if expires_at > row["created_at"] else "expired", reference=data.reference,
        description=data.description, amount=points_value(data.points, p.settings, p.currency), currency=p.currency,
        expires_at=expires_at, created_at=row["created_at"], resolved_at=None, hold_entry_id=row["entry_id"],
        resolve_entry_id=None, redemption_id=None,
    )
    return HoldWithBalance(hold=hold, balance=balance)


async def capture(conn: asyncpg.Connection, p: Principal, hold_id: int, data: CaptureRequest) -> CaptureResult:
    row = await conn.fetchrow(q.RESOLVE, p.program_id, hold_id, "capture", data.points)
    _check(row["status"])
    redemption = _redemption(p, row["redemption"]) if row["redemption"] is not None else None
    return CaptureResult(hold=_hold(p, row["hold"]), redemption=redemption, balance=balance_of(row["balance"]))


async def void(conn: asyncpg.Connection, p: Principal, hold_id: int, data: VoidRequest) -> HoldWithBalance:
    row = await conn.fetchrow(q.RESOLVE, p.program_id, hold_id, "void", None)
    _check(row["status"])
    return HoldWithBalance(hold=_hold(p, row["hold"]), balance=balance_of(row["balance"]))


async def refund(conn: asyncpg.Connection, p: Principal, redemption_id: int, data: RefundCreate) -> RefundResult:
    row = await conn.fetchrow(q.REFUND, p.program_id, redemption_id, data.points, data.description, data.metadata)
    if row["status"] == "refund_exceeds_redemption":
        raise DomainError("refund_exceeds_redemption", refundable=row["available_points"])
    _check(row["status"])
    redemption = await get_redemption(conn, p, redemption_id)
    refund_row = next(f for f in redemption.refunds if f.id == row["refund_id"])
    return RefundResult(refund=refund_row, redemption=redemption,
                        balance=await get_balance(conn, p.program_id, redemption.member_id))


def _hold(p: Principal, row: Mapping[str, Any]) -> Hold:
    return Hold(**row, amount=points_value(row["points"], p.settings, p.currency), currency=p.currency)


def _redemption(p: Principal, row: Mapping[str, Any]) -> Redemption:
    return Redemption(**row, amount=points_value(row["points"], p.settings, p.currency), currency=p.currency)


async def get_hold(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, hold_id: int) -> Hold:
    row = await conn.fetchrow(q.GET_HOLD, p.program_id, hold_id)
    if row is None:
        raise DomainError("hold_not_found")
    return _hold(p, dict(row))


async def get_redemption(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, redemption_id: int) -> Redemption:
    row = await conn.fetchrow(q.GET_REDEMPTION, p.program_id, redemption_id)
    if row is None:
        raise DomainError("redemption_not_found")
    return _redemption(p, dict(row))


async def release_expired_holds(pool: asyncpg.Pool, batch: int = 200, program_id: UUID | None = None,
                                dry_run: bool = False, progress: Callable[[int], None] | None = None) -> int:
    """Release every open hold past its expiry, ``batch`` holds per transaction. Safe to run concurrently
    and to rerun: a hold resolves at most once. ``program_id``: that program's holds only; ``dry_run``: count
    them and change nothing; ``progress``: called with the holds released so far after each batch."""
    if dry_run:  # issue-18
        return int(await pool.fetchval(q.EXPIRED_HOLDS_COUNT, program_id))
    released = 0
    for _ in range(100_000):
        async with pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(q.RELEASE_EXPIRED, batch, program_id)
        released += done
        if progress:
            progress(released)
        if done < batch:
            break
    return int(released)
