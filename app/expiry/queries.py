"""All SQL of expiration: policy versions, the sweep, expiring-soon lists."""

# $4: one program's members only, or NULL for every program.
EXPIRE_BATCH = "SELECT * FROM ledger_expire_batch($1, $2, $3, $4)"
# What the sweep as of $1 would expire (the due lots of ledger_expire_batch), for `expire --dry-run`.
DUE_COUNTS = """
SELECT count(DISTINCT l.member_id)::integer AS members, count(*)::integer AS lots,
       coalesce(sum(l.remaining), 0)::bigint AS points
FROM lots l JOIN member_balances b ON b.member_id = l.member_id
WHERE l.remaining > 0 AND NOT l.pending AND ($2::uuid IS NULL OR l.program_id = $2)
  AND ((NOT l.expires_on_inactivity AND l.expires_at <= $1)
       OR (l.expires_on_inactivity AND b.activity_expires_at <= $1 AND b.available > 0))
"""
EXPIRING = """
WITH m AS (
    SELECT m.id, b.activity_expires_at FROM members m JOIN member_balances b ON b.member_id = m.id
    WHERE m.program_id = $1 AND m.external_id = $2
), lots_due AS (
    SELECT CASE WHEN l.expires_on_inactivity THEN m.activity_expires_at ELSE l.expires_at END AS expires_at,
           l.remaining
    FROM m JOIN lots l ON l.member_id = m.id
    WHERE l.remaining > 0
)
SELECT (SELECT count(*) FROM m) AS found, d.expires_at, sum(d.remaining)::bigint AS points
FROM (SELECT 1) one
LEFT JOIN lots_due d ON d.expires_at > now() AND d.expires_at <= now() + make_interval(days => $3)
GROUP BY d.expires_at ORDER BY d.expires_at
"""
