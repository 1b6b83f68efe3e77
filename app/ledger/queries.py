"""All SQL of the ledger core: the write functions are called through app.ledger.writes; the reads are single
statements whose JSON Postgres renders (migrations/functions/10_ledger.sql, 30_balances.sql), sent as is."""

BALANCE_JSON = "SELECT j::text FROM ledger.balance_read($1, $2) j"
ENTRY_JSON = "SELECT j::text FROM ledger.entry_read($1, $2) j"
ACTIVITY_JSON = "SELECT j::text FROM ledger.activity_read($1, $2, $3, $4, $5) j"
# As of an instant (migrations/functions/89_as_of.sql): as recorded by then.
BALANCE_AS_OF_JSON = "SELECT j::text FROM ledger.balance_as_of_read($1, $2, $3) j"
LIABILITY_JSON = "SELECT j::text FROM ledger.liability_as_of_read($1, $2) j"

# The balance as columns, for the service's own use (quotes).
BALANCE = """
SELECT b.member_ref AS member_id, b.available, b.pending, b.held, b.lifetime_earned, b.lifetime_redeemed,
       b.next_expiry_at, b.next_expiry_points, b.tier
FROM ledger.member($1, $2) m CROSS JOIN LATERAL ledger.balance(m.id) b
"""
