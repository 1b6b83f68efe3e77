"""All SQL for redemptions and holds. Writes are the SQL functions of migration 0002."""

# The debit and the member's balance after it, in one round trip (ledger_debit, migration 0006).
REDEEM_OR_HOLD = "SELECT * FROM ledger_debit($1, $2, $3, $4, now(), $5, $6, $7, $8)"
# Capture ('capture', points) or void ('void', NULL) a hold, answering the hold, the redemption and the balance
# in the same round trip (ledger_resolve_hold, migration 0008).
RESOLVE = "SELECT * FROM ledger_resolve_hold($1, $2, $3, $4, now())"
REFUND = """
SELECT status, entry_id, refund_id, available_points, expired_points FROM ledger_refund($1, $2, $3, now(), $4, $5)
"""

# The hold and redemption reads: SQL functions of migration 0008 (inlined by the planner). An open hold
# past its expiry reads as expired even before the release job has run.
GET_HOLD = "SELECT * FROM ledger_hold_view($1, $2)"
GET_REDEMPTION = "SELECT * FROM ledger_redemption_view($1, $2)"

# $2: one program's holds only, or NULL for every program.
RELEASE_EXPIRED = "SELECT ledger_release_expired_holds(now(), $1, $2)"
# The holds RELEASE_EXPIRED would release (`release-holds --dry-run`).
EXPIRED_HOLDS_COUNT = """
SELECT count(*) FROM holds WHERE status = 'open' AND expires_at <= now() AND ($1::uuid IS NULL OR program_id = $1)
"""
