-- Rewards and vouchers (issue 14): members exchange points for a reward; the exchange issues a voucher.
--
-- An exchange is ONE write (ledger.exchange): the points through ledger.post (entry kind 'exchange', available ->
-- redeemed, soonest-expiring lots first), a unit of stock, a partner code when the reward hands them out, and the
-- voucher, in one statement. A cancellation (or an expiry the reward refunds) gives the points back to the lots they
-- came from, with their original expiry, as refunds do (entry kind 'exchange_refund'; points of lots expired
-- meanwhile come back expired).
--
-- Lock order, everywhere: the member's balance row, then its vouchers (in id order), then a reward's row. An
-- exchange of a reward with limited stock locks the reward's row, so it never runs inside a group-commit batch
-- (p_alone; app/ledger/batch.py): two batches taking two rewards' rows in opposite orders could deadlock.
--
-- Codes: 12 characters of a 32-letter alphabet without 0, 1, I and O (so 60 random bits), stored without separators
-- and shown in groups of four (K7QM-3XDP-W9TF). The bits come from gen_random_uuid(), which Postgres draws from
-- its cryptographically strong generator (pg_strong_random). Unique per program.

-- 1. Codes.
CREATE FUNCTION ledger.voucher_code() RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    b bytea := uuid_send(gen_random_uuid());
    v bigint := 0;
    code text := '';
BEGIN
    -- bytes 0-5, 9 and the low half of 10 of a version-4 uuid are random (its version and variant bits are not)
    FOR i IN 0 .. 5 LOOP
        v := (v << 8) | get_byte(b, i);
    END LOOP;
    v := (v << 8) | get_byte(b, 9);
    v := (v << 4) | (get_byte(b, 10) & 15);
    FOR i IN 1 .. 12 LOOP
        code := code || substr('23456789ABCDEFGHJKLMNPQRSTUVWXYZ', (v & 31)::integer + 1, 1);
        v := v >> 5;
    END LOOP;
    RETURN code;
END $$;

