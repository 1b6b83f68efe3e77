-- Redemption: direct redeems, two-phase holds (authorise, capture, void, release on expiry), refunds.
--
-- Lock order, everywhere: the member's balance row first, then the hold or redemption row. A hold reserves
-- specific lots (soonest-expiring first) by allocating them to the hold entry, so held points are outside
-- every lot's `remaining`: they can neither be spent twice nor expire while held.
-- Money in answers: `p_points_per_unit` (points worth 1.00), `p_minor_units` and `p_currency` of the program.

-- 1. As the API shows them (inlined renderers, see ledger.balance_json).
CREATE FUNCTION ledger.hold_json(p_hold_pk bigint, p_points_per_unit integer, p_minor_units integer, p_currency text)
RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', ledger.public_id('hold', h.id), 'member_id', m.external_id, 'points', h.points,
        'captured_points', h.captured_points,
        'status', CASE WHEN h.status = 'open' AND h.expires_at <= now() THEN 'expired' ELSE h.status END,
        'reference', h.reference, 'description', h.description,
        'amount', ledger.money(h.points, p_points_per_unit, p_minor_units), 'currency', p_currency,
        'expires_at', ledger.ts(h.expires_at), 'created_at', ledger.ts(h.created_at),
        'resolved_at', ledger.ts(h.resolved_at), 'hold_entry_id', ledger.public_id('ent', h.hold_entry_id),
        'resolve_entry_id', ledger.public_id('ent', h.resolve_entry_id),
        'redemption_id', (SELECT ledger.public_id('rdm', r.id) FROM redemptions r WHERE r.hold_id = h.id))
    FROM holds h JOIN members m ON m.id = h.member_id
    WHERE h.id = p_hold_pk
$$;

CREATE FUNCTION ledger.redemption_json(p_redemption_pk bigint, p_points_per_unit integer, p_minor_units integer,
                                       p_currency text)
RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', ledger.public_id('rdm', r.id), 'member_id', m.external_id, 'points', r.points,
        'refunded_points', r.refunded_points, 'amount', ledger.money(r.points, p_points_per_unit, p_minor_units),
        'currency', p_currency, 'reference', r.reference, 'entry_id', ledger.public_id('ent', r.entry_id),
        'hold_id', ledger.public_id('hold', r.hold_id), 'created_at', ledger.ts(r.created_at),
        'refunds', (SELECT coalesce(json_agg(json_build_object(
                        'id', ledger.public_id('rfd', f.id), 'entry_id', ledger.public_id('ent', f.entry_id),
                        'points', f.points, 'available_points', f.available_points,
                        'expired_points', f.expired_points, 'created_at', ledger.ts(f.created_at)) ORDER BY f.id),
                        '[]'::json)
                      FROM redemption_refunds f WHERE f.redemption_id = r.id))
    FROM redemptions r JOIN members m ON m.id = r.member_id
    WHERE r.id = p_redemption_pk
$$;

CREATE FUNCTION ledger.hold_read(p_program uuid, p_hold_id text, p_points_per_unit integer, p_minor_units integer,
                                 p_currency text) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT j FROM holds h CROSS JOIN LATERAL ledger.hold_json(h.id, p_points_per_unit, p_minor_units, p_currency) j
     WHERE h.id = ledger.row_id('hold', p_hold_id) AND h.program_id = p_program
$$;

CREATE FUNCTION ledger.redemption_read(p_program uuid, p_redemption_id text, p_points_per_unit integer,
                                       p_minor_units integer, p_currency text) RETURNS SETOF json
LANGUAGE sql STABLE AS $$
    SELECT j FROM redemptions r
     CROSS JOIN LATERAL ledger.redemption_json(r.id, p_points_per_unit, p_minor_units, p_currency) j
     WHERE r.id = ledger.row_id('rdm', p_redemption_id) AND r.program_id = p_program
$$;

-- 2. Resolve an open hold without capturing: 'void' (the client cancels) or 'release' (expired). Its points go
--    back to the lots they were reserved from. Takes the member's lock, then the hold's.
CREATE FUNCTION ledger.release_hold(p_hold_pk bigint, p_kind text, p_now timestamptz) RETURNS ledger.status
LANGUAGE plpgsql AS $$
DECLARE
    h holds%ROWTYPE;
    e record;
