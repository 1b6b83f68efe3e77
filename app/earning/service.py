"""Earning use cases: rule versions, purchases (and their dry-run quote), returns, custom events, and the
activation of pending points.

A purchase, a return and an event are evaluated here, in Python (app/earning/rules.py), from the facts their SQL
context reads without a lock (round trip 1); the post (round trip 2, one statement) checks under the member's lock
that those facts are unchanged (the member's facts version) and answers 'stale' otherwise: then this module reads
and evaluates again. The rules, policy and tiers in force come from the per-process version cache."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel

from app.db.access import Db
from app.earning import queries as q
from app.earning.context import EventContext, PurchaseContext, ReturnContext
from app.earning.rules import (
    Award,
    BaseRate,
    Conditions,
    EarnRule,
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
    PurchaseCreate,
    PurchaseQuote,
    ReturnCreate,
)
from app.errors import DomainError
from app.expiry.service import current_policy, expiry_for
from app.ledger.writes import Answer, RawJSON, Write, execute_in
from app.money import fits_currency
from app.programs import versions
from app.programs.context import Principal
from app.tiers.policy import TierConfig, TierState, on_activity, tier_multiplier, window_bounds
from app.tiers.service import config_from_row

DEFAULT_RULES = RuleSet(base=BaseRate(points_per_unit=Decimal(1)))
LOCK_MEMBER = "SELECT 1 FROM ledger.lock_member($1)"

# A post answers 'stale' when another write of the member changed the facts its evaluation read. Then the facts
# are read again under the member's lock (which the post then finds unchanged); only a member enrolled by a
# concurrent request in between can make that stale again.
MAX_EVALUATIONS = 4

Ctx = TypeVar("Ctx", PurchaseContext, ReturnContext, EventContext)


async def evaluate_and_post(db: Db, read: Callable[[asyncpg.Pool | asyncpg.Connection], Awaitable[Ctx]],
                            post: Callable[[Ctx], Write]) -> Answer:
    """Optimistic first: read the facts without a lock, evaluate, post (one statement, which checks the facts
    version). Stale (another write of the member won the race): read, evaluate and post again inside one
    transaction that holds the member's lock from before the read, so the facts cannot change again."""
    ctx = await read(db.pool)
    answer = await db.writer.execute(post(ctx))
    for _ in range(MAX_EVALUATIONS):
        if answer.status != "stale":
            return answer
        try:
            async with db.pool.acquire() as conn, conn.transaction():
                if ctx.member_pk is not None:
                    await conn.execute(LOCK_MEMBER, ctx.member_pk)
                ctx = await read(conn)
                answer = await execute_in(conn, post(ctx))
        except (asyncpg.UniqueViolationError, asyncpg.SerializationError):
            answer = Answer("stale")  # a concurrent request committed the same key or natural key (or merged the
            # member into another, issue 15): run again
    if answer.status == "stale":
        raise DomainError("member_busy")
    return answer


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
    # on the base points only, if the rule set says so (tier_multiplier_applies_to)
    applies_to = "base" if rules.tier_multiplier_applies_to == "base" else None
    rule = EarnRule(id=rule_id, kind="multiplier", factor=factor, priority=1_000_000, applies_to=applies_to,
                    description=f"{tier} tier multiplier", conditions=Conditions(tiers=[tier]))
    return rules.model_copy(update={"rules": [*rules.rules, rule]})