CREATE FUNCTION ledger.code_text(p_code text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT substr(p_code, 1, 4) || '-' || substr(p_code, 5, 4) || '-' || substr(p_code, 9, 4)
$$;

-- A voucher's state as read: an issued voucher past its expiry reads as expired before the job has run.
CREATE FUNCTION ledger.voucher_status(p_status text, p_expires_at timestamptz, p_at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_status = 'issued' AND p_expires_at <= p_at THEN 'expired' ELSE p_status END
$$;

-- 2. Who may exchange what. The position of a tier in the ladder in force at p_at (1: the base tier; NULL: no ladder,
--    or no such tier in it).
CREATE FUNCTION ledger.tier_rank(p_program uuid, p_tier text, p_at timestamptz) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT t.ord::integer FROM (
        SELECT c.config FROM tier_config_versions c WHERE c.program_id = p_program AND c.effective_from <= p_at
         ORDER BY c.effective_from DESC, c.version DESC LIMIT 1) v
    CROSS JOIN LATERAL jsonb_array_elements(v.config -> 'tiers') WITH ORDINALITY AS t(tier, ord)
    WHERE t.tier ->> 'name' = p_tier
$$;

-- Where a per-member limit's period starts: the local day or month of p_at in the program's zone, or never.
CREATE FUNCTION ledger.limit_start(p_period text, p_at timestamptz, p_timezone text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE p_period WHEN 'day' THEN date_trunc('day', p_at, p_timezone)
                         WHEN 'month' THEN date_trunc('month', p_at, p_timezone)
                         ELSE '-infinity'::timestamptz END
$$;

-- What an exchange needs to know about its member (the balance as reads show it; a member without a stored tier
-- holds the base tier).
CREATE TYPE ledger.exchange_member AS (
    member_pk bigint, member_ref text, status text, available bigint, tier text, tier_rank integer);

CREATE FUNCTION ledger.exchange_member(p_program uuid, p_member_ref text, p_at timestamptz)
RETURNS SETOF ledger.exchange_member LANGUAGE sql STABLE AS $$
    SELECT m.id, m.external_id, m.status, b.available, b.tier, coalesce(ledger.tier_rank(p_program, b.tier, p_at), 1)
      FROM ledger.member(p_program, p_member_ref) m CROSS JOIN LATERAL ledger.balance(m.id) b
$$;

-- Everything that stops member `mc` from exchanging reward `r` at p_at, in the order an exchange reports them (it
-- reports the first). THE definition: the exchange refuses by it, and browsing shows it as the reasons.
CREATE FUNCTION ledger.exchange_blockers(r rewards, mc ledger.exchange_member, p_at timestamptz, p_timezone text)
RETURNS TABLE (ord integer, code ledger.status, detail text, extra jsonb) LANGUAGE sql STABLE AS $$
    SELECT 1, 'reward_unavailable'::ledger.status,
           CASE WHEN r.archived_at IS NOT NULL THEN 'The reward is archived.'
                WHEN r.available_from > p_at THEN format('The reward is available from %s.', ledger.ts(r.available_from))
                ELSE format('The reward was available until %s.', ledger.ts(r.available_until)) END,
           '{}'::jsonb
     WHERE r.archived_at IS NOT NULL OR r.available_from > p_at OR r.available_until <= p_at
    UNION ALL
    SELECT 2, ledger.status_allows(mc.status, 'spend'), format('The member is %s: points cannot be spent.', mc.status),
           '{}'::jsonb
     WHERE ledger.status_allows(mc.status, 'spend') <> 'ok'
    UNION ALL
    SELECT 3, 'not_eligible', format('For members of tier %s or higher.', r.min_tier),
           jsonb_build_object('required_tier', r.min_tier, 'tier', mc.tier)
     WHERE r.min_tier IS NOT NULL AND coalesce(ledger.tier_rank(r.program_id, r.min_tier, p_at) > mc.tier_rank, true)
    UNION ALL
    SELECT 4, 'limit_reached',
           CASE r.limit_period WHEN 'ever' THEN format('At most %s per member.', r.limit_count)
                ELSE format('At most %s per member per %s.', r.limit_count, r.limit_period) END,
           jsonb_build_object('limit', r.limit_count, 'period', r.limit_period)
     WHERE r.limit_count IS NOT NULL AND (
         SELECT count(*) FROM vouchers v
          WHERE v.member_id = mc.member_pk AND v.reward_id = r.id AND v.status <> 'cancelled'
            AND v.issued_at >= ledger.limit_start(r.limit_period, p_at, p_timezone)) >= r.limit_count
    UNION ALL
    SELECT 5, 'out_of_stock', 'No units are left.', '{}'::jsonb WHERE r.stock = 0
    UNION ALL
    SELECT 6, 'insufficient_points', format('The reward costs %s points; %s are available.', r.cost_points, mc.available),
           jsonb_build_object('available', mc.available, 'missing_points', r.cost_points - mc.available)
     WHERE mc.available < r.cost_points
$$;

-- 3. As the API shows them.
-- A reward; with a member (mc not NULL), what that member may do with it ("for_member").
CREATE FUNCTION ledger.reward_json(p_reward_pk bigint, mc ledger.exchange_member, p_timezone text)
RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', ledger.public_id('rwd', r.id), 'name', r.name, 'description', r.description, 'kind', r.kind,
        'status', CASE WHEN r.archived_at IS NULL THEN 'active' ELSE 'archived' END,
        'cost_points', r.cost_points, 'currency', r.currency, 'amount_off', r.amount_off::text,
        'percent_off', trim_scale(r.percent_off)::text, 'min_spend', r.min_spend::text, 'sku', r.sku,
        'stock', r.stock, 'low_stock_threshold', r.low_stock_threshold,
        'limit', CASE WHEN r.limit_count IS NOT NULL THEN
                     json_build_object('count', r.limit_count, 'period', r.limit_period) END,
        'available_from', ledger.ts(r.available_from), 'available_until', ledger.ts(r.available_until),
        'min_tier', r.min_tier, 'channels', to_json(r.channels), 'voucher_valid_days', r.voucher_valid_days,
        'cancel_window_hours', r.cancel_window_hours, 'refund_on_expiry', r.refund_on_expiry, 'metadata', r.metadata,
        'created_at', ledger.ts(r.created_at), 'updated_at', ledger.ts(r.updated_at),
        'archived_at', ledger.ts(r.archived_at),
        'for_member', CASE WHEN (mc).member_pk IS NOT NULL THEN (
            SELECT json_build_object(
                'member_id', (mc).member_ref, 'available_points', (mc).available,
                'affordable', (mc).available >= r.cost_points,
                'missing_points', greatest(r.cost_points - (mc).available, 0),
                'eligible', NOT coalesce(bool_or(x.code IN ('not_eligible', 'limit_reached', 'member_suspended',
                                                            'member_closed')), false),
                'can_exchange', count(x.code) = 0,
                'reasons', coalesce(json_agg(json_build_object('code', x.code, 'detail', x.detail) ORDER BY x.ord),
                                    '[]'::json))
            FROM ledger.exchange_blockers(r, mc, now(), p_timezone) x) END)
    FROM rewards r WHERE r.id = p_reward_pk
$$;

-- A voucher. p_private: with what only its member sees (the partner code, the delivery details).
CREATE FUNCTION ledger.voucher_json(p_voucher_pk bigint, p_private boolean) RETURNS SETOF json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', ledger.public_id('vch', v.id), 'code', ledger.code_text(v.code), 'member_id', m.external_id,
        'reward_id', ledger.public_id('rwd', v.reward_id), 'name', v.name, 'kind', v.kind,
        'status', ledger.voucher_status(v.status, v.expires_at, now()), 'points', v.points,
        'currency', v.currency, 'amount_off', v.amount_off::text, 'percent_off', trim_scale(v.percent_off)::text,
        'min_spend', v.min_spend::text, 'sku', v.sku, 'channels', to_json(v.channels),
        'issued_at', ledger.ts(v.issued_at), 'expires_at', ledger.ts(v.expires_at),
        'cancellable_until', ledger.ts(v.cancellable_until), 'resolved_at', ledger.ts(v.resolved_at),
        'reference', v.reference, 'entry_id', ledger.public_id('ent', v.entry_id),
        'refund', CASE WHEN v.refund_entry_id IS NOT NULL THEN json_build_object(
            'entry_id', ledger.public_id('ent', v.refund_entry_id), 'points', v.points,
            'available_points', v.returned_points, 'expired_points', v.returned_expired_points) END,
        'partner_code', CASE WHEN p_private THEN (SELECT c.code FROM partner_codes c WHERE c.voucher_id = v.id) END,
        'delivery', CASE WHEN p_private THEN v.delivery END)
    FROM vouchers v JOIN members m ON m.id = v.member_id
    WHERE v.id = p_voucher_pk
$$;

-- GET /v1/rewards: a page of the program's rewards in creation order after the reward p_after (NULL: from the
-- first); p_status 'active', 'archived' or 'all'. With a member: its view of each, and only rewards whose window has
-- not ended. NULL when p_member_ref names no member.
CREATE FUNCTION ledger.rewards_page(p_program uuid, p_member_ref text, p_status text, p_after text, p_limit integer,
                                    p_timezone text) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    WITH ctx AS (
        SELECT (SELECT mc FROM ledger.exchange_member(p_program, p_member_ref, now()) mc) AS mc
    ), page AS (
        SELECT r.id, row_number() OVER (ORDER BY r.id) AS n FROM rewards r
         WHERE r.program_id = p_program AND (p_after IS NULL OR r.id > ledger.row_id('rwd', p_after))
           AND CASE p_status WHEN 'active' THEN r.archived_at IS NULL WHEN 'archived' THEN r.archived_at IS NOT NULL
                             ELSE true END
           AND (p_member_ref IS NULL OR r.available_until IS NULL OR r.available_until > now())
         ORDER BY r.id LIMIT p_limit + 1
    )
    SELECT json_build_object(
        'data', coalesce((SELECT json_agg(j ORDER BY p.id) FROM page p
                           CROSS JOIN LATERAL ledger.reward_json(p.id, ctx.mc, p_timezone) j WHERE p.n <= p_limit),
                         '[]'::json),
        'next_cursor', (SELECT ledger.public_id('rwd', p.id) FROM page p
                         WHERE p.n = p_limit AND EXISTS (SELECT 1 FROM page q WHERE q.n > p_limit)))
      FROM ctx WHERE p_member_ref IS NULL OR (ctx.mc).member_pk IS NOT NULL
