"""Rewards use cases: the catalogue (create, read, browse, change, archive, partner codes), exchanges, the vouchers'
life (validate, redeem, cancel, expire), the wallet and the outstanding vouchers.

The catalogue is configuration: its rows are written here in a short transaction. Everything that moves points or
changes a voucher is one write of migrations/functions/95_rewards.sql (app/ledger/writes.py), so it is idempotent
under its key and answers with JSON Postgres renders."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from app.db.access import Db
from app.errors import DomainError
from app.ledger.writes import Answer, Write, execute_alone
from app.money import MINOR_UNITS, fits_currency
from app.programs import versions
from app.programs.context import Principal
from app.rewards import queries as q
from app.rewards.codes import code_of
from app.rewards.schemas import (
    ExchangeCreate,
    PartnerCodesResult,
    RewardCreate,
    RewardPatch,
    VoucherCancel,
    VoucherRedeem,
)

REWARD_ID = re.compile(r"^rwd_[0-9a-f]{16}$")
VOUCHER_ID = re.compile(r"^vch_[0-9a-f]{16}$")


# --- the catalogue -------------------------------------------------------------------------------------------


def _invalid(exc: ValidationError) -> DomainError:
    errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    summary = "; ".join(str(e["msg"]) for e in errors[:5])
    return DomainError("validation_error", summary, errors=errors)


def _field_error(field: str, message: str) -> DomainError:
    return DomainError("validation_error", f"{field}: {message}",
                       errors=[{"loc": ["body", field], "msg": message, "type": "value_error"}])


async def _tier_names(conn: asyncpg.Connection, program_id: UUID) -> list[str]:
    row = await versions.in_force(conn, versions.TIERS, program_id, datetime.now(UTC))
    if row is None:
        return []
    return [t["name"] for t in row["document"]["tiers"]]


async def _columns(conn: asyncpg.Connection, p: Principal, data: RewardCreate) -> dict[str, Any]:
    """The reward's row: money checked against and rounded to the program's currency, the tier checked against the
    ladder in force."""
    quantum = Decimal(1).scaleb(-MINOR_UNITS[p.currency])
    money: dict[str, Decimal | None] = {}
    for field in ("amount_off", "min_spend"):
        amount: Decimal | None = getattr(data, field)
        if amount is not None and not fits_currency(amount, p.currency):
            raise _field_error(field, f"{amount} has more decimals than {p.currency} allows")
        money[field] = None if amount is None else amount.quantize(quantum)
    if data.min_tier is not None:
        ladder = await _tier_names(conn, p.program_id)
        if data.min_tier not in ladder:
            raise _field_error("min_tier", f"{data.min_tier!r} is not a tier of the program's ladder "
                               f"({', '.join(ladder) or 'no tiers configured'})")
    has_money = data.amount_off is not None or data.min_spend is not None
    return {
        "name": data.name, "description": data.description, "kind": data.kind, "cost_points": data.cost_points,
        "currency": p.currency if has_money else None, **money, "percent_off": data.percent_off, "sku": data.sku,
        "stock": 0 if data.kind == "partner_code" else data.stock, "low_stock_threshold": data.low_stock_threshold,
        "limit_count": data.limit.count if data.limit else None,
        "limit_period": data.limit.period if data.limit else None,
        "available_from": data.available_from, "available_until": data.available_until, "min_tier": data.min_tier,
        "channels": list(data.channels), "voucher_valid_days": data.voucher_valid_days,
        "cancel_window_hours": data.cancel_window_hours, "refund_on_expiry": data.refund_on_expiry,
        "metadata": data.metadata,
    }


async def create_reward(pool: asyncpg.Pool, p: Principal, data: RewardCreate) -> str:
    async with pool.acquire() as conn, conn.transaction():
        columns = await _columns(conn, p, data)
        pk = await conn.fetchval(q.INSERT_REWARD, p.program_id, *(columns[c] for c in q.REWARD_COLUMNS))
        body: str = await conn.fetchval(q.REWARD_JSON, pk, p.timezone)
    return body


def _as_created(row: asyncpg.Record) -> dict[str, Any]:
    """A stored reward as the fields a creation would send."""
    fields = {c: row[c] for c in q.REWARD_COLUMNS if c not in ("currency", "limit_count", "limit_period")}
    fields["limit"] = {"count": row["limit_count"], "period": row["limit_period"]} if row["limit_count"] else None
    if row["kind"] == "partner_code":
        fields.pop("stock")  # its unused codes, never set by hand
    return fields


async def patch_reward(pool: asyncpg.Pool, p: Principal, reward_id: str, patch: RewardPatch) -> str:
    """Change the fields sent (null clears one); the reward as changed must be valid as a whole. Vouchers already
    issued keep the terms they were issued with."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(q.LOCK_REWARD, p.program_id, reward_id)
        if row is None:
            raise DomainError("reward_not_found")
        try:
            data = RewardCreate.model_validate({**_as_created(row), **patch.model_dump(exclude_unset=True)})
        except ValidationError as exc:
            raise _invalid(exc) from None
        columns = await _columns(conn, p, data)
        if data.kind == "partner_code":
            columns["stock"] = row["stock"]
        await conn.execute(q.UPDATE_REWARD, row["id"], *(columns[c] for c in q.REWARD_COLUMNS if c != "kind"))
        body: str = await conn.fetchval(q.REWARD_JSON, row["id"], p.timezone)
    return body


