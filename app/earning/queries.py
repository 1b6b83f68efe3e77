"""All SQL of earning. Writes are the SQL functions of migration 0003."""

# The configuration documents come as text: a version is parsed once per process (app.programs.versions),
# so decoding its JSON on every purchase would be wasted work. $5 NULL: the purchase occurs now().
PURCHASE_CONTEXT = """
SELECT status, member_pk, birthday, first_purchase, earned_today, earned_this_month, rule_version_id,
       rules::text AS rules, existing_purchase_id, existing_hash, policy_version_id, policy::text AS policy,
       tier_config_id, tier_config_version, tier_config::text AS tier_config, tier_then, tier, tier_valid_until,
       manual_tier, manual_until, rule_version, coalesce($5::timestamptz, now()) AS occurred_at
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
CLAWBACK = "SELECT * FROM ledger_clawback($1, $2, $3, $4, $5, $6, $7, $8, $9)"
EVENT_CONTEXT = """
SELECT status, member_pk, count_today, count_this_month, count_ever, rule_version_id, rules::text AS rules,
       existing_event_id, policy_version_id, policy::text AS policy
FROM ledger_event_context($1, $2, $3, $4, $5, $6, $7)
"""
EVENT = "SELECT * FROM ledger_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"

RULE_CONTEXT_FOR_QUOTE = """
SELECT m.birthday, (SELECT t.tier FROM member_tiers t WHERE t.member_id = m.id) AS tier,
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
                                                   'shortfall', r.shortfall, 'created_at', r.created_at)
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

# $2: one program's members only, or NULL for every program.
DUE_PENDING_MEMBERS = """
SELECT DISTINCT member_id FROM lots WHERE pending AND available_at <= now() AND ($2::uuid IS NULL OR program_id = $2)
LIMIT $1
"""
# The points ACTIVATE would make available now (`release-pending --dry-run`).
DUE_PENDING_POINTS = """
SELECT coalesce(sum(remaining), 0)::bigint FROM lots
WHERE pending AND available_at <= now() AND ($1::uuid IS NULL OR program_id = $1)
"""
ACTIVATE = "SELECT ledger_activate_due($1, now())"
