-- Earning: purchases (points by the earn rules, possibly pending through a return window), returns
-- (clawback), custom events. The rules are evaluated in Python (app/earning/rules.py, a pure function);
-- these functions gather its inputs under the member's lock and post its result.

-- Find (or enrol) the member, take its lock, and gather what the evaluation needs: birthday, whether
-- this is a first purchase, purchase points already earned that local day and month (caps), the rule
-- version, expiration policy and tier configuration in force at p_occurred_at, the member's tier then
-- and now, and any purchase already posted with this order id.
CREATE FUNCTION ledger_purchase_context(p_program uuid, p_member_ref text, p_enrol boolean, p_order_id text,
                                        p_occurred_at timestamptz, p_tz text)
RETURNS TABLE (status text, member_pk bigint, birthday date, first_purchase boolean, earned_today bigint,
               earned_this_month bigint, rule_version_id bigint, rules jsonb, existing_purchase_id bigint,
               existing_hash bytea, policy_version_id bigint, policy jsonb, tier_config_id bigint,
               tier_config_version integer, tier_config jsonb, tier_then text, tier text,
               tier_valid_until timestamptz, manual_tier text, manual_until timestamptz, rule_version integer)
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
                                NULL::timestamptz, NULL::text, NULL::timestamptz, NULL::integer;
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
    SELECT 'ok'::text, v_member, v_birthday,
           NOT EXISTS (SELECT 1 FROM purchases p WHERE p.member_id = v_member),
           (SELECT coalesce(sum(p.points), 0)::bigint FROM purchases p
             WHERE p.member_id = v_member AND p.occurred_at >= v_day_start
               AND p.occurred_at < v_day_start + interval '1 day'),
           (SELECT coalesce(sum(p.points), 0)::bigint FROM purchases p
             WHERE p.member_id = v_member AND p.occurred_at >= v_month_start
               AND p.occurred_at < v_month_start + interval '1 month'),
           v.id, v.rules, v_existing.id, v_existing.content_hash,
           x.id, x.policy, t.id, t.version, t.config,
           (SELECT h.to_tier FROM tier_history h WHERE h.member_id = v_member AND h.changed_at <= p_occurred_at
             ORDER BY h.changed_at DESC, h.id DESC LIMIT 1),
           mt.tier, mt.valid_until, mt.manual_tier, mt.manual_until, coalesce(v.version, 0)
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

-- A qualifying activity under the activity expiry policy pushes the member's activity date out. Points
-- already due are expired first, so an activity never revives points that had lapsed.
CREATE FUNCTION ledger_note_activity(p_member bigint, p_activity_expires_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_activity_expires_at IS NULL THEN
        RETURN;
    END IF;
    IF ledger_has_due(p_member, now()) THEN
        PERFORM ledger_expire_member(p_member, now());
    END IF;
    UPDATE member_balances
       SET activity_expires_at = greatest(coalesce(activity_expires_at, p_activity_expires_at), p_activity_expires_at)
     WHERE member_id = p_member;
END $$;

-- Post a purchase's award (the member's lock is held from ledger_purchase_context): an 'earn' entry
-- from `issued` to the member's pending or available account, its lot, and the purchase record.
CREATE FUNCTION ledger_earn(p_program uuid, p_member bigint, p_order_id text, p_occurred_at timestamptz,
                            p_hash bytea, p_purchase jsonb, p_rule_version bigint, p_award jsonb,
                            p_points bigint, p_available_at timestamptz, p_expires_at timestamptz,
                            p_expires_on_inactivity boolean, p_activity_expires_at timestamptz,
                            p_qualifying_points bigint, p_eligible_amount numeric)