$$;

-- GET /v1/rewards/{reward_id}: the reward (NULL: not the program's), and whether p_member_ref (if any) was found.
CREATE FUNCTION ledger.reward_read(p_program uuid, p_reward_id text, p_member_ref text, p_timezone text)
RETURNS TABLE (member_found boolean, body json) LANGUAGE sql STABLE AS $$
    WITH ctx AS (
        SELECT (SELECT mc FROM ledger.exchange_member(p_program, p_member_ref, now()) mc) AS mc
    )
    SELECT (ctx.mc).member_pk IS NOT NULL,
           (SELECT j FROM rewards r CROSS JOIN LATERAL ledger.reward_json(r.id, ctx.mc, p_timezone) j
             WHERE r.id = ledger.row_id('rwd', p_reward_id) AND r.program_id = p_program)
      FROM ctx
$$;

-- The wallet: a member's vouchers, newest first, before the voucher p_before; p_status as read (NULL: all). NULL
-- when the member does not exist.
CREATE FUNCTION ledger.vouchers_page(p_program uuid, p_member_ref text, p_status text, p_before text,
                                     p_limit integer) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'data', coalesce(json_agg(j ORDER BY x.id DESC) FILTER (WHERE x.n <= p_limit), '[]'::json),
        'next_cursor', CASE WHEN count(x.id) > p_limit
                            THEN ledger.public_id('vch', min(x.id) FILTER (WHERE x.n <= p_limit)) END)
      FROM ledger.member(p_program, p_member_ref) m
      LEFT JOIN LATERAL (
          SELECT v.id, row_number() OVER (ORDER BY v.id DESC) AS n FROM vouchers v
           WHERE v.member_id = m.id AND (p_before IS NULL OR v.id < ledger.row_id('vch', p_before))
             AND (p_status IS NULL OR ledger.voucher_status(v.status, v.expires_at, now()) = p_status)
           ORDER BY v.id DESC LIMIT p_limit + 1
      ) x ON true
      LEFT JOIN LATERAL ledger.voucher_json(x.id, true) j ON true
     GROUP BY m.id