BEGIN
    SELECT * INTO h FROM holds WHERE id = p_hold_pk;
    PERFORM ledger.lock_member(h.member_id);
    SELECT * INTO h FROM holds WHERE id = p_hold_pk FOR UPDATE;
    IF h.status <> 'open' THEN
        RETURN 'hold_not_open';
    END IF;
    IF p_kind = 'release' AND h.expires_at > p_now THEN
        RETURN 'hold_not_open';  -- not due yet: nothing to release
    END IF;
    e := ledger.post(h.program_id, h.member_id, p_kind, p_now, ARRAY['held', 'available'], ARRAY[-h.points, h.points],
                     p_description => h.description,
                     p_metadata => jsonb_build_object('hold_id', ledger.public_id('hold', h.id), 'reference', h.reference));
    PERFORM ledger.restore_lots(ARRAY[h.hold_entry_id], e.entry_pk, h.points, p_now, false);
    PERFORM ledger.cover_debt(h.member_id, e.entry_pk, h.points);
    UPDATE holds SET status = CASE p_kind WHEN 'void' THEN 'voided' ELSE 'expired' END,
                     resolved_at = p_now, resolve_entry_id = e.entry_pk
     WHERE id = h.id;
    IF p_kind = 'release' THEN  -- (a void is announced with its answer, by ledger.resolve_hold)
        PERFORM ledger.emit(h.program_id, h.member_id, 'hold.expired', p_now, json_build_object(
            'hold', (SELECT j FROM ledger.program_money(h.program_id) pm
                      CROSS JOIN LATERAL ledger.hold_json(h.id, pm.points_per_unit, pm.minor_units, pm.currency) j),
            'balance', (SELECT j FROM ledger.balance_json(h.member_id) j)));
    END IF;
    RETURN 'ok';
END $$;

-- 3. Redeem (kind 'redeem': available -> redeemed) or hold (kind 'hold': available -> held) p_points of a member,
--    soonest-expiring lots first. The amount rules of the program (minimum, increment, share of the order) are
--    checked by the service before; the member's status here.
CREATE FUNCTION ledger.redeem(
    p_program uuid, p_key text, p_fingerprint bytea, p_member_ref text, p_points bigint, p_kind text,
    p_reference text, p_description text, p_metadata jsonb, p_hold_expires_at timestamptz,
    p_points_per_unit integer, p_minor_units integer, p_currency text)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    m members%ROWTYPE;
    v_status ledger.status;
    v_now timestamptz := now();
    v_object bigint;
    v_body json;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO m FROM ledger.member(p_program, p_member_ref);
    IF NOT FOUND THEN
        RETURN ledger.refusal('member_not_found');
    END IF;
    v_status := ledger.status_allows(m.status, 'spend');
    IF v_status <> 'ok' THEN
        RETURN ledger.refusal(v_status);
    END IF;
    PERFORM ledger.settle(m.id, v_now);
    e := ledger.post(p_program, m.id, p_kind, v_now,
                     ARRAY['available', CASE p_kind WHEN 'hold' THEN 'held' ELSE 'redeemed' END],
                     ARRAY[-p_points, p_points], NULL, p_description,
                     coalesce(p_metadata, '{}') || jsonb_build_object('reference', p_reference));
    IF e.entry_pk IS NULL THEN
        RETURN ledger.refusal('insufficient_points',
                              jsonb_build_object('available', (SELECT b.available FROM ledger.balance(m.id) b)));
    END IF;
    PERFORM ledger.consume_lots_exactly(m.id, e.entry_pk, p_points);
    IF p_kind = 'hold' THEN
        INSERT INTO holds (program_id, member_id, points, reference, description, expires_at, created_at, hold_entry_id)
        VALUES (p_program, m.id, p_points, p_reference, p_description, p_hold_expires_at, v_now, e.entry_pk)
        RETURNING id INTO v_object;
        v_body := json_build_object(
            'hold', (SELECT j FROM ledger.hold_json(v_object, p_points_per_unit, p_minor_units, p_currency) j),
            'balance', (SELECT j FROM ledger.balance_json(m.id) j));
        PERFORM ledger.emit(p_program, m.id, 'hold.created', v_now, v_body);
        RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
    END IF;
    INSERT INTO redemptions (program_id, member_id, points, reference, entry_id, created_at)
    VALUES (p_program, m.id, p_points, p_reference, e.entry_pk, v_now)
    RETURNING id INTO v_object;
    v_body := json_build_object(
        'redemption', (SELECT j FROM ledger.redemption_json(v_object, p_points_per_unit, p_minor_units, p_currency) j),
        'balance', (SELECT j FROM ledger.balance_json(m.id) j));
    PERFORM ledger.emit(p_program, m.id, 'points.redeemed', v_now, v_body);
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
END $$;

