"""``verify``: recompute every materialised figure from the append-only facts and compare.

Checks (each set-based, one statement):
* every entry has at least two postings summing to zero, and postings belong to their entry's program;
* every program's postings sum to zero;
* every member balance row equals the sums of the member's postings by account;
* every lot's ``remaining`` equals its points minus its allocations;
* every member's spendable lots cover exactly max(available, 0) and its pending lots exactly its pending
  points (held points are reserved out of their lots by the hold's allocations);
* every member's held balance equals its open holds, and each hold's net lot allocations match its state
  (open: all its points; captured: the captured points; voided/expired: none);
* every redemption's refunded points equal the sum of its refunds and never exceed it;
* every member's daily purchase totals (the tier metric's source) equal the sums of its purchases;
* every entry, lot, hold, redemption, purchase, member event and balance row belongs to its member's program, and
  every posting and lot allocation to an entry (and a lot) of its program and member: these rows have no foreign
  keys (migrations 0009 and 0011), so these checks prove the references instead;
* rewards (issue 14): every voucher belongs to a member and a reward of its program; its exchange entry moved exactly
  its points from available to redeemed and consumed lots for all of them; a cancelled voucher (or an expired one its
  reward refunds) has the refund entry that gave them back (to available as restored into lots, to expired) and no
  other voucher has one; every exchange and exchange refund entry is some voucher's; a partner-code reward's stock
  is its unused codes, and each of its vouchers holds exactly one code of that reward;
* the liability (issue 17): each program's points owed, -(postings to issued, adjustments, redeemed and expired),
  equal the sum of its members' available, pending and held balances.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from app.ledger.schemas import Discrepancy, VerifyReport

MAX_REPORTED = 100

# $1: program id or NULL for all programs.
CHECKS: dict[str, str] = {
    "entry_unbalanced": """
        SELECT e.id AS entry_id, count(p.id) AS postings, coalesce(sum(p.points), 0) AS sum
        FROM entries e LEFT JOIN postings p ON p.entry_id = e.id
        WHERE ($1::uuid IS NULL OR e.program_id = $1)
        GROUP BY e.id HAVING count(p.id) < 2 OR coalesce(sum(p.points), 0) <> 0
    """,
    # Postings have no foreign key to their entry (migration 0011): each must have one, of its program and member.
    "posting_program_mismatch": """
        SELECT p.id AS posting_id, p.entry_id, e.id IS NULL AS orphan FROM postings p
        LEFT JOIN entries e ON e.id = p.entry_id
        WHERE ($1::uuid IS NULL OR p.program_id = $1)
          AND (e.id IS NULL OR p.program_id <> e.program_id
               OR (p.member_id IS DISTINCT FROM e.member_id
                   -- issue-15: a transfer or a merge moves its counterparty's points too
                   AND NOT EXISTS (SELECT 1 FROM entry_counterparties c
                                    WHERE c.entry_id = p.entry_id AND c.member_id = p.member_id
                                      AND c.program_id = e.program_id AND e.kind IN ('transfer', 'merge'))))
    """,
    # issue-15: each transfer's entry moved exactly its points from the sender's available to the receiver's, and
    # every transfer entry is some transfer's.
    "transfer_entry_mismatch": """
        SELECT t.id AS transfer_id, e.id AS entry_id, t.points,
               (SELECT coalesce(sum(p.points), 0) FROM postings p WHERE p.entry_id = e.id
                   AND p.member_id = t.from_member_id AND p.account = 'available') AS sent,
               (SELECT coalesce(sum(p.points), 0) FROM postings p WHERE p.entry_id = e.id
                   AND p.member_id = t.to_member_id AND p.account = 'available') AS received
        FROM transfers t LEFT JOIN entries e ON e.id = t.entry_id
        WHERE ($1::uuid IS NULL OR t.program_id = $1)
          AND (e.kind IS DISTINCT FROM 'transfer' OR e.member_id <> t.from_member_id OR e.program_id <> t.program_id
               OR (SELECT coalesce(sum(p.points), 0) FROM postings p WHERE p.entry_id = e.id
                      AND p.member_id = t.from_member_id AND p.account = 'available') <> -t.points
               OR (SELECT coalesce(sum(p.points), 0) FROM postings p WHERE p.entry_id = e.id
                      AND p.member_id = t.to_member_id AND p.account = 'available') <> t.points)
        UNION ALL
        SELECT NULL, e.id, NULL, NULL, NULL FROM entries e
        WHERE ($1::uuid IS NULL OR e.program_id = $1) AND e.kind = 'transfer'
          AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.entry_id = e.id)
    """,
    # Allocations have no foreign key to their entry or lot (migration 0011).
    "orphan_allocation": """
        SELECT a.id AS allocation_id, a.entry_id, a.lot_id FROM lot_allocations a
        LEFT JOIN lots l ON l.id = a.lot_id LEFT JOIN entries e ON e.id = a.entry_id
        WHERE ($1::uuid IS NULL OR l.program_id = $1 OR e.program_id = $1 OR l.id IS NULL OR e.id IS NULL)
          AND (l.id IS NULL OR e.id IS NULL OR l.program_id <> e.program_id)
    """,
    "program_unbalanced": """
        SELECT program_id, sum(points) AS sum FROM postings
        WHERE ($1::uuid IS NULL OR program_id = $1) GROUP BY program_id HAVING sum(points) <> 0
    """,
    "balance_mismatch": """
        WITH agg AS (
            SELECT member_id,
                   coalesce(sum(points) FILTER (WHERE account = 'available'), 0) AS available,
                   coalesce(sum(points) FILTER (WHERE account = 'pending'), 0) AS pending,
                   coalesce(sum(points) FILTER (WHERE account = 'held'), 0) AS held,
                   -coalesce(sum(points) FILTER (WHERE account IN ('issued', 'adjustments')), 0)
                       AS lifetime_earned,
                   coalesce(sum(points) FILTER (WHERE account = 'redeemed'), 0) AS lifetime_redeemed
            FROM postings WHERE member_id IS NOT NULL AND ($1::uuid IS NULL OR program_id = $1)
            GROUP BY member_id
        )
        SELECT m.external_id AS member_id, m.program_id,
               b.available, b.pending, b.held, b.lifetime_earned, b.lifetime_redeemed,
               coalesce(a.available, 0) AS expected_available, coalesce(a.pending, 0) AS expected_pending,
               coalesce(a.held, 0) AS expected_held,
               coalesce(a.lifetime_earned, 0) AS expected_lifetime_earned,
               coalesce(a.lifetime_redeemed, 0) AS expected_lifetime_redeemed
        FROM members m
        LEFT JOIN member_balances b ON b.member_id = m.id
        LEFT JOIN agg a ON a.member_id = m.id
        WHERE ($1::uuid IS NULL OR m.program_id = $1)
          AND (b.member_id IS NULL
               OR (b.available, b.pending, b.held, b.lifetime_earned, b.lifetime_redeemed)
                  IS DISTINCT FROM (coalesce(a.available, 0), coalesce(a.pending, 0), coalesce(a.held, 0),
                                    coalesce(a.lifetime_earned, 0), coalesce(a.lifetime_redeemed, 0)))
    """,
    "lot_remaining_mismatch": """
        SELECT l.id AS lot_id, l.points, l.remaining, l.points - coalesce(a.used, 0) AS expected_remaining
        FROM lots l
        LEFT JOIN (SELECT lot_id, sum(points) AS used FROM lot_allocations GROUP BY lot_id) a
               ON a.lot_id = l.id
        WHERE ($1::uuid IS NULL OR l.program_id = $1) AND l.remaining <> l.points - coalesce(a.used, 0)
    """,
    "lots_do_not_cover_balance": """
        SELECT m.external_id AS member_id, b.available, b.pending,
               coalesce(l.spendable, 0) AS spendable_lot_points, coalesce(l.pending, 0) AS pending_lot_points
        FROM member_balances b
        JOIN members m ON m.id = b.member_id
        LEFT JOIN (SELECT member_id, sum(remaining) FILTER (WHERE NOT pending) AS spendable,
                          sum(remaining) FILTER (WHERE pending) AS pending
                   FROM lots WHERE remaining > 0 GROUP BY member_id) l ON l.member_id = b.member_id
        WHERE ($1::uuid IS NULL OR b.program_id = $1)
          AND (greatest(b.available, 0) <> coalesce(l.spendable, 0) OR b.pending <> coalesce(l.pending, 0))
    """,
    "held_mismatch": """
        SELECT m.external_id AS member_id, b.held, coalesce(h.open, 0) AS open_hold_points
        FROM member_balances b
        JOIN members m ON m.id = b.member_id
        LEFT JOIN (SELECT member_id, sum(points) AS open FROM holds WHERE status = 'open' GROUP BY member_id) h
               ON h.member_id = b.member_id
        WHERE ($1::uuid IS NULL OR b.program_id = $1) AND b.held <> coalesce(h.open, 0)
    """,
    "hold_allocation_mismatch": """
        SELECT h.id AS hold_id, h.status, h.points, h.captured_points, coalesce(a.net, 0) AS allocated
        FROM holds h
        LEFT JOIN LATERAL (
            SELECT sum(la.points) AS net FROM lot_allocations la
            -- positive allocations of the resolve entry repay a negative balance (ledger_cover_debt)
            WHERE la.entry_id = h.hold_entry_id OR (la.entry_id = h.resolve_entry_id AND la.points < 0)
        ) a ON true
        WHERE ($1::uuid IS NULL OR h.program_id = $1)
          AND coalesce(a.net, 0) <> CASE h.status WHEN 'open' THEN h.points
                                                  WHEN 'captured' THEN h.captured_points ELSE 0 END
    """,
    "redemption_refunds_mismatch": """
        SELECT r.id AS redemption_id, r.points, r.refunded_points, coalesce(f.total, 0) AS refunds
        FROM redemptions r
        LEFT JOIN (SELECT redemption_id, sum(points) AS total FROM redemption_refunds GROUP BY redemption_id) f
               ON f.redemption_id = r.id
        WHERE ($1::uuid IS NULL OR r.program_id = $1)
          AND (r.refunded_points <> coalesce(f.total, 0) OR r.refunded_points > r.points)
    """,
    # The ledger's rows have no foreign key to `programs` (migration 0009: no row locked by every write);
    # each row's program must be its member's, and exist.
    "program_mismatch": """
        SELECT x.kind, x.id, x.program_id, m.program_id AS member_program_id
        FROM (SELECT 'entry' AS kind, id, program_id, member_id FROM entries
              UNION ALL SELECT 'lot', id, program_id, member_id FROM lots
              UNION ALL SELECT 'hold', id, program_id, member_id FROM holds
              UNION ALL SELECT 'redemption', id, program_id, member_id FROM redemptions
              UNION ALL SELECT 'purchase', id, program_id, member_id FROM purchases
              UNION ALL SELECT 'member_event', id, program_id, member_id FROM member_events
              UNION ALL SELECT 'member_balance', member_id, program_id, member_id FROM member_balances) x
        LEFT JOIN members m ON m.id = x.member_id
        WHERE ($1::uuid IS NULL OR x.program_id = $1 OR m.program_id = $1)
          AND (m.program_id IS DISTINCT FROM x.program_id AND x.member_id IS NOT NULL
               OR NOT EXISTS (SELECT 1 FROM programs p WHERE p.id = x.program_id))
    """,
    "purchase_days_mismatch": """
        WITH actual AS (
            SELECT p.member_id, (p.occurred_at AT TIME ZONE 'UTC')::date AS day,
                   sum(p.points - p.clawed_back_points) AS points,
                   sum(greatest(p.qualifying_points - p.qualifying_clawed_back, 0)) AS qualifying_points,
                   sum(p.eligible_amount) AS spend, count(*) AS purchases
            FROM purchases p WHERE ($1::uuid IS NULL OR p.program_id = $1) GROUP BY 1, 2
        ), stored AS (
            SELECT d.* FROM member_purchase_days d LEFT JOIN members m ON m.id = d.member_id
            WHERE ($1::uuid IS NULL OR m.program_id = $1)
        )
        SELECT coalesce(a.member_id, s.member_id) AS member_id, coalesce(a.day, s.day) AS day,
               a.points AS points, s.points AS stored_points, a.purchases AS purchases,
               s.purchases AS stored_purchases
        FROM actual a FULL JOIN stored s ON s.member_id = a.member_id AND s.day = a.day
        WHERE a.member_id IS NULL OR s.member_id IS NULL OR a.points <> s.points
           OR a.qualifying_points <> s.qualifying_points OR a.spend <> s.spend OR a.purchases <> s.purchases
    """,
    # issue-14: vouchers have no foreign key to their member or reward (tables.py): prove both, in one program.
    "voucher_reference_mismatch": """
        SELECT v.id AS voucher_id, v.program_id, m.program_id AS member_program_id, r.program_id AS reward_program_id
        FROM vouchers v LEFT JOIN members m ON m.id = v.member_id LEFT JOIN rewards r ON r.id = v.reward_id
        WHERE ($1::uuid IS NULL OR v.program_id = $1)
          AND (m.program_id IS DISTINCT FROM v.program_id OR r.program_id IS DISTINCT FROM v.program_id)
    """,
    # A voucher's exchange entry: available -points, redeemed +points, lots consumed for all of them. Its refund entry
    # (cancelled, or expired with refund_on_expiry): redeemed -points, available +returned_points (restored into
    # lots), expired +returned_expired_points; and no refund on a voucher still issued or redeemed.
    "voucher_entry_mismatch": """
        SELECT v.id AS voucher_id, v.status, v.points, x.kind AS exchange_kind, x.available, x.redeemed, x.allocated,
               f.kind AS refund_kind, f.redeemed AS refund_redeemed, f.available AS refund_available,
               f.expired AS refund_expired, f.restored AS refund_restored
        FROM vouchers v
        LEFT JOIN LATERAL (
            SELECT e.kind, e.member_id, e.program_id,
                   (SELECT coalesce(sum(p.points) FILTER (WHERE p.account = 'available'), 0) FROM postings p
                     WHERE p.entry_id = e.id) AS available,
                   (SELECT coalesce(sum(p.points) FILTER (WHERE p.account = 'redeemed'), 0) FROM postings p
                     WHERE p.entry_id = e.id) AS redeemed,
                   (SELECT coalesce(sum(a.points), 0) FROM lot_allocations a WHERE a.entry_id = e.id) AS allocated
            FROM entries e WHERE e.id = v.entry_id
        ) x ON true
        LEFT JOIN LATERAL (
            SELECT e.kind, e.member_id,
                   (SELECT coalesce(sum(p.points) FILTER (WHERE p.account = 'redeemed'), 0) FROM postings p
                     WHERE p.entry_id = e.id) AS redeemed,
                   (SELECT coalesce(sum(p.points) FILTER (WHERE p.account = 'available'), 0) FROM postings p
                     WHERE p.entry_id = e.id) AS available,
                   (SELECT coalesce(sum(p.points) FILTER (WHERE p.account = 'expired'), 0) FROM postings p
                     WHERE p.entry_id = e.id) AS expired,
                   -- positive allocations of a refund entry repay a negative balance (ledger.cover_debt)
                   (SELECT -coalesce(sum(a.points) FILTER (WHERE a.points < 0), 0) FROM lot_allocations a
                     WHERE a.entry_id = e.id) AS restored
            FROM entries e WHERE e.id = v.refund_entry_id
        ) f ON true
        WHERE ($1::uuid IS NULL OR v.program_id = $1)
          AND (x.kind IS DISTINCT FROM 'exchange' OR x.member_id <> v.member_id OR x.program_id <> v.program_id
               OR x.available <> -v.points OR x.redeemed <> v.points OR x.allocated <> v.points
               OR (v.refund_entry_id IS NOT NULL) <> (v.status = 'cancelled' OR (v.status = 'expired'
                                                                                 AND v.refund_on_expiry))
               OR (v.refund_entry_id IS NOT NULL
                   AND (f.kind IS DISTINCT FROM 'exchange_refund' OR f.member_id <> v.member_id
                        OR f.redeemed <> -v.points OR f.available <> v.returned_points
                        OR f.expired <> v.returned_expired_points OR f.restored <> v.returned_points
                        OR v.returned_points + v.returned_expired_points <> v.points)))
    """,
    "exchange_entry_without_voucher": """
        SELECT e.id AS entry_id, e.kind FROM entries e
        LEFT JOIN (SELECT entry_id AS id FROM vouchers
                   UNION ALL SELECT refund_entry_id FROM vouchers WHERE refund_entry_id IS NOT NULL) v ON v.id = e.id
        WHERE ($1::uuid IS NULL OR e.program_id = $1) AND e.kind IN ('exchange', 'exchange_refund') AND v.id IS NULL
    """,
    "partner_code_mismatch": """
        SELECT r.id AS reward_id, NULL::bigint AS voucher_id, r.stock, (SELECT count(*) FROM partner_codes c
                WHERE c.reward_id = r.id AND c.voucher_id IS NULL) AS codes
        FROM rewards r
        WHERE ($1::uuid IS NULL OR r.program_id = $1) AND r.kind = 'partner_code'
          AND r.stock <> (SELECT count(*) FROM partner_codes c WHERE c.reward_id = r.id AND c.voucher_id IS NULL)
        UNION ALL
        SELECT v.reward_id, v.id, NULL, (SELECT count(*) FROM partner_codes c
                WHERE c.voucher_id = v.id AND c.reward_id = v.reward_id AND c.program_id = v.program_id)
        FROM vouchers v
        WHERE ($1::uuid IS NULL OR v.program_id = $1) AND v.kind = 'partner_code'
          AND (SELECT count(*) FROM partner_codes c
                WHERE c.voucher_id = v.id AND c.reward_id = v.reward_id AND c.program_id = v.program_id) <> 1
    """,
    # Insight (issue 17): the liability in points, -(postings to issued, adjustments, redeemed, expired), equals the
    # members' available + pending + held (what GET /v1/analytics/summary reports as outstanding).
    "liability_mismatch": """
        WITH ledger AS (
            SELECT program_id, -sum(points) AS liability FROM postings
            WHERE ($1::uuid IS NULL OR program_id = $1) AND account IN ('issued', 'adjustments', 'redeemed', 'expired')
            GROUP BY program_id
        ), balances AS (
            SELECT program_id, sum(available + pending + held) AS balances FROM member_balances
            WHERE ($1::uuid IS NULL OR program_id = $1) GROUP BY program_id
        )
        SELECT coalesce(l.program_id, b.program_id) AS program_id, coalesce(l.liability, 0) AS liability,
               coalesce(b.balances, 0) AS balances
        FROM ledger l FULL JOIN balances b ON b.program_id = l.program_id
        WHERE coalesce(l.liability, 0) <> coalesce(b.balances, 0)
    """,
}

COUNTS = """
SELECT (SELECT count(*) FROM entries WHERE $1::uuid IS NULL OR program_id = $1) AS entries,
       (SELECT count(*) FROM postings WHERE $1::uuid IS NULL OR program_id = $1) AS postings,
       (SELECT count(*) FROM members WHERE $1::uuid IS NULL OR program_id = $1) AS members,
       (SELECT count(*) FROM lots WHERE $1::uuid IS NULL OR program_id = $1) AS lots