$$;

-- GET /v1/vouchers/{code}: what a POS checks before applying a code (no partner code, no delivery details).
CREATE FUNCTION ledger.voucher_read(p_program uuid, p_code text) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT j FROM vouchers v CROSS JOIN LATERAL ledger.voucher_json(v.id, false) j
     WHERE v.program_id = p_program AND v.code = p_code
$$;

-- The program's vouchers still to be used (issued, not past their expiry): count, points, and the money value of
-- the amount-off vouchers (percentage vouchers have none until an order; they are counted apart), per reward.
CREATE FUNCTION ledger.outstanding_vouchers(p_program uuid, p_minor_units integer, p_currency text)
RETURNS SETOF json LANGUAGE sql STABLE AS $$
    WITH by_reward AS (
        SELECT v.reward_id, count(*) AS n, sum(v.points) AS points, sum(v.amount_off) AS value,
               count(v.percent_off) AS percent
          FROM vouchers v
         WHERE v.program_id = p_program AND v.status = 'issued' AND (v.expires_at IS NULL OR v.expires_at > now())
         GROUP BY v.reward_id
    )
    SELECT json_build_object(
        'currency', p_currency, 'count', coalesce(sum(b.n), 0), 'points', coalesce(sum(b.points), 0),
        'value', round(coalesce(sum(b.value), 0), p_minor_units)::text, 'percent_off_count', coalesce(sum(b.percent), 0),
        'by_reward', coalesce(json_agg(json_build_object(
            'reward_id', ledger.public_id('rwd', r.id), 'name', r.name, 'kind', r.kind, 'count', b.n,
            'points', b.points, 'value', round(b.value, p_minor_units)::text) ORDER BY r.id), '[]'::json))
      FROM by_reward b JOIN rewards r ON r.id = b.reward_id
$$;