async def archive_reward(pool: asyncpg.Pool, p: Principal, reward_id: str) -> str:
    """Archive (idempotent): no more exchanges; the reward and its vouchers stay."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q.ARCHIVE_REWARD, p.program_id, reward_id)
        return await reward_json(conn, p, reward_id, None)


async def reward_json(conn: asyncpg.Pool | asyncpg.Connection, p: Principal, reward_id: str,
                      member_ref: str | None) -> str:
    row = await conn.fetchrow(q.REWARD_READ, p.program_id, reward_id, member_ref, p.timezone)
    if row["body"] is None:
        raise DomainError("reward_not_found")
    if member_ref is not None and not row["member_found"]:
        raise DomainError("member_not_found")
    body: str = row["body"]
    return body


async def rewards_json(pool: asyncpg.Pool, p: Principal, member_ref: str | None, status: str, limit: int,
                       cursor: str | None) -> str:
    """A page of the catalogue in creation order; with a member, the rewards it can still see (not archived, window
    not ended) and, for each, what it may do."""
    if cursor is not None and not REWARD_ID.match(cursor):
        raise DomainError("invalid_cursor")
    if member_ref is not None:
        status = "active"
    body: str | None = await pool.fetchval(q.REWARDS_PAGE, p.program_id, member_ref, status, cursor, limit,
                                           p.timezone)
    if body is None:
        raise DomainError("member_not_found")
    return body


async def upload_partner_codes(pool: asyncpg.Pool, p: Principal, reward_id: str,
                               codes: list[str]) -> PartnerCodesResult:
    """Add codes to a partner-code reward; codes it has already are skipped, so an upload can be repeated."""
    unique = list(dict.fromkeys(codes))
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(q.LOCK_REWARD, p.program_id, reward_id)
        if row is None:
            raise DomainError("reward_not_found")
        if row["kind"] != "partner_code":
            raise DomainError("validation_error", f"Codes are uploaded to partner_code rewards; this one is a "
                              f"{row['kind']}.")
        added = await conn.fetchrow(q.ADD_PARTNER_CODES, p.program_id, row["id"], unique)
    return PartnerCodesResult(reward_id=reward_id, received=len(codes), added=added["added"],
                              duplicates=len(codes) - added["added"], stock=added["stock"])


# --- exchanges and vouchers ----------------------------------------------------------------------------------


async def exchange(db: Db, p: Principal, reward_id: str, data: ExchangeCreate, key: str | None,
                   fingerprint: bytes) -> Answer:
    """The member's points for one unit of the reward, and its voucher: one write. In a group-commit batch a write may
    lock only its member (app/ledger/batch.py); an exchange that takes stock also locks the reward's row, so the SQL
    answers 'stale' there and it runs again in a transaction of its own."""
    args = {
        "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_reward_id": reward_id,
        "p_member_ref": data.member_id,
        "p_delivery": data.delivery.model_dump(mode="json") if data.delivery is not None else None,
        "p_alone": db.writer.batcher is None, "p_timezone": p.timezone,
    }
    answer = await db.writer.execute(Write("exchange", args))
    if answer.status == "stale":
        answer = await execute_alone(db.pool, Write("exchange", {**args, "p_alone": True}))
    return answer


async def redeem_voucher(db: Db, p: Principal, code: str, data: VoucherRedeem, key: str | None,
                         fingerprint: bytes) -> Answer:
    """Use the voucher (exactly once) on the order ``reference``; the optional member, channel and order total are
    checked against its terms."""
    if data.order_total is not None and not fits_currency(data.order_total, p.currency):
        raise _field_error("order_total", f"{data.order_total} has more decimals than {p.currency} allows")
    return await db.writer.execute(Write("redeem_voucher", {
        "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_code": code_of(code),
        "p_reference": data.reference, "p_member_ref": data.member_id, "p_channel": data.channel,
        "p_order_total": data.order_total,
    }))


async def cancel_voucher(db: Db, p: Principal, code: str, data: VoucherCancel, key: str | None,
                         fingerprint: bytes) -> Answer:
    """Cancel an issued voucher: its points come back with their original expiry (expired ones as expired), its
    unit back to stock. Admin keys any time; redeem keys within the reward's cancel window."""
    return await db.writer.execute(Write("cancel_voucher", {
        "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_code": code_of(code),
        "p_reason": data.reason, "p_admin": p.allows("admin"),
    }))


