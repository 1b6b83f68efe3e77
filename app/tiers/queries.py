"""All SQL of tiers: configuration versions, member tier state and history, the qualifying metric."""

# The qualifying metric of members over [start, end]: points (net of clawbacks; without order bonuses
# unless $4), spend (eligible amount) and purchase count. $1: member ids.
#
# From the daily totals (member_purchase_days, UTC days) of the days from start's to end's, minus the
# purchases of those two days outside [start, end]: at most a window's days per member, plus the purchases
# of two partial days (none after `end` when the purchase being posted is the latest). tests/test_tiers.py
# checks it against the plain sum over `purchases`, its definition.
METRICS = """
WITH w AS (
    SELECT ($2::timestamptz AT TIME ZONE 'UTC')::date AS first_day,
           ($3::timestamptz AT TIME ZONE 'UTC')::date AS last_day
), edge AS (
    SELECT first_day::timestamp AT TIME ZONE 'UTC' AS first_day_start,
           (last_day + 1)::timestamp AT TIME ZONE 'UTC' AS after_last_day, first_day, last_day
    FROM w
)
SELECT m.member_id,
       (coalesce(d.points, 0) - coalesce(x.points, 0))::numeric AS points,
       (coalesce(d.spend, 0) - coalesce(x.spend, 0))::numeric AS spend,
       (coalesce(d.purchases, 0) - coalesce(x.purchases, 0))::bigint AS purchases
FROM unnest($1::bigint[]) AS m(member_id)
CROSS JOIN edge
LEFT JOIN LATERAL (
    SELECT sum(CASE WHEN $4 THEN d.points ELSE d.qualifying_points END) AS points, sum(d.spend) AS spend,
           sum(d.purchases) AS purchases
    FROM member_purchase_days d
    WHERE d.member_id = m.member_id AND d.day >= edge.first_day AND d.day <= edge.last_day
) d ON true
LEFT JOIN LATERAL (
    SELECT sum(CASE WHEN $4 THEN p.points - p.clawed_back_points
                    ELSE greatest(p.qualifying_points - p.qualifying_clawed_back, 0) END) AS points,
           sum(p.eligible_amount) AS spend, count(*) AS purchases
    FROM (SELECT * FROM purchases p WHERE p.member_id = m.member_id
            AND p.occurred_at >= edge.first_day_start AND p.occurred_at < $2
          UNION ALL
          SELECT * FROM purchases p WHERE p.member_id = m.member_id
            AND p.occurred_at > $3 AND p.occurred_at < edge.after_last_day) p
) x ON true
"""


STATES = """
SELECT b.member_id, t.tier, t.valid_until, t.manual_tier, t.manual_until
FROM member_balances b LEFT JOIN member_tiers t ON t.member_id = b.member_id
WHERE b.member_id = ANY($1::bigint[])
ORDER BY b.member_id
FOR UPDATE OF b
"""

SAVE_STATE = """
INSERT INTO member_tiers (member_id, program_id, tier, valid_until, manual_tier, manual_until, since, evaluated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (member_id) DO UPDATE SET
    tier = EXCLUDED.tier, valid_until = EXCLUDED.valid_until, manual_tier = EXCLUDED.manual_tier,
    manual_until = EXCLUDED.manual_until,
    since = CASE WHEN member_tiers.tier = EXCLUDED.tier THEN member_tiers.since ELSE EXCLUDED.since END,
    evaluated_at = coalesce(EXCLUDED.evaluated_at, member_tiers.evaluated_at)
"""

HISTORY = """
INSERT INTO tier_history (program_id, member_id, from_tier, to_tier, valid_until, reason, source, reference,
                          config_version, changed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""

MEMBER = """
SELECT m.id, t.tier, t.valid_until, t.manual_tier, t.manual_until, t.since
FROM members m LEFT JOIN member_tiers t ON t.member_id = m.id
WHERE m.program_id = $1 AND m.external_id = $2
"""

MEMBER_HISTORY = """
SELECT from_tier, to_tier, valid_until, reason, source, reference, config_version, changed_at, recorded_at
FROM tier_history WHERE member_id = $1 ORDER BY changed_at DESC, id DESC LIMIT $2
"""

# Members of a program in id order after $2 (keyset pagination of the evaluation job).
MEMBER_BATCH = "SELECT id FROM members WHERE program_id = $1 AND id > $2 ORDER BY id LIMIT $3"
PROGRAMS_WITH_TIERS = "SELECT DISTINCT program_id FROM tier_config_versions WHERE effective_from <= $1"
PROGRAM_TZ = "SELECT timezone FROM programs WHERE id = $1"