-- 4. Capture (p_kind 'capture', p_points NULL: all of it) or void (p_kind 'void') an open hold. A capture
--    redeems the captured points (the soonest-expiring of the reserved lots stay consumed) and gives the rest
--    back; a partial capture follows the program's redemption rules (p_min_points, p_increment).
CREATE FUNCTION ledger.resolve_hold(
    p_program uuid, p_key text, p_fingerprint bytea, p_hold_id text, p_kind text, p_points bigint,
    p_min_points bigint, p_increment bigint, p_points_per_unit integer, p_minor_units integer, p_currency text)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    h holds%ROWTYPE;
    v_now timestamptz := now();
    v_member_status text;
    v_status ledger.status;
    v_capture bigint;
    v_back bigint;
    v_redemption bigint;
    v_body json;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO h FROM holds x WHERE x.id = ledger.row_id('hold', p_hold_id) AND x.program_id = p_program;
    IF NOT FOUND THEN
        RETURN ledger.refusal('hold_not_found');
    END IF;
    IF p_kind = 'void' THEN
        v_status := ledger.release_hold(h.id, 'void', v_now);
        IF v_status <> 'ok' THEN
            RETURN ledger.refusal(v_status);
        END IF;
        v_body := json_build_object(
            'hold', (SELECT j FROM ledger.hold_json(h.id, p_points_per_unit, p_minor_units, p_currency) j),
            'balance', (SELECT j FROM ledger.balance_json(h.member_id) j));
        PERFORM ledger.emit(p_program, h.member_id, 'hold.voided', v_now, v_body);
        RETURN ledger.respond(p_program, p_key, p_fingerprint, 200, v_body);
    END IF;

    PERFORM ledger.lock_member(h.member_id);
    SELECT * INTO h FROM holds WHERE id = h.id FOR UPDATE;
    IF h.status <> 'open' THEN
        RETURN ledger.refusal('hold_not_open');
    END IF;
    IF h.expires_at <= v_now THEN
        RETURN ledger.refusal('hold_expired');
    END IF;
    SELECT status INTO v_member_status FROM members WHERE id = h.member_id;
    v_status := ledger.status_allows(v_member_status, 'spend');
    IF v_status <> 'ok' THEN
        RETURN ledger.refusal(v_status);
    END IF;
    v_capture := coalesce(p_points, h.points);
    IF v_capture > h.points THEN
        RETURN ledger.refusal('capture_exceeds_hold');
    END IF;
    IF v_capture < h.points AND (v_capture < p_min_points OR v_capture % p_increment <> 0) THEN
        RETURN ledger.refusal('invalid_redeem_amount', jsonb_build_object(
            'detail', format('A partial capture follows the redemption rules: at least %s points, in steps of %s.',
                             p_min_points, p_increment)));
    END IF;
    v_back := h.points - v_capture;
    e := ledger.post(p_program, h.member_id, 'capture', v_now, ARRAY['held', 'redeemed', 'available'],
                     ARRAY[-h.points, v_capture, v_back], p_description => h.description,
                     p_metadata => jsonb_build_object('hold_id', ledger.public_id('hold', h.id), 'reference', h.reference));
    IF v_back > 0 THEN
        PERFORM ledger.restore_lots(ARRAY[h.hold_entry_id], e.entry_pk, v_back, v_now, false);
        PERFORM ledger.cover_debt(h.member_id, e.entry_pk, v_back);
    END IF;
    UPDATE holds SET status = 'captured', captured_points = v_capture, resolved_at = v_now, resolve_entry_id = e.entry_pk
     WHERE id = h.id;
    INSERT INTO redemptions (program_id, member_id, points, reference, entry_id, hold_id, created_at)
    VALUES (p_program, h.member_id, v_capture, h.reference, e.entry_pk, h.id, v_now)
    RETURNING id INTO v_redemption;
    v_body := json_build_object(
        'hold', (SELECT j FROM ledger.hold_json(h.id, p_points_per_unit, p_minor_units, p_currency) j),
        'redemption', (SELECT j FROM ledger.redemption_json(v_redemption, p_points_per_unit, p_minor_units, p_currency) j),
        'balance', (SELECT j FROM ledger.balance_json(h.member_id) j));
    PERFORM ledger.emit_all(p_program, h.member_id, ARRAY['hold.captured', 'points.redeemed'], v_now, v_body);
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 200, v_body);
END $$;

