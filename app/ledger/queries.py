"""All SQL of the ledger core: the write functions are called through app.ledger.writes; the reads are single
statements whose JSON Postgres renders (migrations/functions/10_ledger.sql, 30_balances.sql), sent as is."""

BALANCE_JSON = "SELECT j::text FROM ledger.balance_read($1, $2) j"
ENTRY_JSON = "SELECT j::text FROM ledger.entry_read($1, $2) j"
ACTIVITY_JSON = "SELECT j::text FROM ledger.activity_read($1, $2, $3, $4) j"

# The balance as columns, for the service's own use (quotes).
BALANCE = """
SELECT b.member_ref AS member_id, b.available, b.pending, b.held, b.lifetime_earned, b.lifetime_redeemed,
       b.next_expiry_at, b.next_expiry_points, b.tier
FROM ledger.member($1, $2) m CROSS JOIN LATERAL ledger.balance(m.id) b
"""
