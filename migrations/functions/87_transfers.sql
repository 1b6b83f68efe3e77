-- Transfers between members (POST /v1/transfers): gifting, family pooling. Off unless the program's settings enable
-- them; the minimum and maximum are checked by the service (app/ledger/transfers.py), the sender's daily limit here,
-- under its lock.
--
-- One entry (kind `transfer`, ledger.post_between): the sender's available -points, the receiver's available +points.
-- The sender's lots are consumed soonest-expiring first (ledger.consume_lots), and the receiver gets lots with the
-- SAME expiry as the points they came from (one lot per expiry): a gift never extends the life of points, so a
-- transfer cannot be used to keep expiring points alive. Points the sender held under the activity policy arrive
-- with the date the sender's activity gave them then (ledger.lot_expires_at), as a fixed expiry.

-- A transfer as the API shows it.
CREATE FUNCTION ledger.transfer_json(p_transfer_pk bigint) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', ledger.public_id('trf', t.id), 'from_member_id', f.external_id, 'to_member_id', r.external_id,
        'points', t.points, 'reference', t.reference, 'description', t.description,
        'entry_id', ledger.public_id('ent', t.entry_id), 'created_at', ledger.ts(t.created_at))
      FROM transfers t JOIN members f ON f.id = t.from_member_id JOIN members r ON r.id = t.to_member_id
     WHERE t.id = p_transfer_pk
$$;

-- The receiver's lots of an entry that consumed the sender's lots (a transfer, a merge): one per expiry of the lots
-- consumed (and per pending/available state and activation time, for a merge's pending lots), credited in order of
-- expiry. p_available_before: the receiver's available points before the entry (a credit first repays a negative
-- balance, ledger.credit_lot).
CREATE FUNCTION ledger.copy_lots(p_program uuid, p_entry bigint, p_from_member bigint, p_to_member bigint,
                                 p_available_before bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_before bigint := p_available_before;
    r record;
BEGIN
    FOR r IN
        SELECT ledger.lot_expires_at(l.expires_at, l.expires_on_inactivity, b.activity_expires_at) AS expires_at,
               l.pending, CASE WHEN l.pending THEN l.available_at END AS pending_until, sum(a.points)::bigint AS points
          FROM lot_allocations a JOIN lots l ON l.id = a.lot_id
          JOIN member_balances b ON b.member_id = p_from_member
         WHERE a.entry_id = p_entry AND l.member_id = p_from_member
         GROUP BY 1, 2, 3 HAVING sum(a.points) > 0
         ORDER BY 1 NULLS LAST, 2, 3
    LOOP
        PERFORM ledger.credit_lot(p_program, p_to_member, p_entry, r.points, v_before,
                                  coalesce(r.pending_until, now()), r.expires_at, r.pending, false);
        IF NOT r.pending THEN
            v_before := v_before + r.points;
        END IF;
    END LOOP;
END $$;

-- Transfer p_points of available points from one member to another. p_day_start: the start of the program's local
-- day (the daily limit counts the sender's transfers since then); p_daily_limit NULL: none.
CREATE FUNCTION ledger.transfer(
    p_program uuid, p_key text, p_fingerprint bytea, p_from_ref text, p_to_ref text, p_points bigint,
    p_reference text, p_description text, p_day_start timestamptz, p_daily_limit bigint)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    f members%ROWTYPE;
    t members%ROWTYPE;
    v_status ledger.status;
    v_now timestamptz := now();
    v_sent bigint;
    v_to_before bigint;
    v_transfer bigint;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO f FROM ledger.member(p_program, p_from_ref);
    IF NOT FOUND THEN
        RETURN ledger.refusal('member_not_found', jsonb_build_object('member_id', p_from_ref));
    END IF;
    SELECT * INTO t FROM ledger.member(p_program, p_to_ref);
    IF NOT FOUND THEN
        RETURN ledger.refusal('member_not_found', jsonb_build_object('member_id', p_to_ref));
    END IF;
    IF f.id = t.id THEN  -- (also: one reference an alias of the other, ledger.merge)
        RETURN ledger.refusal('same_member');
    END IF;
    v_status := ledger.status_allows(f.status, 'spend');
    IF v_status = 'ok' THEN
        v_status := ledger.status_allows(t.status, 'earn');
    END IF;
    IF v_status <> 'ok' THEN
        RETURN ledger.refusal(v_status);
    END IF;
    PERFORM ledger.lock_members(ARRAY[f.id, t.id]);
    IF EXISTS (SELECT 1 FROM member_balances x WHERE x.member_id IN (f.id, t.id) AND x.merged_into IS NOT NULL) THEN
        RAISE EXCEPTION 'a member of transfer % -> % was merged meanwhile', p_from_ref, p_to_ref
            USING ERRCODE = 'serialization_failure';  -- it runs again and finds the survivors
    END IF;
    PERFORM ledger.settle(f.id, v_now);
    IF p_daily_limit IS NOT NULL THEN
        SELECT coalesce(sum(x.points), 0) INTO v_sent FROM transfers x
         WHERE x.from_member_id = f.id AND x.created_at >= p_day_start;
        IF v_sent + p_points > p_daily_limit THEN
            RETURN ledger.refusal('transfer_limit_reached', jsonb_build_object(
                'daily_limit', p_daily_limit, 'sent_today', v_sent, 'remaining', greatest(p_daily_limit - v_sent, 0)));
        END IF;
    END IF;
    SELECT b.available INTO v_to_before FROM member_balances b WHERE b.member_id = t.id;
    e := ledger.post(p_program, f.id, 'transfer', v_now, ARRAY['available', 'available'], ARRAY[-p_points, p_points],
                     NULL, p_description, jsonb_build_object('reference', p_reference),
                     p_members => ARRAY[f.id, t.id]);
    IF e.entry_pk IS NULL THEN
        RETURN ledger.refusal('insufficient_points',
                              jsonb_build_object('available', (SELECT b.available FROM ledger.balance(f.id) b)));
    END IF;
    PERFORM ledger.consume_lots_exactly(f.id, e.entry_pk, p_points);
    PERFORM ledger.copy_lots(p_program, e.entry_pk, f.id, t.id, v_to_before);
    INSERT INTO transfers (program_id, from_member_id, to_member_id, points, reference, description, entry_id,
                           created_at)
    VALUES (p_program, f.id, t.id, p_points, p_reference, p_description, e.entry_pk, v_now)
    RETURNING id INTO v_transfer;
    PERFORM ledger.emit(p_program, f.id, 'points.transferred_out', v_now, json_build_object(
        'transfer', (SELECT j FROM ledger.transfer_json(v_transfer) j),
        'entry', (SELECT j FROM ledger.entry_json(e.entry_pk) j),
        'balance', (SELECT j FROM ledger.balance_json(f.id) j)));
    PERFORM ledger.emit(p_program, t.id, 'points.transferred_in', v_now, json_build_object(
        'transfer', (SELECT j FROM ledger.transfer_json(v_transfer) j),
        'entry', (SELECT j FROM ledger.entry_json(e.entry_pk) j),
        'balance', (SELECT j FROM ledger.balance_json(t.id) j)));
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, json_build_object(
        'transfer', (SELECT j FROM ledger.transfer_json(v_transfer) j),
        'entry', (SELECT j FROM ledger.entry_json(e.entry_pk) j),
        'from_balance', (SELECT j FROM ledger.balance_json(f.id) j),
        'to_balance', (SELECT j FROM ledger.balance_json(t.id) j)));
END $$;