-- 5. Refund (part of) a redemption. Points go back to the lots they were taken from, latest-expiring first,
--    keeping those lots' expiry; points of lots that expired meanwhile come back expired.
CREATE FUNCTION ledger.refund(
    p_program uuid, p_key text, p_fingerprint bytea, p_redemption_id text, p_points bigint, p_description text,
    p_metadata jsonb, p_points_per_unit integer, p_minor_units integer, p_currency text)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    r redemptions%ROWTYPE;
    v_now timestamptz := now();
    v_sources bigint[];
    v_restored bigint;
    v_expired bigint;
    v_refund bigint;
    v_body json;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO r FROM redemptions x WHERE x.id = ledger.row_id('rdm', p_redemption_id) AND x.program_id = p_program;
    IF NOT FOUND THEN
        RETURN ledger.refusal('redemption_not_found');
    END IF;
    PERFORM ledger.lock_member(r.member_id);
    SELECT * INTO r FROM redemptions WHERE id = r.id FOR UPDATE;
    IF p_points > r.points - r.refunded_points THEN
        RETURN ledger.refusal('refund_exceeds_redemption', jsonb_build_object('refundable', r.points - r.refunded_points));
    END IF;
    -- the entries whose allocations make up this redemption: the redeem entry, or hold + capture, plus earlier
    -- refunds (their negative allocations gave some back already)
    SELECT array_agg(x) INTO v_sources FROM (
        SELECT r.entry_id AS x
        UNION ALL SELECT h.hold_entry_id FROM holds h WHERE h.id = r.hold_id
        UNION ALL SELECT f.entry_id FROM redemption_refunds f WHERE f.redemption_id = r.id
    ) s;
    -- which lots the points go back to decides the postings (expired lots: to `expired`)
    SELECT coalesce(sum(x.points) FILTER (WHERE NOT x.expired), 0), coalesce(sum(x.points) FILTER (WHERE x.expired), 0)
      INTO v_restored, v_expired FROM ledger.restore_plan(v_sources, p_points, v_now, true) x;
    e := ledger.post(p_program, r.member_id, 'refund', v_now, ARRAY['redeemed', 'available', 'expired'],
                     ARRAY[-p_points, v_restored, v_expired], NULL, p_description,
                     coalesce(p_metadata, '{}') || jsonb_build_object('redemption_id', ledger.public_id('rdm', r.id),
                                                                     'reference', r.reference), p_to_merged => true);
    PERFORM ledger.restore_lots(v_sources, e.entry_pk, p_points, v_now, true);
    PERFORM ledger.cover_debt(r.member_id, e.entry_pk, v_restored);
    PERFORM ledger.forward_merged(p_program, r.member_id);  -- issue-15: a merged-away member's refund
    UPDATE redemptions SET refunded_points = refunded_points + p_points WHERE id = r.id;
    INSERT INTO redemption_refunds (redemption_id, entry_id, points, available_points, expired_points, created_at)
    VALUES (r.id, e.entry_pk, p_points, v_restored, v_expired, v_now)
    RETURNING id INTO v_refund;
    v_body := json_build_object(
        'refund', (SELECT json_build_object('id', ledger.public_id('rfd', f.id), 'entry_id', ledger.public_id('ent', f.entry_id),
                          'points', f.points, 'available_points', f.available_points, 'expired_points', f.expired_points,
                          'created_at', ledger.ts(f.created_at)) FROM redemption_refunds f WHERE f.id = v_refund),
        'redemption', (SELECT j FROM ledger.redemption_json(r.id, p_points_per_unit, p_minor_units, p_currency) j),
        'balance', (SELECT j FROM ledger.balance_json(ledger.survivor(r.member_id)) j));
    PERFORM ledger.emit(p_program, ledger.survivor(r.member_id), 'points.refunded', v_now, v_body);
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
END $$;

-- 6. The release job: up to p_limit expired open holds (optionally of one program), members locked in id
--    order (concurrent runs cannot deadlock); a hold resolves at most once, so reruns release nothing twice.
CREATE FUNCTION ledger.release_expired_holds(p_now timestamptz, p_limit integer, p_program uuid DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_released integer := 0;
BEGIN
    FOR r IN
        SELECT id FROM holds WHERE status = 'open' AND expires_at <= p_now
                               AND (p_program IS NULL OR program_id = p_program)
         ORDER BY member_id, id LIMIT p_limit
    LOOP
        IF ledger.release_hold(r.id, 'release', p_now) = 'ok' THEN
            v_released := v_released + 1;
        END IF;
    END LOOP;
    RETURN v_released;
END $$;
