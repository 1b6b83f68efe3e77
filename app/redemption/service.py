"""Redemption use cases: quote, redeem, hold, capture, void, refund, release of expired holds.

The program's amount rules (minimum, increment, share of the order) are checked here, before the write; the rest
(the member's status, the balance, the hold's state) by the write's SQL function."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import asyncpg

from app.db.access import Db
from app.errors import DomainError
from app.ledger.service import get_balance
from app.ledger.writes import Answer, Write
from app.money import fits_currency
from app.programs.context import Principal
from app.redemption import queries as q
from app.redemption.conversion import check_amount, max_redeemable, money_args, points_value
from app.redemption.schemas import CaptureRequest, HoldCreate, Quote, QuoteRequest, RedeemCreate, RefundCreate

HOLD_ID = re.compile(r"^hold_[0-9a-f]{16}$")
REDEMPTION_ID = re.compile(r"^rdm_[0-9a-f]{16}$")


def _check_money(p: Principal, amount: Decimal | None) -> None:
    if amount is not None and not fits_currency(amount, p.currency):
        raise DomainError("validation_error", f"order_total: {amount} has more decimals than {p.currency} allows.")


def _check_currency(p: Principal, currency: str | None) -> None:
    if currency is not None and currency != p.currency:
        raise DomainError("currency_mismatch", f"This program works in {p.currency}.", expected=p.currency)


async def quote(pool: asyncpg.Pool, p: Principal, data: QuoteRequest) -> Quote:
    _check_currency(p, data.currency)
    _check_money(p, data.order_total)
    balance = await get_balance(pool, p.program_id, data.member_id)
    points, limited_by = max_redeemable(balance.available, data.order_total, p.settings)
    return Quote(
        member_id=data.member_id, currency=p.currency, order_total=data.order_total, available=balance.available,
        max_points=points, amount=points_value(points, p.settings, p.currency),
        points_per_currency_unit=p.settings.points_per_currency_unit_redeemed,
        limited_by="none" if points == balance.available and points > 0 else limited_by,
    )


def _validate_amount(p: Principal, data: RedeemCreate) -> None:
    _check_money(p, data.order_total)
    reason = check_amount(data.points, p.settings, data.order_total)
    if reason:
        raise DomainError("invalid_redeem_amount", reason)


def _debit(p: Principal, data: RedeemCreate, kind: str, expires_at: datetime | None, key: str | None,
           fingerprint: bytes) -> Write:
    return Write("redeem", {
        "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_member_ref": data.member_id,
        "p_points": data.points, "p_kind": kind, "p_reference": data.reference, "p_description": data.description,
        "p_metadata": data.metadata, "p_hold_expires_at": expires_at, **money_args(p.settings, p.currency),
    })


async def redeem(db: Db, p: Principal, data: RedeemCreate, key: str | None, fingerprint: bytes) -> Answer:
    """Spend points now, soonest-expiring lots first."""
    _validate_amount(p, data)
    return await db.writer.execute(_debit(p, data, "redeem", None, key, fingerprint))


async def hold(db: Db, p: Principal, data: HoldCreate, key: str | None, fingerprint: bytes) -> Answer:
    """Reserve points (available -> held) until captured, voided or expired."""
    _validate_amount(p, data)
    seconds = data.expires_in_seconds or p.settings.hold_default_seconds
    if seconds > p.settings.hold_max_seconds:
        raise DomainError("hold_too_long", f"Holds last at most {p.settings.hold_max_seconds} seconds.")
    expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
    return await db.writer.execute(_debit(p, data, "hold", expires_at, key, fingerprint))


def _resolve(p: Principal, hold_id: str, kind: str, points: int | None, key: str | None, fingerprint: bytes) -> Write:
    return Write("resolve_hold", {
        "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_hold_id": hold_id, "p_kind": kind,
        "p_points": points, "p_min_points": p.settings.min_redeem_points, "p_increment": p.settings.redeem_increment,
        **money_args(p.settings, p.currency),
    })


async def capture(db: Db, p: Principal, hold_id: str, data: CaptureRequest, key: str | None,
                  fingerprint: bytes) -> Answer:
    """Redeem all the held points, or ``points`` of them (the rest goes back). A partial capture follows the
    program's redemption rules (minimum, increment)."""
    return await db.writer.execute(_resolve(p, hold_id, "capture", data.points, key, fingerprint))


async def void(db: Db, p: Principal, hold_id: str, key: str | None, fingerprint: bytes) -> Answer:
    return await db.writer.execute(_resolve(p, hold_id, "void", None, key, fingerprint))


async def refund(db: Db, p: Principal, redemption_id: str, data: RefundCreate, key: str | None,
                 fingerprint: bytes) -> Answer:
    return await db.writer.execute(Write("refund", {
        "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_redemption_id": redemption_id,
        "p_points": data.points, "p_description": data.description, "p_metadata": data.metadata,
        **money_args(p.settings, p.currency),
    }))


async def hold_json(pool: asyncpg.Pool, p: Principal, hold_id: str) -> str:
    m = money_args(p.settings, p.currency)
    body: str | None = await pool.fetchval(q.HOLD_JSON, p.program_id, hold_id, *m.values())
    if body is None:
        raise DomainError("hold_not_found")
    return body


async def redemption_json(pool: asyncpg.Pool, p: Principal, redemption_id: str) -> str:
    m = money_args(p.settings, p.currency)
    body: str | None = await pool.fetchval(q.REDEMPTION_JSON, p.program_id, redemption_id, *m.values())
    if body is None:
        raise DomainError("redemption_not_found")
    return body


async def release_expired_holds(pool: asyncpg.Pool, batch: int = 200, program_id: UUID | None = None,
                                dry_run: bool = False, progress: Callable[[int], None] | None = None) -> int:
    """Release every open hold past its expiry, ``batch`` holds per transaction. Safe to run concurrently and to
    rerun: a hold resolves at most once. ``program_id``: that program's holds only; ``dry_run``: count them and
    change nothing; ``progress``: called with the holds released so far after each batch."""
    if dry_run:
        return int(await pool.fetchval(q.COUNT_EXPIRED, program_id))
    released = 0
    for _ in range(100_000):
        done = await pool.fetchval(q.RELEASE_EXPIRED, batch, program_id)
        released += done
        if progress:
            progress(released)
        if done < batch:
            break
    return int(released)
