"""The balance read is written for speed (each lot subquery an index range); it must answer exactly what
the plain definition of a balance answers, whatever mix of lots a member has."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from app.ledger.queries import BALANCE

# The definition, as first written: every open lot of the member filtered and grouped. Correct, but its
# cost grows with the member's open lots.
DEFINITION = """
SELECT m.external_id AS member_id,
       b.available + x.lapsed + y.due - z.expired AS available, b.pending - y.due AS pending,
       b.held - x.lapsed AS held, b.lifetime_earned, b.lifetime_redeemed,
       nx.at AS next_expiry_at, coalesce(nx.points, 0) AS next_expiry_points, mt.tier
FROM members m
JOIN member_balances b ON b.member_id = m.id
LEFT JOIN member_tiers mt ON mt.member_id = m.id
CROSS JOIN LATERAL (
    SELECT coalesce(sum(h.points), 0)::bigint AS lapsed FROM holds h
    WHERE h.member_id = m.id AND h.status = 'open' AND h.expires_at <= now()
) x
CROSS JOIN LATERAL (
    SELECT coalesce(sum(l.remaining), 0)::bigint AS due FROM lots l
    WHERE l.member_id = m.id AND l.pending AND l.available_at <= now()
) y
CROSS JOIN LATERAL (
    SELECT coalesce(sum(l.remaining), 0)::bigint AS expired FROM lots l
    WHERE l.member_id = m.id AND l.remaining > 0 AND NOT l.pending
      AND ((NOT l.expires_on_inactivity AND l.expires_at <= now())
           OR (l.expires_on_inactivity AND b.activity_expires_at <= now()))
) z
LEFT JOIN LATERAL (
    SELECT e.at, sum(e.remaining)::bigint AS points FROM (
        SELECT CASE WHEN l.expires_on_inactivity THEN b.activity_expires_at ELSE l.expires_at END AS at,
               l.remaining
        FROM lots l WHERE l.member_id = m.id AND l.remaining > 0
    ) e
    WHERE e.at > now() GROUP BY e.at ORDER BY e.at LIMIT 1
) nx ON true
WHERE m.program_id = $1 AND m.external_id = $2
"""

NOW = datetime.now(UTC).replace(microsecond=0)
D = timedelta(days=1)
TIE = NOW + 30 * D

# Per member: credits (points, expires_at, on_inactivity), pending credits (points, available_at, expires_at),
# the member's activity date, and a debit.
SCENARIOS: list[dict[str, Any]] = [
    {},
    {"lots": [(10, NOW - 5 * D, False), (5, NOW + 10 * D, False), (7, NOW + 10 * D, False),
              (3, NOW + 20 * D, False), (4, None, False)]},
    {"lots": [(6, None, True), (8, None, True), (2, NOW + 40 * D, False)], "activity": NOW + 30 * D},
    {"lots": [(6, None, True), (9, NOW + 5 * D, False), (1, NOW - D, False)], "activity": NOW - D},
    {"lots": [(6, None, True), (4, TIE, False), (5, TIE, False)], "activity": TIE},
    {"lots": [(3, NOW + 20 * D, False)], "pending": [(9, 1, NOW + 15 * D), (11, 10 * 86400, NOW + 25 * D)]},
    {"lots": [(3, NOW + 3 * D, False)], "activity": NOW + D},
    {"lots": [(6, None, True), (2, NOW + 2 * D, False)]},
    {"lots": [(10, NOW + 2 * D, False), (10, NOW + 3 * D, False), (10, None, True)], "activity": NOW + 9 * D,
     "debit": 15},
]


async def _credit(conn: Any, program: Any, member: str, points: int, expires_at: Any, inactivity: bool) -> None:
    status = await conn.fetchval(
        "SELECT status FROM ledger.adjust(p_program => $1, p_key => NULL, p_fingerprint => NULL, p_member_ref => $2,"
        " p_points => $3, p_occurred_at => NULL, p_external_ref => NULL, p_reason => 'test', p_metadata => '{}',"
        " p_expires_at => $4, p_expires_on_inactivity => $5)",
        program, member, points, expires_at, inactivity)
    assert status == "ok"


async def _pending(conn: Any, program: Any, member: str, member_pk: int, order: str, points: int, in_seconds: int,
                   expires_at: Any) -> None:
    """A purchase's credit, pending for ``in_seconds`` (its return window), through the purchase function."""
    status = await conn.fetchval(
        "SELECT status FROM ledger.purchase(p_program => $1, p_key => NULL, p_fingerprint => NULL, p_member_ref => $2,"
        " p_member_pk => $3, p_facts_version => (SELECT facts_version FROM member_balances WHERE member_id = $3),"
        " p_enrol => false, p_order_id => $4, p_occurred_at => now(), p_content_hash => $5, p_purchase => '{}',"
        " p_rule_version_id => NULL, p_award => '{}', p_points => $6, p_qualifying_points => $6,"
        " p_eligible_amount => 0, p_available_at => now() + make_interval(secs => $7), p_expires_at => $8,"
        " p_expires_on_inactivity => false, p_activity_expires_at => NULL, p_tier => NULL, p_tier_valid_until => NULL,"
        " p_tier_reason => NULL, p_tier_from => NULL, p_manual_tier => NULL, p_manual_until => NULL,"
        " p_tier_config_version => NULL)",
        program, member, member_pk, order, hashlib.sha256(order.encode()).digest(), points, in_seconds, expires_at)
    assert status == "ok"