-- 4. Exchange: p_member_ref's points for one unit of reward p_reward_id, and its voucher. Refusals (the first of
--    ledger.exchange_blockers, then the stock) write nothing but what settling the member writes (as any debit).
--    p_alone: the write runs in its own transaction (not in a group-commit batch), so it may lock the reward's row.
CREATE FUNCTION ledger.exchange(
    p_program uuid, p_key text, p_fingerprint bytea, p_reward_id text, p_member_ref text, p_delivery jsonb,
    p_alone boolean, p_timezone text)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    r rewards%ROWTYPE;
    mc ledger.exchange_member;
    x record;
    e record;
    v_member bigint;
    v_now timestamptz := now();
    v_stock bigint;
    v_voucher bigint;
    v_public json;
    v_balance json;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO r FROM rewards y WHERE y.id = ledger.row_id('rwd', p_reward_id) AND y.program_id = p_program;
    IF NOT FOUND THEN
        RETURN ledger.refusal('reward_not_found');
    END IF;
    IF p_delivery IS NOT NULL AND r.kind <> 'gift' THEN
        RETURN ledger.refusal('validation_error', jsonb_build_object(
            'detail', format('delivery: only gifts are shipped (this reward is a %s).', r.kind)));
    END IF;
    IF r.stock IS NOT NULL AND NOT p_alone THEN
        RETURN ledger.refusal('stale');  -- takes stock: the service sends it again, in a transaction of its own
    END IF;
    SELECT m.id INTO v_member FROM ledger.member(p_program, p_member_ref) m;
    IF NOT FOUND THEN
        RETURN ledger.refusal('member_not_found');
    END IF;
    -- The member's lock first: a member's exchanges serialise here, so its per-member limits hold.
    PERFORM ledger.lock_member(v_member);
    PERFORM ledger.settle(v_member, v_now);
    -- The member as ledger.exchange_member reads it, from its settled balance row (once settled, a balance read
    -- folds nothing more in), and its tier's rank only when the reward asks for one: cheaper on the hot path.
    SELECT m.id, m.external_id, m.status, b.available, t.tier,
           CASE WHEN r.min_tier IS NULL THEN 1 ELSE coalesce(ledger.tier_rank(p_program, t.tier, v_now), 1) END
      INTO mc
      FROM members m JOIN member_balances b ON b.member_id = m.id LEFT JOIN member_tiers t ON t.member_id = m.id
     WHERE m.id = v_member;
    SELECT * INTO x FROM ledger.exchange_blockers(r, mc, v_now, p_timezone) b ORDER BY b.ord LIMIT 1;
    IF FOUND THEN
        RETURN ledger.refusal(x.code, x.extra || jsonb_build_object('detail', x.detail));
    END IF;
    IF r.stock IS NOT NULL THEN
        -- one unit, or none: concurrent exchanges queue on the reward's row and each sees what the last one left
        UPDATE rewards SET stock = stock - 1
         WHERE id = r.id AND archived_at IS NULL AND (stock IS NULL OR stock > 0)
        RETURNING stock INTO v_stock;
        IF NOT FOUND THEN
            RETURN ledger.refusal(CASE WHEN (SELECT y.archived_at FROM rewards y WHERE y.id = r.id) IS NULL
                                       THEN 'out_of_stock' ELSE 'reward_unavailable' END::ledger.status);
        END IF;
    END IF;
    v_voucher := nextval(pg_get_serial_sequence('vouchers', 'id'));
    e := ledger.post(p_program, v_member, 'exchange', v_now, ARRAY['available', 'redeemed'],
                     ARRAY[-r.cost_points, r.cost_points], NULL, r.name,
                     jsonb_build_object('reward_id', ledger.public_id('rwd', r.id),
                                        'voucher_id', ledger.public_id('vch', v_voucher)));
    IF e.entry_pk IS NULL THEN
        RAISE EXCEPTION 'exchange overdrew member % although its balance was checked under its lock', v_member
            USING ERRCODE = 'data_corrupted';
    END IF;
    PERFORM ledger.consume_lots_exactly(v_member, e.entry_pk, r.cost_points);
    LOOP  -- 60 random bits: a clash with another code of the program is all but impossible, and never an error
        INSERT INTO vouchers (id, program_id, member_id, reward_id, code, name, kind, points, currency, amount_off,
                              percent_off, min_spend, sku, channels, refund_on_expiry, issued_at, expires_at,
                              cancellable_until, entry_id, delivery)
        VALUES (v_voucher, p_program, v_member, r.id, ledger.voucher_code(), r.name, r.kind, r.cost_points, r.currency,
                r.amount_off, r.percent_off, r.min_spend, r.sku, r.channels, r.refund_on_expiry, v_now,
                v_now + make_interval(days => r.voucher_valid_days),
                v_now + make_interval(hours => r.cancel_window_hours), e.entry_pk, p_delivery)
        ON CONFLICT (program_id, code) DO NOTHING;
        EXIT WHEN FOUND;
    END LOOP;
    IF r.kind = 'partner_code' THEN
        -- under the reward's lock, and `stock` counts the unused codes: the first one is this voucher's, once
        UPDATE partner_codes SET voucher_id = v_voucher
         WHERE id = (SELECT c.id FROM partner_codes c WHERE c.reward_id = r.id AND c.voucher_id IS NULL
                      ORDER BY c.id LIMIT 1 FOR UPDATE SKIP LOCKED);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'reward % counts stock but has no unused partner code', r.id USING ERRCODE = 'data_corrupted';
        END IF;
    END IF;
    v_public := (SELECT j FROM ledger.voucher_json(v_voucher, false) j);
    v_balance := (SELECT j FROM ledger.balance_json(v_member) j);
    PERFORM ledger.emit(p_program, v_member, 'voucher.issued', v_now, v_public);
    PERFORM ledger.emit(p_program, v_member, 'reward.exchanged', v_now,
                        json_build_object('voucher', v_public, 'balance', v_balance));
    IF v_stock = r.low_stock_threshold THEN
        PERFORM ledger.emit(p_program, NULL, 'reward.stock_low', v_now,
                            (SELECT j FROM ledger.reward_json(r.id, NULL, p_timezone) j));
    END IF;
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, json_build_object(
        -- the member's own view differs only by a partner code or delivery details
        'voucher', CASE WHEN r.kind = 'partner_code' OR p_delivery IS NOT NULL
                        THEN (SELECT j FROM ledger.voucher_json(v_voucher, true) j) ELSE v_public END,
        'balance', v_balance));
