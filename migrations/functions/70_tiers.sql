-- Tiers: the qualifying metric and the member's tier state. The qualification rules themselves are Python
-- (app/tiers/policy.py); these functions read what they need and record what they decide.

-- The metric of members (p_members) over [p_start, p_end]: points (net of clawbacks; without order bonuses
-- unless p_bonuses), spend (eligible amount) and purchase count.
--
-- From the daily totals (member_purchase_days, UTC days) of the days from start's to end's, minus the purchases
-- of those two days outside [start, end]: at most a window's days per member, plus the purchases of two partial
-- days. tests/test_tiers.py checks it against the plain sum over `purchases`, its definition.
CREATE FUNCTION ledger.tier_metrics(p_members bigint[], p_start timestamptz, p_end timestamptz, p_bonuses boolean)
RETURNS TABLE (member_pk bigint, points numeric, spend numeric, purchases bigint)
LANGUAGE sql STABLE AS $$
    WITH w AS (
        SELECT (p_start AT TIME ZONE 'UTC')::date AS first_day, (p_end AT TIME ZONE 'UTC')::date AS last_day
    ), edge AS (
        SELECT first_day::timestamp AT TIME ZONE 'UTC' AS first_day_start,
               (last_day + 1)::timestamp AT TIME ZONE 'UTC' AS after_last_day, first_day, last_day
        FROM w
    )
    SELECT m.member_pk,
           (coalesce(d.points, 0) - coalesce(x.points, 0))::numeric,
           (coalesce(d.spend, 0) - coalesce(x.spend, 0))::numeric,
           (coalesce(d.purchases, 0) - coalesce(x.purchases, 0))::bigint
    FROM unnest(p_members) AS m(member_pk)
    CROSS JOIN edge
    LEFT JOIN LATERAL (
        SELECT sum(CASE WHEN p_bonuses THEN d.points ELSE d.qualifying_points END) AS points, sum(d.spend) AS spend,
               sum(d.purchases) AS purchases
        FROM member_purchase_days d
        WHERE d.member_id = m.member_pk AND d.day >= edge.first_day AND d.day <= edge.last_day
    ) d ON true
    LEFT JOIN LATERAL (
        SELECT sum(CASE WHEN p_bonuses THEN p.points - p.clawed_back_points
                        ELSE greatest(p.qualifying_points - p.qualifying_clawed_back, 0) END) AS points,
               sum(p.eligible_amount) AS spend, count(*) AS purchases
        FROM (SELECT * FROM purchases p WHERE p.member_id = m.member_pk
                AND p.occurred_at >= edge.first_day_start AND p.occurred_at < p_start
              UNION ALL
              SELECT * FROM purchases p WHERE p.member_id = m.member_pk
                AND p.occurred_at > p_end AND p.occurred_at < edge.after_last_day) p
    ) x ON true
$$;

-- Record a member's tier state, and, when the tier changed (p_reason not NULL), its history row. The member's
-- lock is held by the caller. Bumps the member's facts version (purchases evaluate with the tier).
CREATE FUNCTION ledger.save_tier(
    p_program uuid, p_member_pk bigint, p_tier text, p_valid_until timestamptz, p_manual_tier text,
    p_manual_until timestamptz, p_at timestamptz, p_evaluated_at timestamptz,
    p_from_tier text, p_reason text, p_source text, p_reference text, p_config_version integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO member_tiers AS t (member_id, program_id, tier, valid_until, manual_tier, manual_until, since,
                                   evaluated_at)
    VALUES (p_member_pk, p_program, p_tier, p_valid_until, p_manual_tier, p_manual_until, p_at, p_evaluated_at)
    ON CONFLICT (member_id) DO UPDATE SET
        tier = EXCLUDED.tier, valid_until = EXCLUDED.valid_until, manual_tier = EXCLUDED.manual_tier,
        manual_until = EXCLUDED.manual_until,
        since = CASE WHEN t.tier = EXCLUDED.tier THEN t.since ELSE EXCLUDED.since END,
        evaluated_at = coalesce(EXCLUDED.evaluated_at, t.evaluated_at);
    IF p_reason IS NOT NULL THEN
        INSERT INTO tier_history (program_id, member_id, from_tier, to_tier, valid_until, reason, source, reference,
                                  config_version, changed_at)
        VALUES (p_program, p_member_pk, p_from_tier, p_tier, p_valid_until, p_reason, p_source, p_reference,
                p_config_version, p_at);
        PERFORM ledger.emit(p_program, p_member_pk, 'tier.changed', p_at, json_build_object(
            'member_id', (SELECT m.external_id FROM members m WHERE m.id = p_member_pk),
            'from_tier', p_from_tier, 'to_tier', p_tier, 'valid_until', ledger.ts(p_valid_until), 'reason', p_reason,
            'source', p_source, 'reference', CASE WHEN p_source = 'manual' THEN NULL ELSE p_reference END,
            'config_version', p_config_version, 'changed_at', ledger.ts(p_at)));
    END IF;
    UPDATE member_balances SET facts_version = facts_version + 1 WHERE member_id = p_member_pk;
END $$;

CREATE TRIGGER tier_history_append_only BEFORE UPDATE OR DELETE ON tier_history
    FOR EACH ROW EXECUTE FUNCTION ledger.forbid_change();
