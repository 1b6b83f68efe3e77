-- Earning from purchases: the evaluation is Python (app/earning/rules.py, a pure function); these functions
-- read the facts it needs (ledger.purchase_context, no lock) and post its result (ledger.purchase), checking
-- under the member's lock that those facts have not changed meanwhile (member_balances.facts_version, bumped by
-- every purchase, return, event and tier change of the member): if they have, the answer is 'stale' and the
-- service evaluates again. A purchase is two round trips, and the member's lock is held for one statement.

-- Per member and UTC day of occurred_at, the sums the tier metric needs (member_purchase_days): a materialised
-- aggregate of `purchases`, kept by this trigger in the transaction that changes a purchase, under the member's
-- lock, and recomputed by verify.
CREATE FUNCTION ledger.purchase_days_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_points bigint := NEW.points - NEW.clawed_back_points;
    v_qualifying bigint := greatest(NEW.qualifying_points - NEW.qualifying_clawed_back, 0);
    v_spend numeric := NEW.eligible_amount;
    v_count integer := 1;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        v_points := v_points - (OLD.points - OLD.clawed_back_points);
        v_qualifying := v_qualifying - greatest(OLD.qualifying_points - OLD.qualifying_clawed_back, 0);
        v_spend := v_spend - OLD.eligible_amount;
        v_count := 0;
        IF v_points = 0 AND v_qualifying = 0 AND v_spend = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO member_purchase_days AS d (member_id, day, points, qualifying_points, spend, purchases)
    VALUES (NEW.member_id, (NEW.occurred_at AT TIME ZONE 'UTC')::date, v_points, v_qualifying, v_spend, v_count)
    ON CONFLICT (member_id, day) DO UPDATE
       SET points = d.points + EXCLUDED.points, qualifying_points = d.qualifying_points + EXCLUDED.qualifying_points,
           spend = d.spend + EXCLUDED.spend, purchases = d.purchases + EXCLUDED.purchases;
    RETURN NULL;
END $$;

CREATE TRIGGER purchases_days AFTER INSERT OR UPDATE ON purchases
    FOR EACH ROW EXECUTE FUNCTION ledger.purchase_days_apply();
-- purchase_returns is append-only, like the ledger, with one exception: erasure (app/earning/erasure.py) may
-- rewrite `result`, the explanation of a clawback, to remove what names a birthday rule, and nothing else; only
-- inside a transaction that says so (SET LOCAL points_ledger.erasure = 'on'), and only when every number stays: the
-- points of the result and of every line and bonus in it.
CREATE FUNCTION ledger.forbid_change_but_redaction() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('points_ledger.erasure', true) = 'on'
       AND (NEW.id, NEW.purchase_id, NEW.return_id, NEW.content_hash, NEW.request::text, NEW.points, NEW.shortfall,
            NEW.entry_id, NEW.created_at, NEW.occurred_at)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.purchase_id, OLD.return_id, OLD.content_hash, OLD.request::text, OLD.points, OLD.shortfall,
            OLD.entry_id, OLD.created_at, OLD.occurred_at)
       AND (NEW.result::jsonb - 'order_bonuses' - 'released_rule_ids')
           = (OLD.result::jsonb - 'order_bonuses' - 'released_rule_ids')
       AND (SELECT array_agg(b - 'rule_id' - 'kind' ORDER BY n)
              FROM jsonb_array_elements(NEW.result::jsonb -> 'order_bonuses') WITH ORDINALITY AS x(b, n))
           IS NOT DISTINCT FROM
           (SELECT array_agg(b - 'rule_id' - 'kind' ORDER BY n)
              FROM jsonb_array_elements(OLD.result::jsonb -> 'order_bonuses') WITH ORDINALITY AS x(b, n))
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'purchase_returns is append-only (erasure may only redact the names in result)'
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER purchase_returns_append_only BEFORE UPDATE OR DELETE ON purchase_returns
    FOR EACH ROW EXECUTE FUNCTION ledger.forbid_change_but_redaction();

