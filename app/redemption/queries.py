"""All SQL of redemptions and holds. The writes are the SQL functions of migrations/functions/60_redemptions.sql,
called through app.ledger.writes; the reads are single statements whose JSON Postgres renders."""

HOLD_JSON = "SELECT j::text FROM ledger.hold_read($1, $2, $3, $4, $5) j"
REDEMPTION_JSON = "SELECT j::text FROM ledger.redemption_read($1, $2, $3, $4, $5) j"

RELEASE_EXPIRED = "SELECT ledger.release_expired_holds(now(), $1, $2)"
COUNT_EXPIRED = """
SELECT count(*) FROM holds WHERE status = 'open' AND expires_at <= now() AND ($1::uuid IS NULL OR program_id = $1)
"""
