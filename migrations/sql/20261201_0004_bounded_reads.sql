-- Reads on the hot paths whose cost does not grow with a member's history.

-- The lots under the activity policy, by member: the balance read sums them only for members who have
-- an activity date, instead of filtering every open lot of every member.
CREATE INDEX ix_lots_open_inactivity ON lots (member_id) WHERE remaining > 0 AND expires_on_inactivity;

-- A member's pending lots by the time they become available: the balance read's "pending points now due"
-- is a range, however many purchases are still inside their return window.
DROP INDEX ix_lots_pending_member;
CREATE INDEX ix_lots_pending_member ON lots (member_id, available_at) WHERE pending;

-- As in 0003, except that the points earned that local day and month are summed only when the rule
-- version in force caps them (they feed nothing else), so a purchase by a member with thousands of
-- purchases this month costs what one by a new member does.
--
-- issue-12: two more things, so the return type differs from 0003's (hence DROP, then CREATE):
-- * status 'occurred_at_too_old' when no rule version is in force at p_occurred_at although the program has
--   rule versions: the purchase (or event) predates the program's first rules, and version 0 (the built-in
--   default, no caps, no exclusions) never applies to a program that has rules. A replay of an order already
--   posted is never refused this way.
-- * rule_counts: the member's counts of the limited rules of the version in force, per period of their limits
--   (ledger_rule_counts, migration 1201), for the evaluator's limits; NULL when no rule has limits.
DROP FUNCTION ledger_purchase_context(uuid, text, boolean, text, timestamptz, text);
CREATE FUNCTION ledger_purchase_context(p_program uuid, p_member_ref text, p_enrol boolean,
                                        p_order_id text, p_occurred_at timestamptz, p_tz text)
RETURNS TABLE (status text, member_pk bigint, birthday date, first_purchase boolean, earned_today bigint,
               earned_this_month bigint, rule_version_id bigint, rules jsonb, existing_purchase_id bigint,
               existing_hash bytea, policy_version_id bigint, policy jsonb, tier_config_id bigint,
               tier_config_version integer, tier_config jsonb, tier_then text, tier text,
               tier_valid_until timestamptz, manual_tier text, manual_until timestamptz, rule_version integer,
               rule_counts jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_member bigint;
    v_birthday date;
    v_local timestamp := p_occurred_at AT TIME ZONE p_tz;
    v_day_start timestamptz := date_trunc('day', v_local) AT TIME ZONE p_tz;
    v_month_start timestamptz := date_trunc('month', v_local) AT TIME ZONE p_tz;
    v_existing purchases%ROWTYPE;
BEGIN
    SELECT m.id, m.birthday INTO v_member, v_birthday FROM members m
     WHERE m.program_id = p_program AND m.external_id = p_member_ref;
    IF NOT FOUND THEN
        IF NOT p_enrol THEN
            RETURN QUERY SELECT 'member_not_found'::text, NULL::bigint, NULL::date, NULL::boolean, NULL::bigint,
                                NULL::bigint, NULL::bigint, NULL::jsonb, NULL::bigint, NULL::bytea, NULL::bigint,
                                NULL::jsonb, NULL::bigint, NULL::integer, NULL::jsonb, NULL::text, NULL::text,
                                NULL::timestamptz, NULL::text, NULL::timestamptz, NULL::integer, NULL::jsonb;
            RETURN;
        END IF;
        INSERT INTO members (program_id, external_id) VALUES (p_program, p_member_ref)
        ON CONFLICT (program_id, external_id) DO NOTHING RETURNING id INTO v_member;
        IF v_member IS NOT NULL THEN
            INSERT INTO member_balances (member_id, program_id) VALUES (v_member, p_program);
        ELSE  -- enrolled by a concurrent request just now
            SELECT m.id, m.birthday INTO v_member, v_birthday FROM members m
             WHERE m.program_id = p_program AND m.external_id = p_member_ref;
        END IF;
    END IF;
    PERFORM 1 FROM member_balances WHERE member_id = v_member FOR UPDATE;

    SELECT * INTO v_existing FROM purchases WHERE program_id = p_program AND order_id = p_order_id;
    RETURN QUERY
    SELECT CASE WHEN v.id IS NULL AND v_existing.id IS NULL
                     AND EXISTS (SELECT 1 FROM earn_rule_versions r WHERE r.program_id = p_program)
                THEN 'occurred_at_too_old' ELSE 'ok' END::text,  -- issue-12 F2
           v_member, v_birthday,
           NOT EXISTS (SELECT 1 FROM purchases p WHERE p.member_id = v_member),
           CASE WHEN v.rules -> 'caps' ->> 'per_member_per_day' IS NULL THEN 0::bigint ELSE
               (SELECT coalesce(sum(p.points), 0)::bigint FROM purchases p
                 WHERE p.member_id = v_member AND p.occurred_at >= v_day_start
                   AND p.occurred_at < v_day_start + interval '1 day') END,
           CASE WHEN v.rules -> 'caps' ->> 'per_member_per_month' IS NULL THEN 0::bigint ELSE
               (SELECT coalesce(sum(p.points), 0)::bigint FROM purchases p
                 WHERE p.member_id = v_member AND p.occurred_at >= v_month_start
                   AND p.occurred_at < v_month_start + interval '1 month') END,
           v.id, v.rules, v_existing.id, v_existing.content_hash,
           x.id, x.policy, t.id, t.version, t.config,
           (SELECT h.to_tier FROM tier_history h WHERE h.member_id = v_member AND h.changed_at <= p_occurred_at
             ORDER BY h.changed_at DESC, h.id DESC LIMIT 1),
           mt.tier, mt.valid_until, mt.manual_tier, mt.manual_until, coalesce(v.version, 0),
           -- issue-12: counts only when a rule of the version has limits (a rules[*].limits array)
           CASE WHEN v.rules @? '$.rules[*] ? (@.limits.type() == "array")'
                THEN ledger_rule_counts(v_member, v.rules, p_occurred_at, p_tz) END
      FROM (SELECT 1) one
      LEFT JOIN LATERAL (
          SELECT r.id, r.rules, r.version FROM earn_rule_versions r
           WHERE r.program_id = p_program AND r.effective_from <= p_occurred_at
           ORDER BY r.effective_from DESC, r.version DESC LIMIT 1
      ) v ON true
      LEFT JOIN LATERAL (
          SELECT e.id, e.policy FROM expiration_policy_versions e
           WHERE e.program_id = p_program AND e.effective_from <= p_occurred_at
           ORDER BY e.effective_from DESC, e.version DESC LIMIT 1
      ) x ON true
      LEFT JOIN LATERAL (
          SELECT c.id, c.version, c.config FROM tier_config_versions c
           WHERE c.program_id = p_program AND c.effective_from <= p_occurred_at
           ORDER BY c.effective_from DESC, c.version DESC LIMIT 1
      ) t ON true
      LEFT JOIN member_tiers mt ON mt.member_id = v_member;
END $$;
