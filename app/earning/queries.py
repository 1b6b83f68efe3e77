"""All SQL of earning. Writes are the SQL functions of migration 0003."""

# The configuration documents come as text: a version is parsed once per process (app.programs.versions),
# so decoding its JSON on every purchase would be wasted work. $5 NULL: the purchase occurs now().
PURCHASE_CONTEXT = """
SELECT status, member_pk, birthday, first_purchase, earned_today, earned_this_month, rule_version_id,
       rules::text AS rules, existing_purchase_id, existing_hash, policy_version_id, policy::text AS policy,
       tier_config_id, tier_config_version, tier_config::text AS tier_config, tier_then, tier, tier_valid_until,
       manual_tier, manual_until, rule_version, coalesce($5::timestamptz, now()) AS occurred_at, rule_counts
FROM ledger_purchase_context($1, $2, $3, $4, coalesce($5::timestamptz, now()), $6)
"""
# Post a purchase and answer, in the same round trip, the member's tier metric after it and the balance
# (ledger_purchase, migration 0007). The purchase and its award arrive as JSON text (pydantic serialises
# them in one step) and become jsonb here.
PURCHASE = """
SELECT * FROM ledger_purchase($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8::text::jsonb, $9, $10, $11, $12, $13, $14,
                              $15, $16, $17, $18, $19)
"""
RETURN_CONTEXT = "SELECT * FROM ledger_return_context($1, $2, $3)"
CLAWBACK = "SELECT * FROM ledger_clawback($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"  # issue-12: $10 occurred_at
EVENT_CONTEXT = """
SELECT status, member_pk, count_today, count_this_month, count_ever, rule_version_id, rules::text AS rules,
       existing_event_id, policy_version_id, policy::text AS policy
FROM ledger_event_context($1, $2, $3, $4, $5, $6, $7)
"""
EVENT = "SELECT * FROM ledger_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"

RULE_CONTEXT_FOR_QUOTE = """
SELECT m.id AS member_pk, m.birthday, (SELECT t.tier FROM member_tiers t WHERE t.member_id = m.id) AS tier,
       NOT EXISTS (SELECT 1 FROM purchases p WHERE p.member_id = m.id) AS first_purchase,
       (SELECT coalesce(sum(p.points), 0)::bigint FROM purchases p WHERE p.member_id = m.id
         AND p.occurred_at >= $3 AND p.occurred_at < $4) AS earned_today,
       (SELECT coalesce(sum(p.points), 0)::bigint FROM purchases p WHERE p.member_id = m.id
         AND p.occurred_at >= $5 AND p.occurred_at < $6) AS earned_this_month
FROM members m WHERE m.program_id = $1 AND m.external_id = $2
"""

GET_PURCHASE = """
SELECT p.order_id, m.external_id AS member_id, p.occurred_at, p.points, p.clawed_back_points,
       coalesce(v.version, 0) AS rule_version, p.entry_id, p.award,
       l.id AS lot_id, l.points AS lot_points, l.available_at, l.expires_at, l.pending,
       (SELECT coalesce(json_agg(json_build_object('return_id', r.return_id, 'points', r.points,
                                                   'shortfall', r.shortfall, 'created_at', r.created_at,
                                                   'occurred_at', r.occurred_at)
                                 ORDER BY r.id), '[]'::json)
          FROM purchase_returns r WHERE r.purchase_id = p.id) AS returns
FROM purchases p
JOIN members m ON m.id = p.member_id
LEFT JOIN earn_rule_versions v ON v.id = p.rule_version_id
LEFT JOIN lots l ON l.id = p.lot_id
WHERE p.program_id = $1 AND p.order_id = $2
"""

GET_EVENT = """
SELECT e.event_id, m.external_id AS member_id, e.name, e.points, e.entry_id
FROM member_events e JOIN members m ON m.id = e.member_id
WHERE e.program_id = $1 AND e.event_id = $2
"""

DUE_PENDING_MEMBERS = """
SELECT DISTINCT member_id FROM lots WHERE pending AND available_at <= now() LIMIT $1
"""
ACTIVATE = "SELECT ledger_activate_due($1, now())"

# --- issue 12 ----------------------------------------------------------------------------------------------------

# F2: does the program have earn rules at all (then a purchase before the first version is refused)?
HAS_RULE_VERSIONS = "SELECT EXISTS (SELECT 1 FROM earn_rule_versions WHERE program_id = $1)"

# The member's counts of a rule set's limited rules for a purchase at $3 in zone $4 (the quote; the purchase gets
# them from its context).
RULE_COUNTS = "SELECT ledger_rule_counts($1, $2::jsonb, $3, $4)"

# The limited rules a purchase applied ($5 rule ids, $6 whether each depends on the birthday). Separate from the
# posting call so it costs a statement only when a limited rule applied; it could join ledger_purchase.
RECORD_RULE_AWARDS = """
INSERT INTO member_rule_awards (program_id, member_id, purchase_id, occurred_at, rule_id, personal)
SELECT $1, $2, $3, $4, x.rule_id, x.personal FROM unnest($5::text[], $6::boolean[]) AS x(rule_id, personal)
"""

# A return took back everything these rules gave on the purchase: they no longer count toward their limits.
RELEASE_RULE_AWARDS = """
UPDATE member_rule_awards SET released = true WHERE purchase_id = $1 AND rule_id = ANY ($2::text[]) AND NOT released
"""

# --- issue 12 F8: erasure removes what reveals the birthday from stored awards -----------------------------------

ERASE_PERSONAL_RULE_AWARDS = "DELETE FROM member_rule_awards WHERE member_id = $1 AND personal"
MEMBER_RULE_VERSIONS = """
SELECT DISTINCT v.id, v.rules::text AS rules FROM purchases p JOIN earn_rule_versions v ON v.id = p.rule_version_id
WHERE p.member_id = $1
"""
PROGRAM_RULE_VERSIONS = "SELECT id, rules::text AS rules FROM earn_rule_versions WHERE program_id = $1"
MEMBER_PURCHASES_OF_VERSION = "SELECT id, award FROM purchases WHERE member_id = $1 AND rule_version_id = $2"
REWRITE_AWARD = "UPDATE purchases SET award = $2::text::jsonb WHERE id = $1"
RETURNS_OF_PURCHASES = "SELECT id, result FROM purchase_returns WHERE purchase_id = ANY ($1::bigint[])"
# The only rewrite of purchase_returns there is: its trigger lets it through in this transaction alone (migration
# 1201), and only when the numbers of the result stay.
ALLOW_RETURN_REDACTION = "SET LOCAL points_ledger.erasure = 'on'"
END_RETURN_REDACTION = "SET LOCAL points_ledger.erasure = 'off'"
REWRITE_RETURN_RESULT = "UPDATE purchase_returns SET result = $2::text::jsonb WHERE id = $1"
# The stored answers of the member's purchases and returns still within the idempotency retention (they carry the
# award or the clawback). A scan of the program's keys: erasure is rare, and the keys are purged after 7 days.
MEMBER_STORED_ANSWERS = """
SELECT key, response_body FROM idempotency_keys
WHERE program_id = $1 AND response_body -> 'balance' ->> 'member_id' = $2
  AND (response_body ? 'purchase' OR response_body ? 'clawback')
"""
REWRITE_STORED_ANSWER = "UPDATE idempotency_keys SET response_body = $3::text::jsonb WHERE program_id = $1 AND key = $2"