RETURNS TABLE (purchase_id bigint, entry_id bigint, lot_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_pending boolean := p_available_at > now();
    v_entry bigint;
    v_lot bigint;
    v_before bigint;
    v_purchase bigint;
BEGIN
    PERFORM ledger_note_activity(p_member, p_activity_expires_at);
    IF p_points > 0 THEN
        INSERT INTO entries (program_id, member_id, kind, occurred_at, external_ref, description, metadata)
        VALUES (p_program, p_member, 'earn', p_occurred_at, p_order_id, 'purchase',
                jsonb_build_object('order_id', p_order_id, 'rule_version_id', p_rule_version))
        RETURNING id INTO v_entry;
        INSERT INTO postings (entry_id, program_id, member_id, account, points) VALUES
            (v_entry, p_program, p_member, 'issued', -p_points),
            (v_entry, p_program, p_member, CASE WHEN v_pending THEN 'pending' ELSE 'available' END, p_points);
        UPDATE member_balances mb
           SET available = mb.available + CASE WHEN v_pending THEN 0 ELSE p_points END,
               pending = mb.pending + CASE WHEN v_pending THEN p_points ELSE 0 END,
               lifetime_earned = mb.lifetime_earned + p_points
         WHERE mb.member_id = p_member
        RETURNING mb.available - CASE WHEN v_pending THEN 0 ELSE p_points END INTO v_before;
        v_lot := ledger_credit_lot(p_program, p_member, v_entry, p_points, v_before, p_available_at,
                                   p_expires_at, v_pending, p_expires_on_inactivity);
    END IF;
    INSERT INTO purchases (program_id, member_id, order_id, occurred_at, content_hash, purchase, rule_version_id,
                           award, points, qualifying_points, eligible_amount, entry_id, lot_id)
    VALUES (p_program, p_member, p_order_id, p_occurred_at, p_hash, p_purchase, p_rule_version, p_award,
            p_points, p_qualifying_points, p_eligible_amount, v_entry, v_lot)
    RETURNING id INTO v_purchase;
    RETURN QUERY SELECT v_purchase, v_entry, v_lot;
END $$;

-- Take the member's lock for a return and gather the purchase, its earlier returns and any return
-- already posted with this return id.
CREATE FUNCTION ledger_return_context(p_program uuid, p_order_id text, p_return_id text)
RETURNS TABLE (status text, purchase_id bigint, member_ref text, purchase jsonb, award jsonb,
               earlier_results jsonb, existing_return_id bigint, existing_hash bytea)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p purchases%ROWTYPE;
BEGIN
    SELECT * INTO p FROM purchases WHERE program_id = p_program AND order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'purchase_not_found'::text, NULL::bigint, NULL::text, NULL::jsonb, NULL::jsonb,
                            NULL::jsonb, NULL::bigint, NULL::bytea;
        RETURN;
    END IF;
    PERFORM 1 FROM member_balances WHERE member_id = p.member_id FOR UPDATE;
    RETURN QUERY
    SELECT 'ok'::text, p.id, (SELECT m.external_id FROM members m WHERE m.id = p.member_id), p.purchase, p.award,
           (SELECT coalesce(jsonb_agg(jsonb_build_object('request', r.request, 'result', r.result) ORDER BY r.id),
                            '[]'::jsonb)
              FROM purchase_returns r WHERE r.purchase_id = p.id),
           x.id, x.content_hash
      FROM (SELECT 1) one
      LEFT JOIN purchase_returns x ON x.purchase_id = p.id AND x.return_id = p_return_id;
END $$;

-- Claw back p_points of a purchase's award (the member's lock is held from ledger_return_context):
-- first from the purchase's own lot while it is pending, else from its own lot's spendable remainder,
-- then from other available points soonest-expiring first. What is left is either taken anyway,
-- leaving `available` negative (p_policy 'allow'; later credits repay it first), or recorded as a
-- shortfall and not taken (p_policy 'clamp').
--
-- issue-12: p_occurred_at, when the return happened (an offline POS sends returns late; NULL: now). The clawback
-- entry is dated then, and the return is judged by it: if the purchase's return window had already ended at
-- p_occurred_at, its points were available then, so a lot still flagged pending (the activation job has not run)
-- is activated first and the points are taken as available; a return inside the window takes them from the
-- purchase's own pending lot while it is still pending.
CREATE FUNCTION ledger_clawback(p_program uuid, p_purchase bigint, p_return_id text, p_hash bytea,
                                p_request jsonb, p_result jsonb, p_points bigint, p_policy text,
                                p_line_points bigint, p_occurred_at timestamptz DEFAULT NULL)