END $$;

-- 5. Using a voucher. Why voucher `v` cannot be used now (first row first): its state, then, for the order it is
--    used on, its member (p_check_member), channel, minimum spend and product (p_skus: the order's SKUs).
CREATE FUNCTION ledger.voucher_misfit(v vouchers, p_member_pk bigint, p_check_member boolean, p_channel text,
                                      p_total numeric, p_skus text[], p_at timestamptz)
RETURNS TABLE (ord integer, code ledger.status, extra jsonb) LANGUAGE sql STABLE AS $$
    SELECT 1, 'voucher_not_issued'::ledger.status,
           jsonb_build_object('voucher_code', ledger.code_text(v.code), 'voucher_status', v.status,
                              'detail', format('The voucher is %s.', v.status))
     WHERE v.status <> 'issued'
    UNION ALL
    SELECT 2, 'voucher_expired', jsonb_build_object('voucher_code', ledger.code_text(v.code),
                                                    'expires_at', ledger.ts(v.expires_at))
     WHERE v.status = 'issued' AND v.expires_at <= p_at
    UNION ALL
    SELECT 3, 'voucher_not_applicable', jsonb_build_object('voucher_code', ledger.code_text(v.code), 'reason', 'member',
                                                           'detail', 'The voucher belongs to another member.')
     WHERE p_check_member AND v.member_id IS DISTINCT FROM p_member_pk
    UNION ALL
    SELECT 4, 'voucher_not_applicable', jsonb_build_object(
               'voucher_code', ledger.code_text(v.code), 'reason', 'channel',
               'detail', format('The voucher can be used on %s only.', array_to_string(v.channels, ', ')))
     WHERE p_channel IS NOT NULL AND NOT p_channel = ANY (v.channels)
    UNION ALL
    SELECT 5, 'voucher_not_applicable', jsonb_build_object(
               'voucher_code', ledger.code_text(v.code), 'reason', 'min_spend', 'min_spend', v.min_spend::text,
               'detail', format('The voucher needs an order of at least %s %s.', v.min_spend, v.currency))
     WHERE p_total < v.min_spend
    UNION ALL
    SELECT 6, 'voucher_not_applicable', jsonb_build_object(
               'voucher_code', ledger.code_text(v.code), 'reason', 'sku', 'sku', v.sku,
               'detail', format('The voucher is for %s, which is not in the order.', v.sku))
     WHERE v.sku IS NOT NULL AND p_skus IS NOT NULL AND NOT v.sku = ANY (p_skus)
$$;

-- POST /v1/vouchers/{code}/redeem: exactly once. Of concurrent redeems, the conditional UPDATE lets one through; the
-- others wait for it on the voucher's row, then find it redeemed.
CREATE FUNCTION ledger.redeem_voucher(p_program uuid, p_key text, p_fingerprint bytea, p_code text, p_reference text,
                                      p_member_ref text, p_channel text, p_order_total numeric)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    v vouchers%ROWTYPE;
    x record;
    v_now timestamptz := now();
    v_json json;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO v FROM vouchers y WHERE y.program_id = p_program AND y.code = p_code;
    IF NOT FOUND THEN
        RETURN ledger.refusal('voucher_not_found');
    END IF;
    SELECT * INTO x FROM ledger.voucher_misfit(
        v, (SELECT m.id FROM ledger.member(p_program, p_member_ref) m), p_member_ref IS NOT NULL, p_channel,
        p_order_total, NULL, v_now) f ORDER BY f.ord LIMIT 1;
    IF FOUND THEN
        RETURN ledger.refusal(x.code, x.extra);
    END IF;
    UPDATE vouchers SET status = 'redeemed', resolved_at = v_now, reference = p_reference
     WHERE id = v.id AND status = 'issued' AND (expires_at IS NULL OR expires_at > v_now);
    IF NOT FOUND THEN
        SELECT * INTO v FROM vouchers WHERE id = v.id;
        SELECT * INTO x FROM ledger.voucher_misfit(v, NULL, false, NULL, NULL, NULL, v_now) f ORDER BY f.ord LIMIT 1;
        RETURN ledger.refusal(x.code, x.extra);
    END IF;
    v_json := (SELECT j FROM ledger.voucher_json(v.id, false) j);
    PERFORM ledger.emit(p_program, v.member_id, 'voucher.redeemed', v_now, v_json);
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 200, json_build_object('voucher', v_json));
END $$;

