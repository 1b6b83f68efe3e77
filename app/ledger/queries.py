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

# The balance: the SQL function ledger_balance (migration 0006, where its parts are explained), inlined by
# the planner. The write functions return it too, so a write answers with its balance in one round trip.
BALANCE = "SELECT * FROM ledger_balance($1, $2)"

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
