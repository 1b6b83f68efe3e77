"""Erasure, the earning side (issue 12 F8): after a member's personal data is erased, nothing stored about
their purchases reveals the birthday.

A purchase earned on the member's birthday carries that in its award: a ``birthday_bonus``, or any rule with a
``birthday`` condition, names the day. On erasure, every stored explanation of the member's purchases loses
those names (``app.earning.rules.redact_award``): the purchase's award, each return's clawback, the answers
kept under an Idempotency-Key (until they are purged), and the events that announced them (``changes``). Every
number stays, so the breakdowns still add up, the ledger (which never held the birthday) is untouched,
``verify`` still proves it, and later returns claw back exactly what they would have. The member's counts of
birthday rules (``member_rule_awards`` rows of personal rules, dated on the birthday) are deleted:
with the birthday gone, those rules can no longer apply to the member.

What cannot go: the points themselves. A purchase that earned 100 points more than its neighbours still earned
them; the breakdown only no longer says why.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg

from app.earning import queries as q
from app.earning.rules import Award, ClawbackResult, RuleSet, personal_rule_ids, redact_award, redact_clawback
from app.programs import versions


def _personal(version_id: int, raw: str) -> set[str]:
    return personal_rule_ids(versions.parse(RuleSet, version_id, raw))


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def erase_personal_rules(conn: asyncpg.Connection, program_id: UUID, member_pk: int, member_ref: str) -> int:
    """Redact the member's stored awards, clawbacks and stored answers, in the caller's transaction. Returns the
    number of rows rewritten."""
    rewritten = 0
    await conn.execute(q.ERASE_PERSONAL_RULE_AWARDS, member_pk)
    purchase_ids: list[int] = []
    personal_used: set[str] = set()  # the personal rules of the versions the member's purchases were awarded by
    for version in await conn.fetch(q.MEMBER_RULE_VERSIONS, member_pk):
        personal = _personal(version["id"], version["rules"])
        if not personal:
            continue
        personal_used |= personal
        for row in await conn.fetch(q.MEMBER_PURCHASES_OF_VERSION, member_pk, version["id"]):
            purchase_ids.append(row["id"])
            award = Award.model_validate(_decoded(row["award"]))
            redacted = redact_award(award, personal)
            if redacted != award:
                await conn.execute(q.REWRITE_AWARD, row["id"], redacted.model_dump_json())
                rewritten += 1
    returns = await conn.fetch(q.RETURNS_OF_PURCHASES, purchase_ids) if purchase_ids else []
    if returns:
        await conn.execute(q.ALLOW_RETURN_REDACTION)
        for row in returns:
            result = ClawbackResult.model_validate(_decoded(row["result"]))
            redacted_result = redact_clawback(result, personal_used)
            if redacted_result != result:
                await conn.execute(q.REWRITE_RETURN_RESULT, row["id"], redacted_result.model_dump_json())
                rewritten += 1
        await conn.execute(q.END_RETURN_REDACTION)
    # Stored answers: the names of every personal rule of the program's versions (an answer names its rule
    # version by number only; over-redacting a name in a stored copy costs nothing). Rewritten only where such a
    # name appears, so other stored answers keep their bytes.
    everywhere: set[str] = set()
    for version in await conn.fetch(q.PROGRAM_RULE_VERSIONS, program_id):
        everywhere |= _personal(version["id"], version["rules"])
    if everywhere:
        for row in await conn.fetch(q.MEMBER_STORED_ANSWERS, program_id, member_ref):
            body = _decoded(row["response_body"])
            changed = _redact_answer(body, everywhere)
            if changed is not None:
                await conn.execute(q.REWRITE_STORED_ANSWER, program_id, row["key"], json.dumps(changed))
                rewritten += 1
        # The events of the member's purchases and returns carry the same answers (the change feed, webhooks).
        for row in await conn.fetch(q.MEMBER_EARNING_CHANGES, member_pk):
            changed = _redact_answer(_decoded(row["data"]), everywhere)
            if changed is not None:
                await conn.execute(q.REWRITE_CHANGE, row["id"], json.dumps(changed))
                rewritten += 1
    return rewritten


def _names(value: Any) -> set[str]:
    """Every ``rule_id`` in a JSON value."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("rule_id"), str):
                found.add(item["rule_id"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _redact_answer(body: dict[str, Any], personal: set[str]) -> dict[str, Any] | None:
    """A stored purchase or return answer without the names of ``personal`` rules; None if it names none."""
    if not _names(body) & personal:
        return None
    out = dict(body)
    if isinstance(body.get("purchase"), dict) and "award" in body["purchase"]:
        award = Award.model_validate(body["purchase"]["award"])
        out["purchase"] = {**body["purchase"], "award": redact_award(award, personal).model_dump(mode="json")}
    if isinstance(body.get("clawback"), dict):
        result = ClawbackResult.model_validate(body["clawback"])
        out["clawback"] = redact_clawback(result, personal).model_dump(mode="json")
    return out
