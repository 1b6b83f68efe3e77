-- Manual adjustments and reversals (admin).

-- Credit (a new lot) or debit (soonest-expiring lots first, never below zero) a member by hand.
-- p_occurred_at NULL: now (the transaction's time, so it equals recorded_at).
CREATE FUNCTION ledger.adjust(
    p_program uuid, p_key text, p_fingerprint bytea, p_member_ref text, p_points bigint, p_occurred_at timestamptz,
    p_external_ref text, p_reason text, p_metadata jsonb, p_expires_at timestamptz, p_expires_on_inactivity boolean)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    v_member bigint;
    v_at timestamptz := coalesce(p_occurred_at, now());
    v_body json;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT m.id INTO v_member FROM ledger.member(p_program, p_member_ref) m;
    IF NOT FOUND THEN
        RETURN ledger.refusal('member_not_found');
    END IF;
    IF p_external_ref IS NOT NULL AND EXISTS (
        SELECT 1 FROM entries x WHERE x.program_id = p_program AND x.kind = 'adjust' AND x.external_ref = p_external_ref)
    THEN
        RETURN ledger.refusal('external_ref_conflict');
    END IF;
    IF p_points < 0 THEN
        PERFORM ledger.settle(v_member, now());
    END IF;
    e := ledger.post(p_program, v_member, 'adjust', v_at, ARRAY['available', 'adjustments'],
                     ARRAY[p_points, -p_points], p_external_ref, p_reason, p_metadata);
    IF e.entry_pk IS NULL THEN
        RETURN ledger.refusal('insufficient_points',
                              jsonb_build_object('available', (SELECT b.available FROM ledger.balance(v_member) b)));
    END IF;
    IF p_points > 0 THEN
        PERFORM ledger.credit_lot(p_program, v_member, e.entry_pk, p_points, e.available_before, v_at, p_expires_at,
                                  false, p_expires_on_inactivity);
    ELSE
        PERFORM ledger.consume_lots_exactly(v_member, e.entry_pk, -p_points);
    END IF;
    v_body := json_build_object('entry', (SELECT j FROM ledger.entry_json(e.entry_pk) j),
                                'balance', (SELECT j FROM ledger.balance_json(v_member) j));
    PERFORM ledger.emit_all(p_program, v_member, ARRAY['points.adjusted', CASE WHEN p_points > 0 THEN 'points.earned' END],
                            v_at, v_body);
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
END $$;

-- Post the mirror image of a manual adjustment, once. Points it credited are taken back from the lots it
-- created first (then soonest-expiring); points it debited go back to the very lots they came from, so they keep
-- their expiry. Redemptions have refunds, holds void and capture, purchases returns: only 'adjust' reverses.
CREATE FUNCTION ledger.reverse(p_program uuid, p_key text, p_fingerprint bytea, p_entry_id text, p_reason text,
                               p_metadata jsonb)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    o entries%ROWTYPE;
    v_accounts text[];
    v_points bigint[];
    v_available bigint;
    v_other integer;
    v_body json;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO o FROM entries x WHERE x.id = ledger.row_id('ent', p_entry_id) AND x.program_id = p_program;
    IF NOT FOUND THEN
        RETURN ledger.refusal('entry_not_found');
    END IF;
    IF o.kind <> 'adjust' OR o.member_id IS NULL THEN
        RETURN ledger.refusal('entry_not_reversible');
    END IF;
    -- The member's lock first, so two concurrent reversals of one entry serialise here.
    PERFORM ledger.lock_member(o.member_id);
    IF EXISTS (SELECT 1 FROM entries x WHERE x.reverses_entry_id = o.id) THEN
        RETURN ledger.refusal('entry_already_reversed');
    END IF;
    SELECT array_agg(p.account ORDER BY p.id), array_agg(-p.points ORDER BY p.id),
           coalesce(sum(p.points) FILTER (WHERE p.account = 'available'), 0),
           count(*) FILTER (WHERE p.account IN ('pending', 'held'))
      INTO v_accounts, v_points, v_available, v_other
      FROM postings p WHERE p.entry_id = o.id;
    IF v_other > 0 THEN
        RETURN ledger.refusal('entry_not_reversible');
    END IF;
    e := ledger.post(p_program, o.member_id, 'reverse', now(), v_accounts, v_points, NULL, p_reason, p_metadata, o.id);
    IF e.entry_pk IS NULL THEN
        RETURN ledger.refusal('insufficient_points',
                              jsonb_build_object('available', (SELECT b.available FROM ledger.balance(o.member_id) b)));
    END IF;
    IF v_available > 0 THEN
        PERFORM ledger.consume_lots_exactly(o.member_id, e.entry_pk, v_available, o.id);
    ELSIF v_available < 0 THEN
        WITH back AS (
            SELECT x.lot_id, sum(x.points) AS points FROM lot_allocations x
             WHERE x.entry_id = o.id GROUP BY x.lot_id HAVING sum(x.points) <> 0
        ), restored AS (
            UPDATE lots l SET remaining = l.remaining + back.points FROM back WHERE l.id = back.lot_id
        )
        INSERT INTO lot_allocations (entry_id, lot_id, points)
        SELECT e.entry_pk, back.lot_id, -back.points FROM back ORDER BY back.lot_id;
        PERFORM ledger.cover_debt(o.member_id, e.entry_pk, -v_available);
    END IF;
    v_body := json_build_object('entry', (SELECT j FROM ledger.entry_json(e.entry_pk) j),
                                'balance', (SELECT j FROM ledger.balance_json(o.member_id) j));
    PERFORM ledger.emit(p_program, o.member_id, 'points.reversed', now(), v_body);
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
END $$;