async def voucher_json(pool: asyncpg.Pool, p: Principal, code: str) -> str:
    body: str | None = await pool.fetchval(q.VOUCHER, p.program_id, code_of(code))
    if body is None:
        raise DomainError("voucher_not_found")
    return body


async def wallet_json(pool: asyncpg.Pool, p: Principal, member_ref: str, status: str | None, limit: int,
                      cursor: str | None) -> str:
    if cursor is not None and not VOUCHER_ID.match(cursor):
        raise DomainError("invalid_cursor")
    body: str | None = await pool.fetchval(q.WALLET, p.program_id, member_ref, status, cursor, limit)
    if body is None:
        raise DomainError("member_not_found")
    return body


async def outstanding_json(pool: asyncpg.Pool, p: Principal) -> str:
    body: str = await pool.fetchval(q.OUTSTANDING, p.program_id, MINOR_UNITS[p.currency], p.currency)
    return body


async def expire_vouchers(pool: asyncpg.Pool, batch: int = 200, program_id: UUID | None = None,
                          dry_run: bool = False, progress: Callable[[int], None] | None = None) -> int:
    """Expire every issued voucher past its validity, one member's (up to ``batch``) per transaction, so the job
    holds one member's lock at a time (ledger.expire_vouchers); rewards with ``refund_on_expiry`` give the points
    back. Safe to run concurrently and to rerun: a voucher resolves once. ``dry_run``: count them."""
    if dry_run:
        return int(await pool.fetchval(q.COUNT_DUE_VOUCHERS, program_id))
    expired = 0
    for _ in range(100_000):  # bounded: a run that stops short is continued by the next one
        done = await pool.fetchval(q.EXPIRE_VOUCHERS, batch, program_id)
        if not done:
            break
        expired += done
        if progress:
            progress(expired)
    return expired