-- The member's counts of the limited rules of a rule set (p_rules, a rule set document), per period of each rule's
-- limits, for the purchase at p_occurred_at: {"<rule id>": {"day": n, "year": n, ...}}; NULL when no rule has
-- limits. A count is the member's purchases the rule applied to (member_rule_awards) in that local calendar day,
-- month or year of p_occurred_at in p_tz ("ever": all of them), less those a return took all of it back from
-- (released). Each count is a range of ix_member_rule_awards_counted. Read by ledger.purchase_context, for the
-- purchase and its quote; the post's facts-version check makes concurrent purchases count each other.
CREATE FUNCTION ledger.rule_counts(p_member_pk bigint, p_rules jsonb, p_occurred_at timestamptz, p_tz text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_object_agg(r.id, r.counts)
    FROM (
        SELECT rule ->> 'id' AS id,
               (SELECT jsonb_object_agg(l.per, (
                        SELECT count(*) FROM member_rule_awards a
                         WHERE a.member_id = p_member_pk AND a.rule_id = rule ->> 'id' AND NOT a.released
                           AND a.occurred_at >= b.period_start AND a.occurred_at < b.period_end))
                  FROM jsonb_to_recordset(rule -> 'limits') AS l(per text, times bigint)
                 CROSS JOIN LATERAL (
                     SELECT CASE WHEN l.per = 'ever' THEN '-infinity'::timestamptz
                                 ELSE date_trunc(l.per, p_occurred_at AT TIME ZONE p_tz) AT TIME ZONE p_tz END
                                AS period_start,
                            CASE WHEN l.per = 'ever' THEN 'infinity'::timestamptz
                                 ELSE (date_trunc(l.per, p_occurred_at AT TIME ZONE p_tz)
                                       + ('1 ' || l.per)::interval) AT TIME ZONE p_tz END AS period_end
                 ) b) AS counts
          FROM jsonb_array_elements(coalesce(p_rules -> 'rules', '[]'::jsonb)) AS rule
         WHERE CASE WHEN jsonb_typeof(rule -> 'limits') = 'array' THEN jsonb_array_length(rule -> 'limits') > 0
                    ELSE false END
    ) r
$$;

-- What the evaluation of a purchase needs to know about its member, as of p_occurred_at. The typed contract
-- between this function and app/earning/context.py (PurchaseContext): the quote reads it too.
CREATE TYPE ledger.purchase_context AS (
    member_pk bigint,          -- NULL: not a member yet (the post enrols it)
    member_status text,
    birthday date,
    facts_version bigint,      -- the post checks it is unchanged
    first_purchase boolean,
    earned_today bigint,       -- purchase points already earned in the local day / month (0 unless asked for)
    earned_this_month bigint,
    tier_then text,            -- the tier held at occurred_at (NULL: none recorded)
    tier text,                 -- the tier state now
    tier_valid_until timestamptz,
    manual_tier text,
    manual_until timestamptz,
    metric_points numeric,     -- the tier metric over [p_window_start, p_occurred_at], without this purchase
    metric_spend numeric,
    metric_purchases bigint,
    existing_hash bytea,       -- the content hash of the purchase already posted with this order id
    rule_counts jsonb,         -- the member's counts of the limited rules (ledger.rule_counts; NULL: none asked)
    segment text,              -- the member's RFM segment and lifecycle stage of the last insight refresh (issue 17)
    stage text
);

-- p_day_start / p_month_start: the local day and month of the purchase (NULL when no cap needs them);
-- p_window_start: the tier window's start (NULL when the program has no tiers); p_rules: the rule set, when a rule
-- of it has limits (its counts in the program's zone p_tz).
CREATE FUNCTION ledger.purchase_context(
    p_program uuid, p_member_ref text, p_order_id text, p_occurred_at timestamptz, p_day_start timestamptz,
    p_month_start timestamptz, p_window_start timestamptz, p_bonuses boolean, p_rules jsonb DEFAULT NULL,
    p_tz text DEFAULT NULL)
RETURNS SETOF ledger.purchase_context LANGUAGE sql STABLE AS $$
    SELECT m.id, m.status, m.birthday, b.facts_version,
           m.id IS NULL OR NOT EXISTS (SELECT 1 FROM purchases p WHERE p.member_id = m.id),
           CASE WHEN p_day_start IS NULL OR m.id IS NULL THEN 0 ELSE
               (SELECT coalesce(sum(p.points), 0) FROM purchases p WHERE p.member_id = m.id
                   AND p.occurred_at >= p_day_start AND p.occurred_at < p_day_start + interval '1 day') END::bigint,
           CASE WHEN p_month_start IS NULL OR m.id IS NULL THEN 0 ELSE
               (SELECT coalesce(sum(p.points), 0) FROM purchases p WHERE p.member_id = m.id
                   AND p.occurred_at >= p_month_start AND p.occurred_at < p_month_start + interval '1 month') END::bigint,
           (SELECT h.to_tier FROM tier_history h WHERE h.member_id = m.id AND h.changed_at <= p_occurred_at
             ORDER BY h.changed_at DESC, h.id DESC LIMIT 1),
           t.tier, t.valid_until, t.manual_tier, t.manual_until,
           coalesce(x.points, 0), coalesce(x.spend, 0), coalesce(x.purchases, 0),
           (SELECT p.content_hash FROM purchases p WHERE p.program_id = p_program AND p.order_id = p_order_id),
           CASE WHEN p_rules IS NOT NULL AND m.id IS NOT NULL
                THEN ledger.rule_counts(m.id, p_rules, p_occurred_at, p_tz) END,
           i.segment, i.stage
      FROM (SELECT 1) one
      LEFT JOIN ledger.member(p_program, p_member_ref) m ON true
      LEFT JOIN member_balances b ON b.member_id = m.id
      LEFT JOIN member_insights i ON i.member_id = m.id
      LEFT JOIN member_tiers t ON t.member_id = m.id
      LEFT JOIN LATERAL ledger.tier_metrics(ARRAY[m.id], p_window_start, p_occurred_at, p_bonuses) x
             ON p_window_start IS NOT NULL AND m.id IS NOT NULL
$$;

-- The member of a purchase or event: p_member_pk (locked, its facts version checked) or, NULL, enrolled now.
-- Answers the member's id, or NULL with the refusal/'stale' status in `status`.
CREATE FUNCTION ledger.earning_member(p_program uuid, p_member_ref text, p_member_pk bigint,
                                      p_facts_version bigint, p_enrol boolean,
                                      OUT member_pk bigint, OUT status ledger.status)
LANGUAGE plpgsql AS $$
DECLARE
    b member_balances;
    v_member_status text;
BEGIN
    status := 'ok';
    IF p_member_pk IS NULL THEN
        IF NOT p_enrol THEN
            status := 'member_not_found';
            RETURN;
        END IF;
        INSERT INTO members (program_id, external_id) VALUES (p_program, p_member_ref)
        ON CONFLICT (program_id, external_id) DO NOTHING RETURNING id INTO member_pk;
        IF member_pk IS NULL THEN
            status := 'stale';  -- enrolled by a concurrent request meanwhile: read its facts again
            RETURN;
        END IF;
        INSERT INTO member_balances (member_id, program_id) VALUES (member_pk, p_program);
        PERFORM ledger.emit(p_program, member_pk, 'member.created', now(),
                            (SELECT j FROM ledger.member_event_json(member_pk) j));
        RETURN;
    END IF;
    b := ledger.lock_member(p_member_pk);
    IF b.facts_version <> p_facts_version THEN
        status := 'stale';
        RETURN;
    END IF;
    SELECT m.status INTO v_member_status FROM members m WHERE m.id = p_member_pk;
    status := ledger.status_allows(v_member_status, 'earn');
    IF status = 'ok' THEN
        member_pk := p_member_pk;
    END IF;
END $$;

-- A qualifying activity under the activity expiry policy pushes the member's activity date out. Points already
-- due are expired first, so an activity never revives points that had lapsed.
CREATE FUNCTION ledger.note_activity(p_member_pk bigint, p_activity_expires_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_activity_expires_at IS NULL THEN
        RETURN;
    END IF;
    IF ledger.has_due(p_member_pk, now()) THEN
        PERFORM ledger.expire_member(p_member_pk, now());
    END IF;
    UPDATE member_balances
       SET activity_expires_at = greatest(coalesce(activity_expires_at, p_activity_expires_at), p_activity_expires_at)
     WHERE member_id = p_member_pk;
END $$;

-- A purchase as the API shows it.
CREATE FUNCTION ledger.purchase_json(p_purchase_pk bigint) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'order_id', p.order_id, 'member_id', m.external_id, 'occurred_at', ledger.ts(p.occurred_at),
        'points', p.points,
        'status', CASE WHEN p.points = 0 THEN 'none' WHEN l.pending AND l.available_at > now() THEN 'pending'
                       ELSE 'available' END,
        'clawed_back_points', p.clawed_back_points, 'rule_version', coalesce(v.version, 0),
        'entry_id', ledger.public_id('ent', p.entry_id),
        'lot', CASE WHEN l.id IS NOT NULL THEN json_build_object(
                   'id', ledger.public_id('lot', l.id), 'points', l.points, 'available_at', ledger.ts(l.available_at),
                   'expires_at', ledger.ts(l.expires_at)) END,
        'award', p.award,
        'returns', (SELECT coalesce(json_agg(json_build_object(
                           'return_id', r.return_id, 'points', r.points, 'shortfall', r.shortfall,
                           'created_at', ledger.ts(r.created_at), 'occurred_at', ledger.ts(r.occurred_at))
                           ORDER BY r.id), '[]'::json)
                      FROM purchase_returns r WHERE r.purchase_id = p.id))
    FROM purchases p
    JOIN members m ON m.id = p.member_id
    LEFT JOIN earn_rule_versions v ON v.id = p.rule_version_id
    LEFT JOIN lots l ON l.id = p.lot_id
    WHERE p.id = p_purchase_pk
$$;

CREATE FUNCTION ledger.purchase_read(p_program uuid, p_order_id text) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT j FROM purchases p CROSS JOIN LATERAL ledger.purchase_json(p.id) j
     WHERE p.program_id = p_program AND p.order_id = p_order_id
$$;

-- Post a purchase evaluated by the service: an 'earn' entry from `issued` to the member's pending (return window,
-- until p_available_at) or available account, its lot, the purchase with its award, the tier change the service
-- decided (p_tier, NULL: none), and the answer. The order id is a natural key: posted before with the same
-- content, the answer is the original purchase (200, "replayed": true); with other content order_already_posted.
CREATE FUNCTION ledger.purchase(
    p_program uuid, p_key text, p_fingerprint bytea, p_member_ref text, p_member_pk bigint, p_facts_version bigint,
    p_enrol boolean, p_order_id text, p_occurred_at timestamptz, p_content_hash bytea, p_purchase json,
    p_rule_version_id bigint, p_award json, p_points bigint, p_qualifying_points bigint, p_eligible_amount numeric,
    p_available_at timestamptz, p_expires_at timestamptz, p_expires_on_inactivity boolean,
    p_activity_expires_at timestamptz, p_tier text, p_tier_valid_until timestamptz, p_tier_reason text,
    p_tier_from text, p_manual_tier text, p_manual_until timestamptz, p_tier_config_version integer,
    p_rule_ids text[] DEFAULT NULL, p_rule_personal boolean[] DEFAULT NULL,
    p_voucher_codes text[] DEFAULT NULL)  -- issue-14: the vouchers used on the order (canonical codes)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    x purchases%ROWTYPE;
    mb record;
    v_pending boolean;
    v_purchase bigint;
    v_lot bigint;
    v_entry bigint;
    v_body json;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO x FROM purchases p WHERE p.program_id = p_program AND p.order_id = p_order_id;
    IF FOUND THEN
        IF x.content_hash <> p_content_hash THEN
            RETURN ledger.refusal('order_already_posted');
        END IF;
        RETURN ledger.respond(p_program, p_key, p_fingerprint, 200, json_build_object(
            'purchase', (SELECT j FROM ledger.purchase_json(x.id) j),
            'balance', (SELECT j FROM ledger.balance_json(ledger.survivor(x.member_id)) j), 'replayed', true), true);
    END IF;
    -- issue-14: a purchase's vouchers are redeemed with it, or it is refused and nothing is written
    -- (95_rewards.sql). A member this purchase would enrol has no voucher: refused before the enrolment.
    IF cardinality(p_voucher_codes) > 0 AND p_member_pk IS NULL THEN
        RETURN ledger.use_vouchers(p_program, NULL, p_voucher_codes, p_order_id, p_purchase);
    END IF;
    mb := ledger.earning_member(p_program, p_member_ref, p_member_pk, p_facts_version, p_enrol);
    IF mb.status <> 'ok' THEN
        RETURN ledger.refusal(mb.status);
    END IF;
    IF cardinality(p_voucher_codes) > 0 THEN  -- issue-14: under the member's lock (member, then its vouchers)
        a := ledger.use_vouchers(p_program, mb.member_pk, p_voucher_codes, p_order_id, p_purchase);
        IF a.status <> 'ok' THEN
            RETURN a;
        END IF;
    END IF;
    PERFORM ledger.note_activity(mb.member_pk, p_activity_expires_at);
    IF p_points > 0 THEN
        v_pending := p_available_at > now();
        e := ledger.post(p_program, mb.member_pk, 'earn', p_occurred_at,
                         ARRAY['issued', CASE WHEN v_pending THEN 'pending' ELSE 'available' END],
                         ARRAY[-p_points, p_points], p_order_id, 'purchase',
                         jsonb_build_object('order_id', p_order_id));
        v_entry := e.entry_pk;
        v_lot := ledger.credit_lot(p_program, mb.member_pk, e.entry_pk, p_points, e.available_before, p_available_at,
                                   p_expires_at, v_pending, p_expires_on_inactivity);
    END IF;
    INSERT INTO purchases (program_id, member_id, order_id, occurred_at, content_hash, purchase, rule_version_id,
                           award, points, qualifying_points, eligible_amount, entry_id, lot_id)
    VALUES (p_program, mb.member_pk, p_order_id, p_occurred_at, p_content_hash, p_purchase, p_rule_version_id,
            p_award, p_points, p_qualifying_points, p_eligible_amount, v_entry, v_lot)
    RETURNING id INTO v_purchase;
    -- the limited rules this purchase applied (p_rule_ids): later purchases count them against their limits
    IF cardinality(p_rule_ids) > 0 THEN
        INSERT INTO member_rule_awards (program_id, member_id, purchase_id, occurred_at, rule_id, personal)
        SELECT p_program, mb.member_pk, v_purchase, p_occurred_at, ra.rule_id, ra.personal
          FROM unnest(p_rule_ids, p_rule_personal) AS ra(rule_id, personal);
    END IF;
    IF p_tier IS NOT NULL THEN
        PERFORM ledger.save_tier(p_program, mb.member_pk, p_tier, p_tier_valid_until, p_manual_tier, p_manual_until,
                                 p_occurred_at, NULL, p_tier_from, p_tier_reason, 'purchase', p_order_id,
                                 p_tier_config_version);
    ELSE
        UPDATE member_balances SET facts_version = facts_version + 1 WHERE member_id = mb.member_pk;
    END IF;
    v_body := json_build_object('purchase', (SELECT j FROM ledger.purchase_json(v_purchase) j),
                                'balance', (SELECT j FROM ledger.balance_json(mb.member_pk) j), 'replayed', false);
    IF p_points > 0 THEN
        PERFORM ledger.emit(p_program, mb.member_pk, 'points.earned', p_occurred_at, v_body);
    END IF;
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
END $$;

-- What a return's clawback computation needs: the purchase (as posted, with its award), its earlier returns,
-- and the return already posted with this return id (its content hash).
CREATE TYPE ledger.return_context AS (
    purchase_pk bigint,
    member_pk bigint,
    facts_version bigint,
    purchase json,
    award json,
    earlier_requests json,  -- the requests of the purchase's earlier returns, oldest first
    existing_hash bytea
);

CREATE FUNCTION ledger.return_context(p_program uuid, p_order_id text, p_return_id text)
RETURNS SETOF ledger.return_context LANGUAGE sql STABLE AS $$
    SELECT p.id, b.member_id, b.facts_version, p.purchase, p.award,
           (SELECT coalesce(json_agg(r.request ORDER BY r.id), '[]'::json) FROM purchase_returns r
             WHERE r.purchase_id = p.id),
           (SELECT r.content_hash FROM purchase_returns r WHERE r.purchase_id = p.id AND r.return_id = p_return_id)
      FROM purchases p JOIN member_balances b ON b.member_id = ledger.survivor(p.member_id)
     WHERE p.program_id = p_program AND p.order_id = p_order_id
$$;

CREATE FUNCTION ledger.return_json(p_return_pk bigint, p_replayed boolean) RETURNS SETOF json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'order_id', p.order_id, 'return_id', r.return_id, 'occurred_at', ledger.ts(r.occurred_at),
        'points', r.points, 'shortfall', r.shortfall, 'clawback', r.result,
        'balance', (SELECT j FROM ledger.balance_json(ledger.survivor(p.member_id)) j), 'replayed', p_replayed)
    FROM purchase_returns r JOIN purchases p ON p.id = r.purchase_id
    WHERE r.id = p_return_pk
