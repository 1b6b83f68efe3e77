"""All SQL for redemptions and holds. Writes are the SQL functions of migration 0002."""

# The debit and the member's balance after it, in one round trip (ledger_debit, migration 0006).
REDEEM_OR_HOLD = "SELECT * FROM ledger_debit($1, $2, $3, $4, now(), $5, $6, $7, $8)"
CAPTURE = "SELECT status, entry_id, redemption_id FROM ledger_capture_hold($1, $2, $3, now())"
RELEASE = "SELECT status, entry_id FROM ledger_release_hold($1, $2, $3, now())"
REFUND = """
SELECT status, entry_id, refund_id, available_points, expired_points FROM ledger_refund($1, $2, $3, now(), $4, $5)
"""

# An open hold past its expiry reads as expired even before the release job has run.
GET_HOLD = """
SELECT h.id, m.external_id AS member_id, h.points, h.captured_points,
       CASE WHEN h.status = 'open' AND h.expires_at <= now() THEN 'expired' ELSE h.status END AS status,
       h.reference, h.description, h.expires_at, h.created_at, h.resolved_at, h.hold_entry_id,
       h.resolve_entry_id, (SELECT r.id FROM redemptions r WHERE r.hold_id = h.id) AS redemption_id
FROM holds h JOIN members m ON m.id = h.member_id
WHERE h.program_id = $1 AND h.id = $2
"""

GET_REDEMPTION = """
SELECT r.id, m.external_id AS member_id, r.points, r.refunded_points, r.reference, r.entry_id, r.hold_id,
       r.created_at,
       (SELECT coalesce(json_agg(json_build_object(
                   'id', f.id, 'entry_id', f.entry_id, 'points', f.points,
                   'available_points', f.available_points, 'expired_points', f.expired_points,
                   'created_at', f.created_at) ORDER BY f.id), '[]'::json)
          FROM redemption_refunds f WHERE f.redemption_id = r.id) AS refunds
FROM redemptions r JOIN members m ON m.id = r.member_id
WHERE r.program_id = $1 AND r.id = $2
"""

RELEASE_EXPIRED = "SELECT ledger_release_expired_holds(now(), $1)"