-- A purchase's voucher codes (p_codes, canonical), used on order p_order_id of member p_member_pk, whose lock the
-- caller holds (ledger.purchase): all of them are redeemed, or the answer is the refusal of the first that cannot be
-- and nothing is written. p_purchase: the purchase as posted (channel, total, lines). Status 'ok' otherwise.
-- Only the member's own vouchers are locked (another member's is refused first, unlocked): a purchase in a
-- group-commit batch locks nothing of another member.
CREATE FUNCTION ledger.use_vouchers(p_program uuid, p_member_pk bigint, p_codes text[], p_order_id text,
                                    p_purchase json)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    v vouchers%ROWTYPE;
    x record;
    v_now timestamptz := now();
    v_ids bigint[] := '{}';
    v_missing text;
    v_skus text[] := ARRAY(SELECT l ->> 'sku' FROM json_array_elements(p_purchase -> 'lines') l);
BEGIN
    SELECT c INTO v_missing FROM unnest(p_codes) c
     WHERE NOT EXISTS (SELECT 1 FROM vouchers y WHERE y.program_id = p_program AND y.code = c) LIMIT 1;
    IF FOUND THEN
        RETURN ledger.refusal('voucher_not_found', jsonb_build_object('voucher_code', ledger.code_text(v_missing)));
    END IF;
    SELECT y.code INTO v_missing FROM vouchers y
     WHERE y.program_id = p_program AND y.code = ANY (p_codes) AND y.member_id IS DISTINCT FROM p_member_pk LIMIT 1;
    IF FOUND THEN
        RETURN ledger.refusal('voucher_not_applicable', jsonb_build_object(
            'voucher_code', ledger.code_text(v_missing), 'reason', 'member',
            'detail', 'The voucher belongs to another member.'));
    END IF;
    FOR v IN SELECT * FROM vouchers y WHERE y.program_id = p_program AND y.code = ANY (p_codes)
                                        AND y.member_id = p_member_pk ORDER BY y.id FOR UPDATE
    LOOP
        SELECT * INTO x FROM ledger.voucher_misfit(v, p_member_pk, true, p_purchase ->> 'channel',
                                                   (p_purchase ->> 'total')::numeric, v_skus, v_now) f
         ORDER BY f.ord LIMIT 1;
        IF FOUND THEN
            RETURN ledger.refusal(x.code, x.extra);
        END IF;
        v_ids := v_ids || v.id;
    END LOOP;
    UPDATE vouchers SET status = 'redeemed', resolved_at = v_now, reference = p_order_id WHERE id = ANY (v_ids);
    PERFORM ledger.emit(p_program, p_member_pk, 'voucher.redeemed', v_now, j)
       FROM unnest(v_ids) AS i(id) CROSS JOIN LATERAL ledger.voucher_json(i.id, false) j ORDER BY i.id;
    RETURN ROW('ok', NULL, NULL, false, NULL)::ledger.answer;
END $$;