async def test_bounded_balance_query_equals_the_definition(tenant, db):
    program = tenant.program_id
    for i, spec in enumerate(SCENARIOS):
        member = f"bq-{i}"
        await tenant.member(member)
        async with db.acquire() as conn, conn.transaction():
            member_pk = await conn.fetchval("SELECT id FROM members WHERE program_id = $1 AND external_id = $2",
                                            program, member)
            for points, expires_at, inactivity in spec.get("lots", []):
                await _credit(conn, program, member, points, expires_at, inactivity)
            for n, (points, in_seconds, expires_at) in enumerate(spec.get("pending", [])):
                await _pending(conn, program, member, member_pk, f"{member}-o{n}", points, in_seconds, expires_at)
            if "activity" in spec:
                await conn.execute("UPDATE member_balances SET activity_expires_at = $2 WHERE member_id = $1",
                                   member_pk, spec["activity"])
        if "debit" in spec:
            r = await tenant.adjust(member, -spec["debit"])
            assert r.status_code == 201, r.text
    await asyncio.sleep(1.5)  # the pending credits due in 1 s are now due, the others are not

    for i in range(len(SCENARIOS)):
        member = f"bq-{i}"
        fast = dict(await db.fetchrow(BALANCE, program, member))
        plain = dict(await db.fetchrow(DEFINITION, program, member))
        assert fast == plain, (i, json.dumps(SCENARIOS[i], default=str))
    # The scenarios reach every branch: a due pending credit, a tie of a dated lot with the activity date.
    assert (await tenant.balance("bq-5"))["available"] == 3 + 9
    tie = await tenant.balance("bq-4")
    assert tie["next_expiry_points"] == 6 + 4 + 5
    assert datetime.fromisoformat(tie["next_expiry_at"]) == TIE


# The plain definition of a due lot, through the one rule (ledger.lot_expires_at); ledger.due_lots is its index-range
# form.
DUE_DEFINITION = """
SELECT l.id FROM lots l JOIN member_balances b ON b.member_id = l.member_id
WHERE l.member_id = ANY($1) AND l.remaining > 0 AND NOT l.pending
  AND ledger.lot_expires_at(l.expires_at, l.expires_on_inactivity, b.activity_expires_at) <= $2
ORDER BY l.id
"""


async def test_due_lots_equals_the_one_rule(tenant, db):
    program = tenant.program_id
    members = []
    for i, spec in enumerate(SCENARIOS):
        member = f"due-{i}"
        await tenant.member(member)
        member_pk = await db.fetchval("SELECT id FROM members WHERE program_id = $1 AND external_id = $2",
                                      program, member)
        members.append(member_pk)
        async with db.acquire() as conn, conn.transaction():
            for points, expires_at, inactivity in spec.get("lots", []):
                await _credit(conn, program, member, points, expires_at, inactivity)
            if "activity" in spec:
                await conn.execute("UPDATE member_balances SET activity_expires_at = $2 WHERE member_id = $1",
                                   member_pk, spec["activity"])
    for at in (NOW - 2 * D, NOW, NOW + 4 * D, TIE, NOW + 30 * D + timedelta(seconds=1), NOW + 400 * D):
        fast = [r[0] for r in await db.fetch("SELECT lot_pk FROM ledger.due_lots($1, $2) ORDER BY 1", members, at)]
        plain = [r[0] for r in await db.fetch(DUE_DEFINITION, members, at)]
        assert fast == plain, at