def content_hash(model: BaseModel) -> bytes:
    canonical = json.dumps(model.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def local_bounds(at: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Start of ``at``'s local day and month in ``tz`` (the caps and event limits count in them)."""
    local = at.astimezone(tz)
    day = datetime(local.year, local.month, local.day, tzinfo=tz)
    return day, datetime(local.year, local.month, 1, tzinfo=tz)


async def rules_at(db: Db, p: Principal, at: datetime) -> tuple[int | None, int, RuleSet]:
    """The rule version in force at ``at``: its row id (None: the default, version 0), its number, the rules."""
    row = await versions.in_force(db.pool, versions.EARN_RULES, p.program_id, at, db.versions)
    if row is None:
        return None, 0, DEFAULT_RULES
    return row["id"], row["version"], _rules(row["id"], row["document"])


async def has_rules(db: Db, p: Principal) -> bool:
    """Whether the program has any earn rule version (then version 0 never applies: see ``check_occurred_at``)."""
    return bool(await versions.all_versions(db.pool, versions.EARN_RULES, p.program_id, db.versions))


async def check_occurred_at(db: Db, p: Principal, occurred_at: datetime, rule_version_id: int | None) -> None:
    """How far back a purchase or an event may be dated (issue 12 F2): never before the program's first earn rules
    (the built-in default rules, version 0, never apply to a program that has rules), and, with the program
    setting ``max_backdate_days``, not more than that many days ago. Not checked for a replay: an order posted in
    time always replays, however old it has become."""
    if rule_version_id is None and await has_rules(db, p):
        raise DomainError("occurred_at_too_old", "occurred_at is before the program's first earn rules; the "
                          "built-in default rules never apply to a program that has rules.",
                          reason="before_program_start")
    days = p.settings.max_backdate_days
    if days is not None and occurred_at < datetime.now(UTC) - timedelta(days=days):
        raise DomainError("occurred_at_too_old", f"occurred_at is more than {days} days ago (program setting "
                          "max_backdate_days).", reason="max_backdate_days", max_backdate_days=days)


def rule_counts(rules: RuleSet, counts: Any) -> dict[str, dict[str, int]]:
    """The counts the evaluator needs for the limited rules of ``rules`` (from ``ledger.rule_counts``; a rule or
    period it does not name has none yet)."""
    known = counts or {}
    return {rule_id: {per: int(known.get(rule_id, {}).get(per, 0)) for per in periods}
            for rule_id, periods in rule_periods_needed(rules).items()}


async def tiers_at(db: Db, p: Principal, at: datetime) -> tuple[int | None, TierConfig | None]:
    row = await versions.in_force(db.pool, versions.TIERS, p.program_id, at, db.versions)
    if row is None:
        return None, None
    return row["version"], config_from_row(row["id"], row["document"])


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


# The earliest occurred_at taken at all: calendar arithmetic around older dates (a window of months before it, a local
# day that began in the year 0) is out of range, and no programme has data that old.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def _occurred_at(value: datetime | None) -> datetime:
    now = datetime.now(UTC)
    if value is None:
        return now
    if value < EARLIEST:
        raise DomainError("occurred_at_too_old", "occurred_at is before 1970.", reason="out_of_range")
    if value > now + CLOCK_SKEW:
        raise DomainError("validation_error", "occurred_at is in the future.", errors=[
            {"loc": ["body", "occurred_at"], "msg": "must not be in the future", "type": "future"}])
    return value


def _rules_purchase(data: PurchaseCreate, occurred_at: datetime) -> RulesPurchase:
    return RulesPurchase(occurred_at=occurred_at, channel=data.channel, store_id=data.store_id, total=data.total,
                         paid_with_points=data.paid_with_points, lines=data.lines)


class _Evaluation:
    """A purchase evaluated against one reading of its context."""

    def __init__(self, db: Db, p: Principal, data: PurchaseCreate, occurred_at: datetime) -> None:
        self.db, self.p, self.data, self.occurred_at = db, p, data, occurred_at
        self.tz = ZoneInfo(p.timezone)

    async def load(self) -> None:
        """What does not depend on the member: the versions in force at occurred_at (cached per process)."""
        self.rule_version_id, self.rule_version, self.rules = await rules_at(self.db, self.p, self.occurred_at)
        self.tier_config_version, self.tier_config = await tiers_at(self.db, self.p, self.occurred_at)
        _, policy = await current_policy(self.db.pool, self.p.program_id, self.occurred_at, self.db.versions)
        self.expiry = expiry_for(policy.policy, self.occurred_at, "purchase", self.tz)
        # the rule set goes to the context only when some rule has limits (the member's counts of them)
        self.limited = {rule.id: rule for rule in self.rules.rules if rule.limits}
        self.rules_json = RawJSON(self.rules.model_dump_json()) if self.limited else None

    def context_args(self) -> list[Any]:
        """The arguments of ``q.PURCHASE_CONTEXT`` for this purchase."""
        caps = self.rules.caps
        day, month = local_bounds(self.occurred_at, self.tz)
        window = window_bounds(self.tier_config, self.occurred_at, self.tz)[0] if self.tier_config else None
        return [self.p.program_id, self.data.member_id, self.data.order_id, self.occurred_at,
                day if caps and caps.per_member_per_day is not None else None,
                month if caps and caps.per_member_per_month is not None else None,
                window, self.tier_config.include_bonuses if self.tier_config else False, self.rules_json,
                self.p.timezone]

    async def read(self, conn: asyncpg.Pool | asyncpg.Connection) -> PurchaseContext:
        return PurchaseContext.of(await conn.fetchrow(q.PURCHASE_CONTEXT, *self.context_args()))

    def limited_rules(self, award: Award) -> dict[str, Any]:
        """The limited rules the award applied: recorded with the purchase, so later purchases count them."""
        applied = [self.limited[r] for r in sorted(applied_rule_ids(award)) if r in self.limited]
        return {"p_rule_ids": [r.id for r in applied], "p_rule_personal": [r.personal for r in applied]}

    def award(self, ctx: PurchaseContext) -> Award:
        config = self.tier_config
        tier = ctx.tier_then or (config.tiers[0].name if config else None)
        rules = with_tier_multiplier(self.rules, config, tier)
        facts = MemberFacts(tier=tier, birthday=ctx.birthday, first_purchase=ctx.first_purchase,
                            earned_today=ctx.earned_today, earned_this_month=ctx.earned_this_month,
                            rule_counts=rule_counts(rules, ctx.rule_counts), segment=ctx.segment, stage=ctx.stage)
        return evaluate(rules, _rules_purchase(self.data, self.occurred_at), facts, self.tz)

    def tier_change(self, ctx: PurchaseContext, award: Award, qualifying: int) -> dict[str, Any]:
        """Upgrade (or requalify) at once on the crossing purchase: the metric over the window ending at
        occurred_at, this purchase included, decides (app/tiers/policy.py on_activity)."""
        none: dict[str, Any] = {"p_tier": None, "p_tier_valid_until": None, "p_tier_reason": None, "p_tier_from": None,
                                "p_manual_tier": None, "p_manual_until": None, "p_tier_config_version": None}
        config = self.tier_config
        if config is None:
            return none
        before, this = {
            "points": (Decimal(ctx.metric_points), Decimal(award.points if config.include_bonuses else qualifying)),
            "spend": (Decimal(ctx.metric_spend), Decimal(award.eligible_amount)),
            "purchases": (Decimal(ctx.metric_purchases), Decimal(1)),
        }[config.metric]
        state = None
        if ctx.tier is not None:
            state = TierState(tier=ctx.tier, valid_until=ctx.tier_valid_until, manual_until=ctx.manual_until,
                              manual_tier=ctx.manual_tier)
        decision = on_activity(config, state, before + this, self.occurred_at, self.tz)
        if not decision.changed:
            return none
        return {"p_tier": decision.tier, "p_tier_valid_until": decision.valid_until, "p_tier_reason": decision.reason,
                "p_tier_from": ctx.tier, "p_manual_tier": ctx.manual_tier, "p_manual_until": ctx.manual_until,
                "p_tier_config_version": self.tier_config_version}


class PurchasePost:
    """A purchase ready to post: checked, its versions loaded; ``read`` its context (or ``accept`` a context row read
    with ``context_args``, as the batch does for many at once) and ``post`` the Write evaluated against it. The single
    purchase (``post_purchase``) and the offline batch (app/earning/batch.py) both post through this."""

    def __init__(self, db: Db, p: Principal, data: PurchaseCreate, key: str | None, fingerprint: bytes) -> None:
        _check_money(p, data)
        self.db, self.p, self.data, self.key, self.fingerprint = db, p, data, key, fingerprint
        self.occurred_at = _occurred_at(data.occurred_at)
        self.digest = content_hash(data)
        self.evaluation = _Evaluation(db, p, data, self.occurred_at)
        self.posted = RawJSON(data.model_copy(update={"occurred_at": self.occurred_at}).model_dump_json())
        self.available_at = self.occurred_at + timedelta(days=p.settings.pending_days)
        self.checked = False

    async def load(self) -> PurchasePost:
        await self.evaluation.load()
        return self

    def context_args(self) -> list[Any]:
        return self.evaluation.context_args()

    async def accept(self, row: Any) -> PurchaseContext:
        ctx = PurchaseContext.of(row)
        if ctx.existing_hash is None and not self.checked:  # (a replay is never refused for its age)
            await check_occurred_at(self.db, self.p, self.occurred_at, self.evaluation.rule_version_id)
            self.checked = True
        return ctx

    async def read(self, conn: asyncpg.Pool | asyncpg.Connection) -> PurchaseContext:
        return await self.accept(await conn.fetchrow(q.PURCHASE_CONTEXT, *self.context_args()))

    def post(self, ctx: PurchaseContext) -> Write:
        p, data, evaluation = self.p, self.data, self.evaluation
        if ctx.member_pk is None and ctx.existing_hash is None and not p.settings.enrol_on_purchase:
            raise DomainError("member_not_found")
        award = evaluation.award(ctx)
        qualifying = award.points - sum(b.points for b in award.order_bonuses)
        expiry = evaluation.expiry
        return Write("purchase", {
            "p_program": p.program_id, "p_key": self.key, "p_fingerprint": self.fingerprint,
            "p_member_ref": data.member_id, "p_member_pk": ctx.member_pk, "p_facts_version": ctx.facts_version,
            "p_enrol": p.settings.enrol_on_purchase, "p_order_id": data.order_id, "p_occurred_at": self.occurred_at,
            "p_content_hash": self.digest, "p_purchase": self.posted, "p_rule_version_id": evaluation.rule_version_id,
            "p_award": RawJSON(award.model_dump_json()), "p_points": award.points, "p_qualifying_points": qualifying,
            "p_eligible_amount": award.eligible_amount, "p_available_at": self.available_at,
            "p_expires_at": expiry.expires_at, "p_expires_on_inactivity": expiry.on_inactivity,
            "p_activity_expires_at": expiry.activity_expires_at, **evaluation.tier_change(ctx, award, qualifying),
            **evaluation.limited_rules(award),
            "p_voucher_codes": data.voucher_codes or None,  # issue-14: redeemed with the purchase (95_rewards.sql)
        })


async def post_purchase(db: Db, p: Principal, data: PurchaseCreate, key: str | None, fingerprint: bytes) -> Answer:
    """Evaluate and post a purchase. The order id is a natural key: the same order with the same content
    answers the original (200, ``replayed``); with other content 409 ``order_already_posted``."""
    prepared = await PurchasePost(db, p, data, key, fingerprint).load()
    return await evaluate_and_post(db, prepared.read, prepared.post)


async def quote_purchase(db: Db, p: Principal, data: PurchaseCreate) -> PurchaseQuote:
    """The same evaluation as posting, from the same context, as a dry run: nothing is written and no key is
    needed."""
    _check_money(p, data)
    evaluation = _Evaluation(db, p, data, _occurred_at(data.occurred_at))
    await evaluation.load()
    await check_occurred_at(db, p, evaluation.occurred_at, evaluation.rule_version_id)
    award = evaluation.award(await evaluation.read(db.pool))
    return PurchaseQuote(member_id=data.member_id, points=award.points, award=award,
                         rule_version=evaluation.rule_version)


async def purchase_json(pool: asyncpg.Pool, p: Principal, order_id: str) -> str:
    body: str | None = await pool.fetchval(q.PURCHASE_JSON, p.program_id, order_id)
    if body is None:
        raise DomainError("purchase_not_found")
    return body


# --- returns ---------------------------------------------------------------------------------------------


class ReturnPost:
    """A return ready to post: ``read`` its context (or ``accept`` a row read with ``context_args``) and ``post`` the
    Write of its clawback. The single return and the offline batch (app/earning/batch.py) both post through this."""

    def __init__(self, p: Principal, order_id: str, data: ReturnCreate, key: str | None, fingerprint: bytes) -> None:
        if (data.lines is None) == (data.amount is None):
            raise DomainError("validation_error", "Send either returned `lines` or an `amount`.")
        self.p, self.order_id, self.data, self.key, self.fingerprint = p, order_id, data, key, fingerprint
        self.digest = content_hash(data)
        self.request = ReturnRequest(lines=data.lines, amount=data.amount)
        self.returned_at = _occurred_at(data.occurred_at) if data.occurred_at is not None else None

    def context_args(self) -> list[Any]:
        return [self.p.program_id, self.order_id, self.data.return_id]

    def accept(self, row: Any) -> ReturnContext:
        if row is None or row["purchase_pk"] is None:
            raise DomainError("purchase_not_found")
        return ReturnContext.of(row)

    async def read(self, conn: asyncpg.Pool | asyncpg.Connection) -> ReturnContext:
        return self.accept(await conn.fetchrow(q.RETURN_CONTEXT, *self.context_args()))

    def post(self, ctx: ReturnContext) -> Write:
        p, data, returned_at = self.p, self.data, self.returned_at
        points, line_points, result, released = 0, 0, RawJSON("{}"), []
        if ctx.existing_hash is None:  # (posted before: the post replays it, or refuses other content)
            if data.amount is not None and not fits_currency(data.amount, p.currency):
                raise DomainError("validation_error", f"amount has more decimals than {p.currency} allows.")
            award = Award.model_validate(ctx.award)
            fields = RulesPurchase.model_fields
            purchase = RulesPurchase.model_validate({k: v for k, v in ctx.purchase.items() if k in fields})
            if returned_at is not None and returned_at < purchase.occurred_at:
                raise DomainError("validation_error", "occurred_at is before the purchase.", errors=[
                    {"loc": ["body", "occurred_at"], "msg": "must not be before the purchase's occurred_at",
                     "type": "before_purchase"}])
            previous = [ReturnRequest.model_validate(r) for r in ctx.earlier_requests]
            computed = clawback(award, purchase, self.request, previous)
            points, line_points = computed.points, sum(line.points for line in computed.lines)
            result, released = RawJSON(computed.model_dump_json()), computed.released_rule_ids
        return Write("purchase_return", {
            "p_program": p.program_id, "p_key": self.key, "p_fingerprint": self.fingerprint,
            "p_order_id": self.order_id, "p_return_id": data.return_id, "p_facts_version": ctx.facts_version,
            "p_content_hash": self.digest, "p_request": RawJSON(self.request.model_dump_json(exclude_none=True)),
            "p_result": result, "p_points": points, "p_policy": p.settings.negative_balance_on_return,
            "p_line_points": line_points, "p_occurred_at": returned_at, "p_released_rule_ids": released,
        })


async def post_return(db: Db, p: Principal, order_id: str, data: ReturnCreate, key: str | None,
                      fingerprint: bytes) -> Answer:
    """Claw back the points attributable to what came back (see ``rules.clawback``)."""
    prepared = ReturnPost(p, order_id, data, key, fingerprint)
    return await evaluate_and_post(db, prepared.read, prepared.post)


# --- events ----------------------------------------------------------------------------------------------


async def post_event(db: Db, p: Principal, data: EventCreate, key: str | None, fingerprint: bytes) -> Answer:
    occurred_at = _occurred_at(data.occurred_at)
    tz = ZoneInfo(p.timezone)
    rule_version_id, _, rules = await rules_at(db, p, occurred_at)
    _, policy = await current_policy(db.pool, p.program_id, occurred_at, db.versions)
    expiry = expiry_for(policy.policy, occurred_at, "event", tz)
    day, month = local_bounds(occurred_at, tz)

    checked = False

    async def read(conn: asyncpg.Pool | asyncpg.Connection) -> EventContext:
        nonlocal checked
        ctx = EventContext.of(await conn.fetchrow(q.EVENT_CONTEXT, p.program_id, data.member_id, data.event_id,
                                                  data.name, day, month))
        if ctx.existing_name is None and not checked:  # (a replay is never refused for its age)
            await check_occurred_at(db, p, occurred_at, rule_version_id)
            checked = True
        return ctx

    def post(ctx: EventContext) -> Write:
        if ctx.member_pk is None and ctx.existing_name is None and not p.settings.enrol_on_purchase:
            raise DomainError("member_not_found")
        needed = event_periods_needed(rules, data.name)  # an unknown event name: 422
        counts = {"day": ctx.count_today, "month": ctx.count_this_month, "ever": ctx.count_ever}
        evaluation = evaluate_event(rules, data.name, {k: counts[k] for k in needed})
        return Write("event", {
            "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_member_ref": data.member_id,
            "p_member_pk": ctx.member_pk, "p_facts_version": ctx.facts_version,
            "p_enrol": p.settings.enrol_on_purchase, "p_event_id": data.event_id, "p_name": data.name,
            "p_occurred_at": occurred_at, "p_points": evaluation.points,
            "p_evaluation": RawJSON(evaluation.model_dump_json()), "p_metadata": data.metadata,
            "p_expires_at": expiry.expires_at, "p_expires_on_inactivity": expiry.on_inactivity,
            "p_activity_expires_at": expiry.activity_expires_at,
        })

    return await evaluate_and_post(db, read, post)


# --- pending points --------------------------------------------------------------------------------------


async def activate_due_pending(pool: asyncpg.Pool, batch: int = 500, program_id: Any = None,
                               dry_run: bool = False, progress: Callable[[int], None] | None = None) -> int:
    """Move every pending lot past its return window to available: one short transaction per member.
    Idempotent: an activated lot is no longer pending, so a rerun (or a concurrent run) finds nothing.
    ``program_id``: that program's members only; ``dry_run``: the points that would be activated, nothing
    written; ``progress``: called with the points activated so far after each member."""
    if dry_run:
        return int(await pool.fetchval(q.COUNT_DUE_PENDING, program_id))
    activated = 0
    for _ in range(10_000):
        members = await pool.fetch(q.DUE_PENDING_MEMBERS, batch, program_id)
        if not members:
            break
        for m in members:
            activated += await pool.fetchval(q.ACTIVATE, m["member_id"]) or 0
            if progress:
                progress(activated)
        if len(members) < batch:
            break
    return activated