$$;

-- Claw back p_points of a purchase's award (the service computed them from the award and the returned lines):
-- first from the purchase's own lot while it is pending, else from its own lot's spendable remainder, then from
-- other available points soonest-expiring first. What is left is taken anyway, leaving `available` negative
-- (p_policy 'allow'; later credits repay it first), or recorded as a shortfall and not taken ('clamp').
-- The same return id again: with the same content the original answer (200, "replayed"), else
-- return_already_posted.
-- p_occurred_at: when the return happened (an offline POS sends returns late; NULL: now). The clawback entry is
-- dated then, and the return is judged by it: if the purchase's return window had already ended then, its points
-- were available, so a lot still flagged pending (the activation job has not run) is activated first and the
-- points are taken as available; a return inside the window takes them from the purchase's own pending lot.
-- p_released_rule_ids: limited rules the return took back entirely: they count no more toward their limits.
CREATE FUNCTION ledger.purchase_return(
    p_program uuid, p_key text, p_fingerprint bytea, p_order_id text, p_return_id text, p_facts_version bigint,
    p_content_hash bytea, p_request json, p_result json, p_points bigint, p_policy text, p_line_points bigint,
    p_occurred_at timestamptz DEFAULT NULL, p_released_rule_ids text[] DEFAULT NULL)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    p purchases%ROWTYPE;
    l lots%ROWTYPE;
    b member_balances;
    x purchase_returns%ROWTYPE;
    v_from_pending bigint := 0;   -- taken from the purchase's own pending lot
    v_from_lots bigint;           -- taken from spendable lots: the purchase's own lot first
    v_negative bigint := 0;       -- taken anyway, leaving available below zero ('allow')
    v_shortfall bigint := 0;      -- not taken ('clamp')
    v_rest bigint;
    v_return bigint;
    v_entry bigint;
    v_at timestamptz := coalesce(p_occurred_at, now());
    v_member bigint;              -- the purchase's member, or the survivor it was merged into (issue 15)
    v_body json;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO p FROM purchases WHERE program_id = p_program AND order_id = p_order_id;
    IF NOT FOUND THEN
        RETURN ledger.refusal('purchase_not_found');
    END IF;
    v_member := ledger.survivor(p.member_id);
    b := ledger.lock_member(v_member);
    SELECT * INTO x FROM purchase_returns WHERE purchase_id = p.id AND return_id = p_return_id;
    IF FOUND THEN
        IF x.content_hash <> p_content_hash THEN
            RETURN ledger.refusal('return_already_posted');
        END IF;
        RETURN ledger.respond(p_program, p_key, p_fingerprint, 200, (SELECT j FROM ledger.return_json(x.id, true) j),
                              true);
    END IF;
    IF b.facts_version <> p_facts_version THEN
        RETURN ledger.refusal('stale');
    END IF;
    SELECT * INTO p FROM purchases WHERE id = p.id FOR UPDATE;
    SELECT * INTO l FROM lots WHERE id = p.lot_id;
    IF FOUND AND l.member_id <> v_member THEN
        -- issue-15: the purchase's member was merged away: its pending points are in a lot the merge gave the
        -- survivor, with the same activation time and expiry (ledger.copy_lots)
        SELECT ml.* INTO l FROM lots ml JOIN entries me ON me.id = ml.entry_id AND me.kind = 'merge'
         WHERE ml.member_id = v_member AND ml.pending AND l.pending AND ml.available_at = l.available_at
           AND ml.expires_at IS NOT DISTINCT FROM l.expires_at AND ml.remaining > 0
         ORDER BY ml.id LIMIT 1;
    END IF;
    IF FOUND AND l.pending AND l.available_at <= v_at THEN  -- the window had ended at the return
        PERFORM ledger.activate_due(v_member, now());
        SELECT * INTO l FROM lots WHERE id = l.id;
        SELECT * INTO b FROM member_balances WHERE member_id = v_member;
    END IF;
    IF FOUND AND l.pending THEN
        v_from_pending := least(l.remaining, p_points);
    END IF;
    v_from_lots := least(p_points - v_from_pending, greatest(b.available, 0));
    v_rest := p_points - v_from_pending - v_from_lots;
    IF p_policy = 'clamp' THEN
        v_shortfall := v_rest;
    ELSE
        v_negative := v_rest;
    END IF;

    IF v_from_pending + v_from_lots + v_negative > 0 THEN
        e := ledger.post(p_program, v_member, 'clawback', v_at, ARRAY['issued', 'pending', 'available'],
                         ARRAY[v_from_pending + v_from_lots + v_negative, -v_from_pending, -(v_from_lots + v_negative)],
                         p.order_id || '/' || p_return_id, 'return',
                         jsonb_build_object('order_id', p.order_id, 'return_id', p_return_id, 'shortfall', v_shortfall),
                         p_overdraw => true);
        v_entry := e.entry_pk;
        IF v_from_pending > 0 THEN
            UPDATE lots SET remaining = remaining - v_from_pending WHERE id = l.id;
            INSERT INTO lot_allocations (entry_id, lot_id, points) VALUES (e.entry_pk, l.id, v_from_pending);
        END IF;
        IF v_from_lots > 0 THEN
            PERFORM ledger.consume_lots_exactly(v_member, e.entry_pk, v_from_lots, p.entry_id);
        END IF;
    END IF;
    -- the tier metric counts line points only: what came back stops qualifying, bonuses aside
    UPDATE purchases SET clawed_back_points = clawed_back_points + v_from_pending + v_from_lots + v_negative,
                         qualifying_clawed_back = qualifying_clawed_back + p_line_points
     WHERE id = p.id;
    INSERT INTO purchase_returns (purchase_id, return_id, content_hash, request, result, points, shortfall, entry_id,
                                  occurred_at)
    VALUES (p.id, p_return_id, p_content_hash, p_request, p_result, p_points - v_shortfall, v_shortfall, v_entry, v_at)
    RETURNING id INTO v_return;
    IF cardinality(p_released_rule_ids) > 0 THEN
        UPDATE member_rule_awards SET released = true
         WHERE purchase_id = p.id AND rule_id = ANY (p_released_rule_ids) AND NOT released;
    END IF;
    UPDATE member_balances SET facts_version = facts_version + 1 WHERE member_id = v_member;
    v_body := (SELECT j FROM ledger.return_json(v_return, false) j);
    PERFORM ledger.emit(p_program, v_member, 'purchase.returned', v_at, v_body);
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
END $$;
