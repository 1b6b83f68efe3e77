"""All SQL of the ledger core. The write operations are SQL functions (migrations/sql/) so each is one
round trip; the reads are single statements on indexed paths."""

ADJUST = "SELECT status, entry_id FROM ledger_adjust($1, $2, $3, $4, $5, $6, $7, $8, $9)"

REVERSE = "SELECT status, entry_id FROM ledger_reverse($1, $2, now(), $3, $4)"

_ENTRY_COLUMNS = """
    e.id, e.kind, m.external_id AS member_id, e.occurred_at, e.recorded_at, e.external_ref,
    e.description, e.metadata, e.reverses_entry_id,
    (SELECT r.id FROM entries r WHERE r.reverses_entry_id = e.id) AS reversed_by_entry_id,
    (SELECT coalesce(json_agg(json_build_object('account', p.account, 'points', p.points) ORDER BY p.id),
                     '[]'::json)
       FROM postings p WHERE p.entry_id = e.id) AS postings
"""

GET_ENTRY = f"""
SELECT {_ENTRY_COLUMNS}
FROM entries e LEFT JOIN members m ON m.id = e.member_id
WHERE e.program_id = $1 AND e.id = $2
"""

# Reads never wait for a job: holds past their expiry count as available again at once, pending points
# past their return window count as available, and points past their expiry stop counting, before the
# jobs post the entries that make it so. Every lot subquery is an index range (expired lots, the first
# future expiry and the lots expiring then; lots under the activity policy only for members who have an
# activity date), so a member with thousands of open lots reads as fast as a new one.
BALANCE = """
SELECT m.external_id AS member_id,
       b.available + x.lapsed + y.due - z.dated - z.inactive AS available, b.pending - y.due AS pending,
       b.held - x.lapsed AS held, b.lifetime_earned, b.lifetime_redeemed,
       nx.at AS next_expiry_at,
       (CASE WHEN nx.at = n.dated_at THEN
            (SELECT coalesce(sum(l.remaining), 0) FROM lots l
              WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_at = n.dated_at
                AND NOT l.expires_on_inactivity)
        ELSE 0 END
        + CASE WHEN nx.at = b.activity_expires_at THEN coalesce(n.inactive_points, 0) ELSE 0 END
       )::bigint AS next_expiry_points,
       mt.tier
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
    SELECT (SELECT coalesce(sum(l.remaining), 0) FROM lots l
             WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_at <= now()
               AND NOT l.pending AND NOT l.expires_on_inactivity)::bigint AS dated,
           CASE WHEN b.activity_expires_at <= now() THEN
               (SELECT coalesce(sum(l.remaining), 0) FROM lots l
                 WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_on_inactivity AND NOT l.pending)
           ELSE 0 END::bigint AS inactive
) z
CROSS JOIN LATERAL (
    SELECT (SELECT l.expires_at FROM lots l
             WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_at > now() AND NOT l.expires_on_inactivity
             ORDER BY l.expires_at LIMIT 1) AS dated_at,
           CASE WHEN b.activity_expires_at > now() THEN
               (SELECT sum(l.remaining) FROM lots l
                 WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_on_inactivity)
           END AS inactive_points
) n
CROSS JOIN LATERAL (
    SELECT least(n.dated_at, CASE WHEN n.inactive_points > 0 THEN b.activity_expires_at END) AS at
) nx
WHERE m.program_id = $1 AND m.external_id = $2
"""

# Newest first. One row per entry, or a single row of NULLs when the member exists with no (more)
# entries; no row at all when the member does not exist. Entry ids of one member are assigned under
# that member's lock, so they commit in id order and a cursor never skips a late commit.
ACTIVITY = f"""
SELECT m.id AS member_pk, x.*
FROM members m
LEFT JOIN LATERAL (
    SELECT {_ENTRY_COLUMNS}
    FROM entries e
    WHERE e.member_id = m.id AND ($3::bigint IS NULL OR e.id < $3)
    ORDER BY e.id DESC
    LIMIT $4
) x ON true
WHERE m.program_id = $1 AND m.external_id = $2
ORDER BY x.id DESC
"""