"""


VERIFY_TIMEOUT_S = 24 * 3600.0


async def verify(conn: asyncpg.Connection, program_id: UUID | None = None,
                 progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Run every check inside one REPEATABLE READ snapshot so concurrent writes cannot cause false alarms.
    ``progress`` is called with each check's name once it is done (the CLI's progress bar: len(CHECKS) + 1)."""
    discrepancies: list[Discrepancy] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL statement_timeout = 0")
        # and no client-side deadline either: the pool's command_timeout (twice the statement timeout) would turn a
        # long check of a large program into a 503
        counts = dict(await conn.fetchrow(COUNTS, program_id, timeout=VERIFY_TIMEOUT_S))
        if progress:
            progress("counts")
        for name, sql in CHECKS.items():
            for row in await conn.fetch(sql + f" LIMIT {MAX_REPORTED}", program_id, timeout=VERIFY_TIMEOUT_S):
                discrepancies.append(Discrepancy(check=name, detail=_plain(dict(row))))
            if progress:
                progress(name)
    return VerifyReport(ok=not discrepancies, checked=counts, discrepancies=discrepancies[:MAX_REPORTED])


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly values: sums of bigints arrive as Decimal and are whole numbers of points."""
    return {k: (str(v) if isinstance(v, UUID) else int(v) if isinstance(v, Decimal) else v)
            for k, v in row.items()}