RETURNS TABLE (return_pk bigint, entry_id bigint, clawed bigint, shortfall bigint, occurred_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_at timestamptz := coalesce(p_occurred_at, now());  -- issue-12
    p purchases%ROWTYPE;
    l lots%ROWTYPE;
    v_entry bigint;
    v_available bigint;
    v_from_pending bigint := 0;   -- taken from the purchase's own pending lot
    v_from_lots bigint;           -- taken from spendable lots: the purchase's own lot first
    v_negative bigint := 0;       -- taken anyway, leaving available below zero ('allow')
    v_shortfall bigint := 0;      -- not taken ('clamp')
    v_rest bigint;
    v_return bigint;
BEGIN
    SELECT * INTO p FROM purchases WHERE id = p_purchase AND program_id = p_program FOR UPDATE;
    SELECT * INTO l FROM lots WHERE id = p.lot_id;
    IF FOUND AND l.pending AND l.available_at <= v_at THEN  -- issue-12: the window had ended at the return
        PERFORM ledger_activate_due(p.member_id, now());
        SELECT * INTO l FROM lots WHERE id = p.lot_id;
    END IF;
    IF FOUND AND l.pending THEN
        v_from_pending := least(l.remaining, p_points);
    END IF;
    SELECT available INTO v_available FROM member_balances WHERE member_id = p.member_id;
    v_from_lots := least(p_points - v_from_pending, greatest(v_available, 0));
    v_rest := p_points - v_from_pending - v_from_lots;
    IF p_policy = 'clamp' THEN
        v_shortfall := v_rest;
    ELSE
        v_negative := v_rest;
    END IF;

    IF v_from_pending + v_from_lots + v_negative > 0 THEN
        INSERT INTO entries (program_id, member_id, kind, occurred_at, external_ref, description, metadata)
        VALUES (p_program, p.member_id, 'clawback', v_at, p.order_id || '/' || p_return_id, 'return',
                jsonb_build_object('order_id', p.order_id, 'return_id', p_return_id, 'shortfall', v_shortfall))
        RETURNING id INTO v_entry;
        IF v_from_pending > 0 THEN
            UPDATE lots SET remaining = remaining - v_from_pending WHERE id = l.id;
            INSERT INTO lot_allocations (entry_id, lot_id, points) VALUES (v_entry, l.id, v_from_pending);
        END IF;
        IF v_from_lots > 0 THEN
            v_rest := ledger_consume_lots(p.member_id, v_entry, v_from_lots, p.entry_id);
            IF v_rest > 0 THEN
                v_rest := ledger_consume_lots(p.member_id, v_entry, v_rest);
            END IF;
            IF v_rest <> 0 THEN
                RAISE EXCEPTION 'lots of member % do not cover its available balance', p.member_id
                    USING ERRCODE = 'data_corrupted';
            END IF;
        END IF;
        INSERT INTO postings (entry_id, program_id, member_id, account, points)
        SELECT v_entry, p_program, p.member_id, x.account, x.points
          FROM (VALUES ('issued', v_from_pending + v_from_lots + v_negative), ('pending', -v_from_pending),
                       ('available', -(v_from_lots + v_negative))) AS x(account, points)
         WHERE x.points <> 0;
        UPDATE member_balances
           SET pending = pending - v_from_pending, available = available - v_from_lots - v_negative,
               lifetime_earned = lifetime_earned - v_from_pending - v_from_lots - v_negative
         WHERE member_id = p.member_id;
        UPDATE purchases SET clawed_back_points = clawed_back_points + v_from_pending + v_from_lots + v_negative
         WHERE id = p.id;
    END IF;
    -- the tier metric counts line points only: what came back stops qualifying, bonuses aside
    UPDATE purchases SET qualifying_clawed_back = qualifying_clawed_back + p_line_points WHERE id = p.id;
    INSERT INTO purchase_returns (purchase_id, return_id, content_hash, request, result, points, shortfall, entry_id,
                                  occurred_at)
    VALUES (p.id, p_return_id, p_hash, p_request, p_result, p_points - v_shortfall, v_shortfall, v_entry, v_at)
    RETURNING id INTO v_return;
    RETURN QUERY SELECT v_return, v_entry, p_points - v_shortfall, v_shortfall, v_at;
END $$;

-- Custom events: the member's lock, its earlier awards of this event (for per-day/month/ever limits),
-- the rule version in force, and any event already posted with this event id.
CREATE FUNCTION ledger_event_context(p_program uuid, p_member_ref text, p_enrol boolean, p_event_id text,
                                     p_name text, p_occurred_at timestamptz, p_tz text)
RETURNS TABLE (status text, member_pk bigint, count_today integer, count_this_month integer, count_ever integer,
               rule_version_id bigint, rules jsonb, existing_event_id bigint, policy_version_id bigint, policy jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c record;
    v_local timestamp := p_occurred_at AT TIME ZONE p_tz;
    v_day_start timestamptz := date_trunc('day', v_local) AT TIME ZONE p_tz;
    v_month_start timestamptz := date_trunc('month', v_local) AT TIME ZONE p_tz;
BEGIN
    SELECT * INTO c FROM ledger_purchase_context(p_program, p_member_ref, p_enrol, '', p_occurred_at, p_tz);
    IF c.status <> 'ok' THEN
        RETURN QUERY SELECT c.status, NULL::bigint, NULL::integer, NULL::integer, NULL::integer,
                            NULL::bigint, NULL::jsonb, NULL::bigint, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT 'ok'::text, c.member_pk,
           count(*) FILTER (WHERE e.occurred_at >= v_day_start AND e.occurred_at < v_day_start + interval '1 day')::integer,
           count(*) FILTER (WHERE e.occurred_at >= v_month_start
                              AND e.occurred_at < v_month_start + interval '1 month')::integer,
           count(*)::integer,
           c.rule_version_id, c.rules,
           (SELECT x.id FROM member_events x WHERE x.program_id = p_program AND x.event_id = p_event_id),
           c.policy_version_id, c.policy
      FROM member_events e
     WHERE e.member_id = c.member_pk AND e.name = p_name AND e.points > 0;
END $$;

-- Post a custom event's points: immediately available (events have no return window).
CREATE FUNCTION ledger_event(p_program uuid, p_member bigint, p_event_id text, p_name text,
                             p_occurred_at timestamptz, p_points bigint, p_expires_at timestamptz, p_metadata jsonb,
                             p_expires_on_inactivity boolean, p_activity_expires_at timestamptz)
RETURNS TABLE (event_pk bigint, entry_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_entry bigint;
    v_before bigint;
    v_event bigint;
BEGIN
    PERFORM ledger_note_activity(p_member, p_activity_expires_at);
    IF p_points > 0 THEN
        INSERT INTO entries (program_id, member_id, kind, occurred_at, external_ref, description, metadata)
        VALUES (p_program, p_member, 'event', p_occurred_at, p_event_id, p_name,
                p_metadata || jsonb_build_object('event', p_name))
        RETURNING id INTO v_entry;
        INSERT INTO postings (entry_id, program_id, member_id, account, points) VALUES
            (v_entry, p_program, p_member, 'issued', -p_points),
            (v_entry, p_program, p_member, 'available', p_points);
        UPDATE member_balances mb SET available = mb.available + p_points,
                                      lifetime_earned = mb.lifetime_earned + p_points
         WHERE mb.member_id = p_member
        RETURNING mb.available - p_points INTO v_before;
        PERFORM ledger_credit_lot(p_program, p_member, v_entry, p_points, v_before, p_occurred_at, p_expires_at, false,
                                  p_expires_on_inactivity);
    END IF;
    INSERT INTO member_events (program_id, member_id, event_id, name, occurred_at, points, entry_id)
    VALUES (p_program, p_member, p_event_id, p_name, p_occurred_at, p_points, v_entry)
    RETURNING id INTO v_event;
    RETURN QUERY SELECT v_event, v_entry;
END $$;

-- The expiry sweep: up to p_limit members after p_after with lots due by p_as_of, locked in id order (so a
-- crashed run resumes where it stopped and two runs cannot deadlock), expired set-based: one 'expire'
-- entry per member for exactly the remaining points of its due lots (the same effect as
-- ledger_expire_member, which serves the one-member lazy path). One call is one batch, committed by the
-- caller; a rerun finds nothing left to expire.
CREATE FUNCTION ledger_expire_batch(p_as_of timestamptz, p_after bigint, p_limit integer)
RETURNS TABLE (members integer, lots integer, points bigint, last_member bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_members bigint[];
BEGIN
    SELECT array_agg(c.member_id ORDER BY c.member_id) INTO v_members FROM (
        SELECT u.member_id FROM (
            (SELECT DISTINCT l.member_id FROM lots l
              WHERE l.remaining > 0 AND NOT l.pending AND l.expires_at IS NOT NULL AND l.expires_at <= p_as_of
                AND l.member_id > p_after
              ORDER BY l.member_id LIMIT p_limit)
            UNION
            (SELECT b.member_id FROM member_balances b
              WHERE b.activity_expires_at <= p_as_of AND b.available > 0 AND b.member_id > p_after
              ORDER BY b.member_id LIMIT p_limit)
        ) u ORDER BY u.member_id LIMIT p_limit
    ) c;
    IF v_members IS NULL THEN
        RETURN QUERY SELECT 0, 0, 0::bigint, NULL::bigint;
        RETURN;
    END IF;
    PERFORM 1 FROM member_balances WHERE member_id = ANY (v_members) ORDER BY member_id FOR UPDATE;

    RETURN QUERY
    WITH due AS (
        SELECT l.id, l.member_id, l.program_id, l.remaining FROM lots l
          JOIN member_balances b ON b.member_id = l.member_id
         WHERE l.member_id = ANY (v_members) AND l.remaining > 0 AND NOT l.pending
           AND ((NOT l.expires_on_inactivity AND l.expires_at <= p_as_of)
                OR (l.expires_on_inactivity AND b.activity_expires_at <= p_as_of))
    ), per_member AS (
        SELECT d.member_id, d.program_id, sum(d.remaining)::bigint AS pts, count(*)::integer AS n
          FROM due d GROUP BY d.member_id, d.program_id
    ), ent AS (
        INSERT INTO entries (program_id, member_id, kind, occurred_at, description, metadata)
        SELECT pm.program_id, pm.member_id, 'expire', p_as_of, 'points expired', jsonb_build_object('lots', pm.n)
          FROM per_member pm ORDER BY pm.member_id
        RETURNING id, member_id
    ), posted AS (
        INSERT INTO postings (entry_id, program_id, member_id, account, points)
        SELECT e.id, pm.program_id, pm.member_id, x.account, x.points
          FROM ent e JOIN per_member pm ON pm.member_id = e.member_id
         CROSS JOIN LATERAL (VALUES ('available', -pm.pts), ('expired', pm.pts)) AS x(account, points)
    ), allocated AS (
        INSERT INTO lot_allocations (entry_id, lot_id, points)
        SELECT e.id, d.id, d.remaining FROM due d JOIN ent e ON e.member_id = d.member_id
    ), emptied AS (
        UPDATE lots SET remaining = 0 FROM due WHERE lots.id = due.id
    ), debited AS (
        UPDATE member_balances b SET available = b.available - pm.pts FROM per_member pm
         WHERE b.member_id = pm.member_id
    )
    SELECT cardinality(v_members), coalesce((SELECT sum(pm.n) FROM per_member pm), 0)::integer,
           coalesce((SELECT sum(pm.pts) FROM per_member pm), 0)::bigint, v_members[cardinality(v_members)];
END $$;

-- Facts of earning and tiers are append-only like the ledger itself.
CREATE TRIGGER tier_history_append_only BEFORE UPDATE OR DELETE ON tier_history
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER purchase_returns_append_only BEFORE UPDATE OR DELETE ON purchase_returns
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER member_events_append_only BEFORE UPDATE OR DELETE ON member_events
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
