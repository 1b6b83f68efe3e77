"""Earning use cases: rule versions, purchases (and their dry-run quote), returns, custom events, and the
activation of pending points. Callers own the transaction (except the activation job)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel

from app.earning import queries as q
from app.earning.rules import (
    Award,
    BaseRate,
    Conditions,
    EarnRule,
    EventAward,
    MemberFacts,
    ReturnRequest,
    RuleSet,
    applied_rule_ids,
    clawback,
    evaluate,
    evaluate_event,
    event_periods_needed,
    rule_periods_needed,
)
from app.earning.rules import Purchase as RulesPurchase
from app.earning.schemas import (
    EarnRulesUpdate,
    EarnRuleVersion,
    EventCreate,
    EventResult,
    LotInfo,
    Purchase,
    PurchaseCreate,
    PurchaseQuote,
    PurchaseResult,
    ReturnCreate,
    ReturnInfo,
    ReturnResult,
)
from app.errors import DomainError
from app.expiry.service import expiry_for, policy_from_row
from app.ledger.service import balance_of, get_balance
from app.money import fits_currency
from app.programs import versions
from app.programs.context import Principal
from app.tiers.policy import TierConfig, tier_multiplier, window_bounds
from app.tiers.service import after_purchase, config_from_row

DEFAULT_RULES = RuleSet(base=BaseRate(points_per_unit=Decimal(1)))


def _rules(version_id: int | None, raw: Any) -> RuleSet:
    return DEFAULT_RULES if version_id is None else versions.parse(RuleSet, version_id, raw)


def with_tier_multiplier(rules: RuleSet, config: TierConfig | None, tier: str | None) -> RuleSet:
    """The tier's earn multiplier as one more stacking multiplier rule (applied last), so it shows in the
    breakdown like any other rule. The member's tier is the one held at the purchase's occurred_at, before
    this purchase: an upgrade earned by a purchase applies from the next one."""
    factor = tier_multiplier(config, tier) if config is not None else Decimal(1)
    if factor == 1 or tier is None:
        return rules
    rule_id = "tier:" + re.sub(r"[^A-Za-z0-9._:\-]", "-", tier)[:59]
    # issue-12: on the base points only, if the rule set says so (tier_multiplier_applies_to)
    applies_to = "base" if rules.tier_multiplier_applies_to == "base" else None
    rule = EarnRule(id=rule_id, kind="multiplier", factor=factor, priority=1_000_000, applies_to=applies_to,
                    description=f"{tier} tier multiplier", conditions=Conditions(tiers=[tier]))
    return rules.model_copy(update={"rules": [*rules.rules, rule]})


def content_hash(model: BaseModel) -> bytes:
    canonical = json.dumps(model.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


# --- rule versions ---------------------------------------------------------------------------------------


def _version(row: Any) -> EarnRuleVersion:
    return EarnRuleVersion(version=row["version"], effective_from=row["effective_from"], created_at=row["created_at"],
                           rules=row["document"])


async def put_rules(conn: asyncpg.Connection, p: Principal, data: EarnRulesUpdate) -> EarnRuleVersion:
    rules = RuleSet.model_validate(data.model_dump(exclude={"effective_from"}))
    return _version(await versions.append(conn, versions.EARN_RULES, p.program_id, data.effective_from,
                                          rules.model_dump(mode="json", exclude_unset=True)))


async def current_rules(conn: asyncpg.Connection | asyncpg.Pool, p: Principal) -> EarnRuleVersion:
    row = await versions.in_force(conn, versions.EARN_RULES, p.program_id, datetime.now(UTC))
    if row is None:
        return EarnRuleVersion(version=0, effective_from=None, created_at=None, rules=DEFAULT_RULES)
    return _version(row)


async def rule_versions(conn: asyncpg.Connection | asyncpg.Pool, p: Principal) -> list[EarnRuleVersion]:
    return [_version(r) for r in await versions.history(conn, versions.EARN_RULES, p.program_id)]


# --- purchases -------------------------------------------------------------------------------------------


def _check_money(p: Principal, data: PurchaseCreate) -> None:
    if data.currency != p.currency:
        raise DomainError("currency_mismatch", f"This program works in {p.currency}.", expected=p.currency)
    amounts = [("total", data.total), ("paid_with_points", data.paid_with_points)]
    for i, line in enumerate(data.lines):
        amounts += [(f"lines.{i}.unit_price", line.unit_price), (f"lines.{i}.discount", line.discount)]
    for field, amount in amounts:
        if not fits_currency(amount, p.currency):
            raise DomainError("validation_error", f"{field}: {amount} has more decimals than {p.currency} allows.",
                              errors=[{"loc": ["body", *field.split(".")], "msg": "too many decimals",
                                       "type": "currency_precision"}])


# Terminals' clocks drift; a purchase from further in the future than this is a client error.
CLOCK_SKEW = timedelta(minutes=5)


def _occurred_at(value: datetime | None) -> datetime:
    now = datetime.now(UTC)
    if value is None:
        return now
    if value > now + CLOCK_SKEW:
        raise DomainError("validation_error", "occurred_at is in the future.", errors=[
            {"loc": ["body", "occurred_at"], "msg": "must not be in the future", "type": "future"}])
    return value


# --- issue 12 F2: how far back a purchase or event may be dated ---------------------------------------------------


def _context_refusal(status: str) -> DomainError:
    """The refusal for a context status that is not 'ok' (a catalogue code)."""
    if status == "occurred_at_too_old":
        return DomainError(status, "occurred_at is before the program's first earn rules; the built-in default "
                           "rules never apply to a program that has rules.", reason="before_program_start")
    return DomainError(status)


def _check_backdate(p: Principal, occurred_at: datetime) -> None:
    """The program's ``max_backdate_days`` (unset: no age limit beyond the program's first earn rules)."""
    days = p.settings.max_backdate_days
    if days is not None and occurred_at < datetime.now(UTC) - timedelta(days=days):
        raise DomainError("occurred_at_too_old", f"occurred_at is more than {days} days ago (program setting "
                          "max_backdate_days).", reason="max_backdate_days", max_backdate_days=days)


# --- issue 12: limited rules ---------------------------------------------------------------------------------------


def _rule_counts(rules: RuleSet, counts: Any) -> dict[str, dict[str, int]]:
    """The counts the evaluator needs for ``rules`` (``ledger_rule_counts``' answer; a rule or period it does not
    name has none yet)."""
    known = counts or {}
    return {rule_id: {per: int(known.get(rule_id, {}).get(per, 0)) for per in periods}
            for rule_id, periods in rule_periods_needed(rules).items()}


async def _record_limited_rules(conn: asyncpg.Connection, p: Principal, member_pk: int, purchase_id: int,
                                occurred_at: datetime, rules: RuleSet, award: Award) -> None:
    """Record each limited rule the award applied, so that later purchases count it (one statement, only when
    a limited rule applied)."""
    applied = applied_rule_ids(award)
    limited = [rule for rule in rules.rules if rule.limits and rule.id in applied]
    if limited:
        await conn.execute(q.RECORD_RULE_AWARDS, p.program_id, member_pk, purchase_id, occurred_at,
                           [rule.id for rule in limited], [rule.personal for rule in limited])


def _rules_purchase(data: PurchaseCreate, occurred_at: datetime) -> RulesPurchase:
    return RulesPurchase(occurred_at=occurred_at, channel=data.channel, store_id=data.store_id, total=data.total,
                         paid_with_points=data.paid_with_points, lines=data.lines)


async def post_purchase(conn: asyncpg.Connection, p: Principal, data: PurchaseCreate) -> tuple[int, PurchaseResult]:
    """Evaluate and post a purchase. The order id is a natural key: the same order with the same content
    answers the original (200, ``replayed``); with other content 409 ``order_already_posted``."""
    _check_money(p, data)
    # Without occurred_at the purchase happens at the transaction's time, the clock the ledger functions
    # judge "pending" by: with no return window its points are available at once, in the answer as in reads.
    given = _occurred_at(data.occurred_at) if data.occurred_at is not None else None
    ctx = await conn.fetchrow(q.PURCHASE_CONTEXT, p.program_id, data.member_id, p.settings.enrol_on_purchase,
                              data.order_id, given, p.timezone)
    if ctx["status"] != "ok":
        raise _context_refusal(ctx["status"])
    occurred_at: datetime = ctx["occurred_at"]
    digest = content_hash(data)
    if ctx["existing_purchase_id"] is not None:
        if ctx["existing_hash"] != digest:
            raise DomainError("order_already_posted", f"Order {data.order_id!r} was posted with other content.")
        existing = await get_purchase(conn, p, data.order_id)
        balance = await get_balance(conn, p.program_id, existing.member_id)
        return 200, PurchaseResult(purchase=existing, balance=balance, replayed=True)
    _check_backdate(p, occurred_at)  # issue-12 F2 (after the replay: an order posted in time always replays)

    rules = _rules(ctx["rule_version_id"], ctx["rules"])
    tier_config = config_from_row(ctx["tier_config_id"], ctx["tier_config"])
    tier = ctx["tier_then"] or (tier_config.tiers[0].name if tier_config else None)
    rules = with_tier_multiplier(rules, tier_config, tier)
    facts = MemberFacts(tier=tier, birthday=ctx["birthday"], first_purchase=ctx["first_purchase"],
                        earned_today=ctx["earned_today"], earned_this_month=ctx["earned_this_month"],
                        rule_counts=_rule_counts(rules, ctx["rule_counts"]))
    tz = ZoneInfo(p.timezone)
    award = evaluate(rules, _rules_purchase(data, occurred_at), facts, tz)
    available_at = occurred_at + timedelta(days=p.settings.pending_days)
    expiry = expiry_for(policy_from_row(ctx["policy_version_id"], ctx["policy"]), occurred_at, "purchase", tz)
    qualifying = award.points - sum(b.points for b in award.order_bonuses)
    window = window_bounds(tier_config, occurred_at, tz) if tier_config else (None, None)
    try:
        row = await conn.fetchrow(
            q.PURCHASE, p.program_id, ctx["member_pk"], data.order_id, occurred_at, digest,
            data.model_copy(update={"occurred_at": occurred_at}).model_dump_json(), ctx["rule_version_id"],
            award.model_dump_json(), award.points, available_at, expiry.expires_at, expiry.on_inactivity,
            expiry.activity_expires_at, qualifying, award.eligible_amount, data.member_id, window[0], window[1],
            tier_config.include_bonuses if tier_config else None,
        )
    except asyncpg.UniqueViolationError:
        raise DomainError("order_already_posted", f"Order {data.order_id!r} was posted for another member.") from None
    await _record_limited_rules(conn, p, ctx["member_pk"], row["purchase_id"], occurred_at, rules, award)  # issue-12
    balance = balance_of(row)
    new_tier = await after_purchase(conn, p, ctx, occurred_at, data.order_id, row)
    if new_tier is not None:
        balance = balance.model_copy(update={"tier": new_tier})
    # Built from what was just written rather than read back: one round trip less on the hot path.
    lot = None
    if row["lot_id"] is not None:
        expires_at = expiry.expires_at.astimezone(UTC) if expiry.expires_at else None
        lot = LotInfo(id=row["lot_id"], points=award.points, available_at=available_at.astimezone(UTC),
                      expires_at=expires_at)
    status = "none" if award.points == 0 else "pending" if available_at > datetime.now(UTC) else "available"
    purchase = Purchase(order_id=data.order_id, member_id=data.member_id, occurred_at=occurred_at.astimezone(UTC),
                        points=award.points,
                        status=status, clawed_back_points=0, rule_version=ctx["rule_version"], entry_id=row["entry_id"],
                        lot=lot, award=award, returns=[])
    return 201, PurchaseResult(purchase=purchase, balance=balance)


async def quote_purchase(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, data: PurchaseCreate) -> PurchaseQuote:
    """The same evaluation as posting, as a dry run: nothing is written and no key is needed."""
    _check_money(p, data)
    occurred_at = _occurred_at(data.occurred_at)
    version = await versions.in_force(conn, versions.EARN_RULES, p.program_id, occurred_at)
    if version is None and await conn.fetchval(q.HAS_RULE_VERSIONS, p.program_id):  # issue-12 F2
        raise _context_refusal("occurred_at_too_old")
    _check_backdate(p, occurred_at)
    tz = ZoneInfo(p.timezone)
    local = occurred_at.astimezone(tz)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    row = await conn.fetchrow(q.RULE_CONTEXT_FOR_QUOTE, p.program_id, data.member_id, day, day + timedelta(days=1),
                              month, next_month)
    rules = _rules(version["id"] if version else None, version["document"] if version else None)
    tier_row = await versions.in_force(conn, versions.TIERS, p.program_id, occurred_at)
    tier_config = config_from_row(tier_row["id"], tier_row["document"]) if tier_row else None
    tier = (row["tier"] if row else None) or (tier_config.tiers[0].name if tier_config else None)
    rules = with_tier_multiplier(rules, tier_config, tier)
    counts = None
    if row is not None and rule_periods_needed(rules):  # issue-12: the member's counts of the limited rules
        counts = await conn.fetchval(q.RULE_COUNTS, row["member_pk"], rules.model_dump(mode="json"), occurred_at,
                                     p.timezone)
    facts = MemberFacts(
        tier=tier, birthday=row["birthday"] if row else None, first_purchase=row["first_purchase"] if row else True,
        earned_today=row["earned_today"] if row else 0, earned_this_month=row["earned_this_month"] if row else 0,
        rule_counts=_rule_counts(rules, counts),
    )
    award = evaluate(rules, _rules_purchase(data, occurred_at), facts, tz)
    return PurchaseQuote(member_id=data.member_id, points=award.points, award=award,
                         rule_version=version["version"] if version else 0)


async def get_purchase(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, order_id: str) -> Purchase:
    row = await conn.fetchrow(q.GET_PURCHASE, p.program_id, order_id)
    if row is None:
        raise DomainError("purchase_not_found")
    lot = None
    if row["lot_id"] is not None:
        lot = LotInfo(id=row["lot_id"], points=row["lot_points"], available_at=row["available_at"],
                      expires_at=row["expires_at"])
    if row["points"] == 0:
        status = "none"
    elif row["pending"] and row["available_at"] > datetime.now(UTC):
        status = "pending"
    else:
        status = "available"
    return Purchase(
        order_id=row["order_id"], member_id=row["member_id"], occurred_at=row["occurred_at"], points=row["points"],
        status=status, clawed_back_points=row["clawed_back_points"], rule_version=row["rule_version"],
        entry_id=row["entry_id"], lot=lot, award=row["award"], returns=[ReturnInfo(**r) for r in row["returns"]],
    )


# --- returns ---------------------------------------------------------------------------------------------


async def post_return(
    conn: asyncpg.Connection, p: Principal, order_id: str, data: ReturnCreate
) -> tuple[int, ReturnResult]:
    """Claw back the points attributable to what came back (see ``rules.clawback``)."""
    if (data.lines is None) == (data.amount is None):
        raise DomainError("validation_error", "Send either returned `lines` or an `amount`.")
    ctx = await conn.fetchrow(q.RETURN_CONTEXT, p.program_id, order_id, data.return_id)
    if ctx["status"] != "ok":
        raise DomainError(ctx["status"])
    request = ReturnRequest(lines=data.lines, amount=data.amount)
    digest = content_hash(data)
    earlier = ctx["earlier_results"]
    if ctx["existing_return_id"] is not None:
        if ctx["existing_hash"] != digest:
            raise DomainError("return_already_posted", f"Return {data.return_id!r} was posted with other content.")
        stored = next(r for r in await conn.fetch(
            "SELECT points, shortfall, result, occurred_at FROM purchase_returns WHERE id = $1",
            ctx["existing_return_id"]))
        return 200, ReturnResult(order_id=order_id, return_id=data.return_id, occurred_at=stored["occurred_at"],
                                 points=stored["points"], shortfall=stored["shortfall"], clawback=stored["result"],
                                 balance=await get_balance(conn, p.program_id, ctx["member_ref"]), replayed=True)
    if data.amount is not None and not fits_currency(data.amount, p.currency):
        raise DomainError("validation_error", f"amount has more decimals than {p.currency} allows.")
    award = Award.model_validate(ctx["award"])
    stored = ctx["purchase"]
    purchase = RulesPurchase.model_validate({k: v for k, v in stored.items() if k in RulesPurchase.model_fields})
    returned_at = _return_occurred_at(data.occurred_at, purchase.occurred_at)  # issue-12: back-dated returns
    previous = [ReturnRequest.model_validate(e["request"]) for e in earlier]
    result = clawback(award, purchase, request, previous)
    row = await conn.fetchrow(
        q.CLAWBACK, p.program_id, ctx["purchase_id"], data.return_id, digest,
        request.model_dump(mode="json", exclude_none=True), result.model_dump(mode="json"), result.points,
        p.settings.negative_balance_on_return, sum(line.points for line in result.lines), returned_at,
    )
    if result.released_rule_ids:  # issue-12: rules taken back entirely count no more toward their limits
        await conn.execute(q.RELEASE_RULE_AWARDS, ctx["purchase_id"], result.released_rule_ids)
    return 201, ReturnResult(order_id=order_id, return_id=data.return_id, points=row["clawed"],
                             occurred_at=row["occurred_at"],
                             shortfall=row["shortfall"], clawback=result,
                             balance=await get_balance(conn, p.program_id, ctx["member_ref"]))


def _return_occurred_at(value: datetime | None, purchased_at: datetime) -> datetime | None:
    """issue-12: a return's ``occurred_at`` (None: now, the transaction's time): not in the future, not before
    its purchase."""
    if value is None:
        return None
    checked = _occurred_at(value)
    if checked < purchased_at:
        raise DomainError("validation_error", "occurred_at is before the purchase.", errors=[
            {"loc": ["body", "occurred_at"], "msg": "must not be before the purchase's occurred_at",
             "type": "before_purchase"}])
    return checked


# --- events ----------------------------------------------------------------------------------------------


async def post_event(conn: asyncpg.Connection, p: Principal, data: EventCreate) -> tuple[int, EventResult]:
    occurred_at = _occurred_at(data.occurred_at)
    ctx = await conn.fetchrow(q.EVENT_CONTEXT, p.program_id, data.member_id, p.settings.enrol_on_purchase,
                              data.event_id, data.name, occurred_at, p.timezone)
    if ctx["status"] != "ok":
        raise _context_refusal(ctx["status"])
    rules = _rules(ctx["rule_version_id"], ctx["rules"])
    if ctx["existing_event_id"] is not None:
        row = await conn.fetchrow(q.GET_EVENT, p.program_id, data.event_id)
        if row["name"] != data.name or row["member_id"] != data.member_id:
            raise DomainError("external_ref_conflict", f"event_id {data.event_id!r} was posted with other content.")
        evaluation = EventAward(event_name=row["name"], points=row["points"], limited_by=None)
        return 200, EventResult(event_id=data.event_id, member_id=data.member_id, name=data.name,
                                points=row["points"], evaluation=evaluation, entry_id=row["entry_id"],
                                balance=await get_balance(conn, p.program_id, data.member_id), replayed=True)
    _check_backdate(p, occurred_at)  # issue-12 F2
    counts = {"day": ctx["count_today"], "month": ctx["count_this_month"], "ever": ctx["count_ever"]}
    evaluation = evaluate_event(rules, data.name, {k: counts[k] for k in event_periods_needed(rules, data.name)})
    expiry = expiry_for(policy_from_row(ctx["policy_version_id"], ctx["policy"]), occurred_at, "event",
                        ZoneInfo(p.timezone))
    try:
        row = await conn.fetchrow(q.EVENT, p.program_id, ctx["member_pk"], data.event_id, data.name, occurred_at,
                                  evaluation.points, expiry.expires_at, data.metadata, expiry.on_inactivity,
                                  expiry.activity_expires_at)
    except asyncpg.UniqueViolationError:
        # issue-12 F4: the same event_id posted concurrently for another member (each request holds only its
        # own member's lock, so neither saw the other's row): the loser is the documented 409, like a purchase's
        # order_id; the same member's duplicates serialise on its lock and replay instead.
        raise DomainError("external_ref_conflict",
                          f"event_id {data.event_id!r} was posted with other content.") from None
    return 201, EventResult(event_id=data.event_id, member_id=data.member_id, name=data.name,
                            points=evaluation.points, evaluation=evaluation, entry_id=row["entry_id"],
                            balance=await get_balance(conn, p.program_id, data.member_id))


# --- pending points --------------------------------------------------------------------------------------


async def activate_due_pending(pool: asyncpg.Pool, batch: int = 500) -> int:
    """Move every pending lot past its return window to available: one short transaction per member.
    Idempotent: an activated lot is no longer pending, so a rerun (or a concurrent run) finds nothing."""
    activated = 0
    for _ in range(10_000):
        members = await pool.fetch(q.DUE_PENDING_MEMBERS, batch)
        if not members:
            break
        for m in members:
            async with pool.acquire() as conn, conn.transaction():
                activated += await conn.fetchval(q.ACTIVATE, m["member_id"]) or 0
        if len(members) < batch:
            break
    return activated