-- 6. Giving a voucher's points back (a cancellation, or an expiry the reward refunds): to the lots they came from,
--    latest-expiring first, keeping their expiry; points of lots expired meanwhile come back expired (posted from
--    `redeemed` straight to `expired`), as refunds do. The member's lock is held by the caller.
CREATE FUNCTION ledger.voucher_give_back(v vouchers, p_now timestamptz, p_description text,
                                         OUT entry_pk bigint, OUT restored bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
DECLARE
    e record;
BEGIN
    SELECT coalesce(sum(x.points) FILTER (WHERE NOT x.expired), 0), coalesce(sum(x.points) FILTER (WHERE x.expired), 0)
      INTO restored, expired FROM ledger.restore_plan(ARRAY[v.entry_id], v.points, p_now, true) x;
    e := ledger.post(v.program_id, v.member_id, 'exchange_refund', p_now, ARRAY['redeemed', 'available', 'expired'],
                     ARRAY[-v.points, restored, expired], NULL, p_description,
                     jsonb_build_object('voucher_id', ledger.public_id('vch', v.id),
                                        'reward_id', ledger.public_id('rwd', v.reward_id)), p_to_merged => true);
    PERFORM ledger.restore_lots(ARRAY[v.entry_id], e.entry_pk, v.points, p_now, true);
    PERFORM ledger.cover_debt(v.member_id, e.entry_pk, restored);
    PERFORM ledger.forward_merged(v.program_id, v.member_id);  -- issue-15: a merged-away member's voucher
    entry_pk := e.entry_pk;
END $$;

-- POST /v1/vouchers/{code}/cancel: an issued voucher's points back, and its unit of stock (partner codes excepted:
-- the member has seen the code). p_admin: the key may cancel whenever; others only until cancellable_until.
CREATE FUNCTION ledger.cancel_voucher(p_program uuid, p_key text, p_fingerprint bytea, p_code text, p_reason text,
                                      p_admin boolean)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    v vouchers%ROWTYPE;
    x record;
    g record;
    v_now timestamptz := now();
    v_json json;
    v_balance json;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO v FROM vouchers y WHERE y.program_id = p_program AND y.code = p_code;
    IF NOT FOUND THEN
        RETURN ledger.refusal('voucher_not_found');
    END IF;
    PERFORM ledger.lock_member(v.member_id);
    SELECT * INTO v FROM vouchers WHERE id = v.id FOR UPDATE;
    SELECT * INTO x FROM ledger.voucher_misfit(v, NULL, false, NULL, NULL, NULL, v_now) f ORDER BY f.ord LIMIT 1;
    IF FOUND THEN
        RETURN ledger.refusal(x.code, x.extra);
    END IF;
    IF NOT p_admin AND NOT coalesce(v.cancellable_until > v_now, false) THEN
        RETURN ledger.refusal('insufficient_scope', jsonb_build_object(
            'detail', 'Outside the reward''s cancel window only an admin key may cancel this voucher.',
            'required_scopes', jsonb_build_array('admin')));
    END IF;
    g := ledger.voucher_give_back(v, v_now, coalesce(p_reason, 'voucher cancelled'));
    UPDATE vouchers SET status = 'cancelled', resolved_at = v_now, refund_entry_id = g.entry_pk,
                        returned_points = g.restored, returned_expired_points = g.expired
     WHERE id = v.id;
    UPDATE rewards SET stock = stock + 1 WHERE id = v.reward_id AND kind <> 'partner_code' AND stock IS NOT NULL;
    v_json := (SELECT j FROM ledger.voucher_json(v.id, false) j);
    v_balance := (SELECT j FROM ledger.balance_json(v.member_id) j);
    PERFORM ledger.emit(p_program, v.member_id, 'voucher.cancelled', v_now,
                        json_build_object('voucher', v_json, 'balance', v_balance));
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 200,
                          json_build_object('voucher', v_json, 'balance', v_balance));
END $$;

-- 7. The expiry job: the issued vouchers past their expiry of ONE member (the one with the earliest due voucher;
--    optionally of one program), up to p_limit; each expires, and gives its points back when its reward said so.
--    One member per call: the member's lock, then its vouchers, as every write takes them, so the job can deadlock
--    with nothing. A voucher resolves once: a rerun, or a concurrent run, expires nothing twice. Returns how many
--    expired (0: nothing was due).
CREATE FUNCTION ledger.expire_vouchers(p_now timestamptz, p_limit integer, p_program uuid DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v vouchers%ROWTYPE;
    g record;
    v_member bigint;
    v_expired integer := 0;
BEGIN
    SELECT y.member_id INTO v_member FROM vouchers y
     WHERE y.status = 'issued' AND y.expires_at <= p_now AND (p_program IS NULL OR y.program_id = p_program)
     ORDER BY y.expires_at LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM ledger.lock_member(v_member);
    FOR v IN
        SELECT * FROM vouchers y
         WHERE y.member_id = v_member AND y.status = 'issued' AND y.expires_at <= p_now
           AND (p_program IS NULL OR y.program_id = p_program)
         ORDER BY y.id LIMIT p_limit FOR UPDATE
    LOOP
        IF v.refund_on_expiry THEN
            g := ledger.voucher_give_back(v, p_now, 'voucher expired: points returned');
            UPDATE vouchers SET status = 'expired', resolved_at = p_now, refund_entry_id = g.entry_pk,
                                returned_points = g.restored, returned_expired_points = g.expired
             WHERE id = v.id;
        ELSE
            UPDATE vouchers SET status = 'expired', resolved_at = p_now WHERE id = v.id;
        END IF;
        PERFORM ledger.emit(v.program_id, v.member_id, 'voucher.expired', p_now,
                            (SELECT j FROM ledger.voucher_json(v.id, false) j));
        v_expired := v_expired + 1;
    END LOOP;
    RETURN v_expired;
END $$;
