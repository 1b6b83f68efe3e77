"""All SQL of expiration: policy versions, the sweep, expiring-soon lists."""

EXPIRE_BATCH = """
SELECT * FROM ledger.expire_batch(p_as_of => $1, p_after => $2, p_limit => $3, p_program => $4, p_dry_run => $5)
"""
EXPIRING = """
WITH m AS (
    SELECT m.id, b.activity_expires_at FROM ledger.member($1, $2) m JOIN member_balances b ON b.member_id = m.id
), lots_due AS (
    SELECT ledger.lot_expires_at(l.expires_at, l.expires_on_inactivity, m.activity_expires_at) AS expires_at,
           l.remaining
    FROM m JOIN lots l ON l.member_id = m.id
    WHERE l.remaining > 0
)
SELECT (SELECT count(*) FROM m) AS found, d.expires_at, sum(d.remaining)::bigint AS points
FROM (SELECT 1) one
LEFT JOIN lots_due d ON d.expires_at > now() AND d.expires_at <= now() + make_interval(days => $3)
GROUP BY d.expires_at ORDER BY d.expires_at
"""

# points.expiring (migrations/functions/25_expiry_notices.sql), one batch of a program's members.
ANNOUNCE_EXPIRING = "SELECT * FROM ledger.announce_expiring($1, $2, $3, $4, $5, $6)"
PROGRAMS = "SELECT id, timezone, settings FROM programs ORDER BY id"
PURGE_NOTICES = "SELECT ledger.purge_expiry_notices(now() - interval '1 day')"
