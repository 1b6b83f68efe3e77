"""All SQL of earning. Reads of the facts an evaluation needs (the typed contexts of app.earning.context), the
reads of purchases, and the activation job; the writes are SQL functions (migrations/functions/80_purchases.sql,
85_events.sql) called through app.ledger.writes."""

PURCHASE_CONTEXT = """
SELECT * FROM ledger.purchase_context(p_program => $1, p_member_ref => $2, p_order_id => $3, p_occurred_at => $4,
                                      p_day_start => $5, p_month_start => $6, p_window_start => $7, p_bonuses => $8)
"""
RETURN_CONTEXT = "SELECT * FROM ledger.return_context(p_program => $1, p_order_id => $2, p_return_id => $3)"
EVENT_CONTEXT = """
SELECT * FROM ledger.event_context(p_program => $1, p_member_ref => $2, p_event_id => $3, p_name => $4,
                                   p_day_start => $5, p_month_start => $6)
"""

PURCHASE_JSON = "SELECT j::text FROM ledger.purchase_read($1, $2) j"

# $2: one program's members only, or NULL for every program.
DUE_PENDING_MEMBERS = """
SELECT DISTINCT member_id FROM lots WHERE pending AND available_at <= now() AND ($2::uuid IS NULL OR program_id = $2)
LIMIT $1
"""
COUNT_DUE_PENDING = """
SELECT coalesce(sum(remaining), 0) FROM lots WHERE pending AND available_at <= now()
   AND ($1::uuid IS NULL OR program_id = $1)
"""
ACTIVATE = "SELECT ledger.activate_due($1, now())"
