"""All SQL of earning. Reads of the facts an evaluation needs (the typed contexts of app.earning.context), the
reads of purchases, and the activation job; the writes are SQL functions (migrations/functions/80_purchases.sql,
85_events.sql) called through app.ledger.writes."""

PURCHASE_CONTEXT = """
SELECT * FROM ledger.purchase_context(p_program => $1, p_member_ref => $2, p_order_id => $3, p_occurred_at => $4,
                                      p_day_start => $5, p_month_start => $6, p_window_start => $7, p_bonuses => $8,
                                      p_rules => $9, p_tz => $10)
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

# --- erasure (issue 12 F8): what reveals the birthday is removed from the stored explanations of purchases -------

ERASE_PERSONAL_RULE_AWARDS = "DELETE FROM member_rule_awards WHERE member_id = $1 AND personal"
MEMBER_RULE_VERSIONS = """
SELECT DISTINCT v.id, v.rules::text AS rules FROM purchases p JOIN earn_rule_versions v ON v.id = p.rule_version_id
WHERE p.member_id = $1
"""
PROGRAM_RULE_VERSIONS = "SELECT id, rules::text AS rules FROM earn_rule_versions WHERE program_id = $1"
MEMBER_PURCHASES_OF_VERSION = "SELECT id, award FROM purchases WHERE member_id = $1 AND rule_version_id = $2"
REWRITE_AWARD = "UPDATE purchases SET award = $2::text::json WHERE id = $1"
RETURNS_OF_PURCHASES = "SELECT id, result FROM purchase_returns WHERE purchase_id = ANY ($1::bigint[])"
# The only rewrite of purchase_returns there is: its trigger lets it through in this transaction alone
# (ledger.forbid_change_but_redaction), and only when the numbers of the result stay.
ALLOW_RETURN_REDACTION = "SET LOCAL points_ledger.erasure = 'on'"
END_RETURN_REDACTION = "SET LOCAL points_ledger.erasure = 'off'"
REWRITE_RETURN_RESULT = "UPDATE purchase_returns SET result = $2::text::json WHERE id = $1"
# The stored answers of the member's purchases and returns still within the idempotency retention (they carry the
# award or the clawback). A scan of the program's keys: erasure is rare, and the keys are purged after 7 days.
MEMBER_STORED_ANSWERS = """
SELECT key, response_body FROM idempotency_keys
WHERE program_id = $1 AND status_code < 300 AND response_body::jsonb -> 'balance' ->> 'member_id' = $2
  AND (response_body::jsonb ? 'purchase' OR response_body::jsonb ? 'clawback')
"""
REWRITE_STORED_ANSWER = "UPDATE idempotency_keys SET response_body = $3 WHERE program_id = $1 AND key = $2"
MEMBER_EARNING_CHANGES = """
SELECT id, data FROM changes WHERE member_id = $1 AND type IN ('points.earned', 'purchase.returned')
"""
REWRITE_CHANGE = "UPDATE changes SET data = $2::text::json WHERE id = $1"

# The batch (app/earning/batch.py) reads many contexts in one pipeline (fetchmany): exactly one row per return, an
# all-NULL one when the order is unknown.
RETURN_CONTEXT_ROW = """
SELECT c.* FROM (SELECT 1) one
LEFT JOIN ledger.return_context(p_program => $1, p_order_id => $2, p_return_id => $3) c ON true
"""
# The members of a batch (its purchases' references, its returns' orders), found and locked in the service-wide
# order (migrations/functions/82_batches.sql).
LOCK_BATCH = "SELECT * FROM ledger.lock_batch(p_program => $1, p_member_refs => $2, p_order_ids => $3)"
STORED_ANSWER = "SELECT * FROM ledger.stored_answer($1, $2, $3)"
RESPOND = "SELECT * FROM ledger.respond($1, $2, $3, $4, $5::text::json)"
