-- A purchase answers in one round trip: the award posted, the tier metric after it and the balance.
--
-- 1. ledger_tier_metrics: the tier metric as a SQL function (inlined by the planner), for the purchase
--    function below and for app/tiers (the evaluation job and tier reads).
--
-- The qualifying metric of members (p_members) over [p_start, p_end]: points (net of clawbacks; without
-- order bonuses unless p_bonuses), spend (eligible amount) and purchase count.
--
-- From the daily totals (member_purchase_days, UTC days) of the days from start's to end's, minus the
-- purchases of those two days outside [start, end]: at most a window's days per member, plus the purchases
-- of two partial days (none after `end` when the purchase being posted is the latest). tests/test_tiers.py
-- checks it against the plain sum over `purchases`, its definition.
CREATE FUNCTION ledger_tier_metrics(p_members bigint[], p_start timestamptz, p_end timestamptz, p_bonuses boolean)
RETURNS TABLE (member_id bigint, points numeric, spend numeric, purchases bigint)
LANGUAGE sql STABLE AS $$
    WITH w AS (
        SELECT (p_start AT TIME ZONE 'UTC')::date AS first_day,
               (p_end AT TIME ZONE 'UTC')::date AS last_day
    ), edge AS (
        SELECT first_day::timestamp AT TIME ZONE 'UTC' AS first_day_start,
               (last_day + 1)::timestamp AT TIME ZONE 'UTC' AS after_last_day, first_day, last_day
        FROM w
    )
    SELECT m.member_id,
           (coalesce(d.points, 0) - coalesce(x.points, 0))::numeric AS points,
           (coalesce(d.spend, 0) - coalesce(x.spend, 0))::numeric AS spend,
           (coalesce(d.purchases, 0) - coalesce(x.purchases, 0))::bigint AS purchases
    FROM unnest(p_members) AS m(member_id)
    CROSS JOIN edge
    LEFT JOIN LATERAL (
        SELECT sum(CASE WHEN p_bonuses THEN d.points ELSE d.qualifying_points END) AS points, sum(d.spend) AS spend,
               sum(d.purchases) AS purchases
        FROM member_purchase_days d
        WHERE d.member_id = m.member_id AND d.day >= edge.first_day AND d.day <= edge.last_day
    ) d ON true
    LEFT JOIN LATERAL (
        SELECT sum(CASE WHEN p_bonuses THEN p.points - p.clawed_back_points
                        ELSE greatest(p.qualifying_points - p.qualifying_clawed_back, 0) END) AS points,
               sum(p.eligible_amount) AS spend, count(*) AS purchases
        FROM (SELECT * FROM purchases p WHERE p.member_id = m.member_id
                AND p.occurred_at >= edge.first_day_start AND p.occurred_at < p_start
              UNION ALL
              SELECT * FROM purchases p WHERE p.member_id = m.member_id
                AND p.occurred_at > p_end AND p.occurred_at < edge.after_last_day) p
    ) x ON true
$$;

-- 2. ledger_purchase: ledger_earn, then (statements after it, so they see it; the member's lock still held)
--    the member's tier metric over [p_window_start, p_window_end] when the program has tiers, and the
--    balance. The caller decides the tier from the metric; if the tier changes, the answer's tier is the new
--    one (nothing else in the balance depends on it).
CREATE FUNCTION ledger_purchase(p_program uuid, p_member bigint, p_order_id text, p_occurred_at timestamptz,
                                p_hash bytea, p_purchase jsonb, p_rule_version bigint, p_award jsonb,
                                p_points bigint, p_available_at timestamptz, p_expires_at timestamptz,
                                p_expires_on_inactivity boolean, p_activity_expires_at timestamptz,
                                p_qualifying_points bigint, p_eligible_amount numeric, p_member_ref text,
                                p_window_start timestamptz, p_window_end timestamptz, p_bonuses boolean)
RETURNS TABLE (purchase_id bigint, entry_id bigint, lot_id bigint, metric_points numeric, metric_spend numeric,
               metric_purchases bigint, member_id text, available bigint, pending bigint, held bigint,
               lifetime_earned bigint, lifetime_redeemed bigint, next_expiry_at timestamptz,
               next_expiry_points bigint, tier text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    e record;
BEGIN
    SELECT * INTO e FROM ledger_earn(p_program, p_member, p_order_id, p_occurred_at, p_hash, p_purchase,
                                     p_rule_version, p_award, p_points, p_available_at, p_expires_at,
                                     p_expires_on_inactivity, p_activity_expires_at, p_qualifying_points,
                                     p_eligible_amount);
    RETURN QUERY
    SELECT e.purchase_id, e.entry_id, e.lot_id, t.points, t.spend, t.purchases, b.member_id, b.available,
           b.pending, b.held, b.lifetime_earned, b.lifetime_redeemed, b.next_expiry_at, b.next_expiry_points,
           b.tier
      FROM ledger_balance(p_program, p_member_ref) b
      LEFT JOIN ledger_tier_metrics(ARRAY[p_member], p_window_start, p_window_end, p_bonuses) t
             ON p_window_start IS NOT NULL;
END $$;
