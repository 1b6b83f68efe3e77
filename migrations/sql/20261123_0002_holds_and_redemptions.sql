-- Redemption: direct redeem, two-phase holds (authorise, capture, void, release on expiry), refunds.
--
-- Lock order, everywhere: the member's balance row first, then the hold or redemption row. A hold
-- reserves specific lots (soonest-expiring first) by allocating them to the hold entry, so held
-- points are outside every lot's `remaining`: they can neither be spent twice nor expired while held.

-- Give back up to p_points of the lots allocated (net) by p_from_entries, latest-expiring first, recording
-- negative allocations under p_to_entry. With p_skip_expired, points of lots expired by p_as_of are not
-- returned to their lot but counted in `expired` (a refund brings them back already expired).
CREATE FUNCTION ledger_restore_lots(p_from_entries bigint[], p_to_entry bigint, p_points bigint,
                                    p_as_of timestamptz, p_skip_expired boolean,
                                    OUT restored bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_left bigint := p_points;
    v_take bigint;
BEGIN
    restored := 0;
    expired := 0;
    FOR r IN
        SELECT a.lot_id,
               CASE WHEN l.expires_on_inactivity THEN b.activity_expires_at ELSE l.expires_at END AS expires_at,
               sum(a.points) AS net
          FROM lot_allocations a
          JOIN lots l ON l.id = a.lot_id
          JOIN member_balances b ON b.member_id = l.member_id
         WHERE a.entry_id = ANY (p_from_entries)
         GROUP BY a.lot_id, l.expires_on_inactivity, l.expires_at, b.activity_expires_at
        HAVING sum(a.points) > 0
         ORDER BY 2 DESC NULLS FIRST, a.lot_id DESC
    LOOP
        EXIT WHEN v_left <= 0;
        v_take := least(r.net, v_left);
        IF p_skip_expired AND r.expires_at IS NOT NULL AND r.expires_at <= p_as_of THEN
            expired := expired + v_take;
        ELSE
            UPDATE lots SET remaining = remaining + v_take WHERE id = r.lot_id;
            INSERT INTO lot_allocations (entry_id, lot_id, points) VALUES (p_to_entry, r.lot_id, -v_take);
            restored := restored + v_take;
        END IF;
        v_left := v_left - v_take;
    END LOOP;
    IF v_left <> 0 THEN
        RAISE EXCEPTION 'allocations of entries % cannot give back % points', p_from_entries, p_points
            USING ERRCODE = 'data_corrupted';
    END IF;
END $$;

-- After points went back into their lots: if the member's available balance is below what its spendable
-- lots now hold (it was negative: a return took back points already spent), the lots give up the
-- difference at once, soonest-expiring first, so spendable lots keep covering exactly max(available, 0).
-- The repayment is recorded as (positive) allocations under p_entry.
CREATE FUNCTION ledger_cover_debt(p_member bigint, p_entry bigint, p_restored bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_available bigint;
    v_spendable bigint;
BEGIN
    IF p_restored <= 0 THEN
        RETURN;
    END IF;
    SELECT available INTO v_available FROM member_balances WHERE member_id = p_member;
    IF v_available >= p_restored THEN
        RETURN;  -- it was not negative: nothing to repay
    END IF;
    SELECT coalesce(sum(remaining), 0) INTO v_spendable FROM lots
     WHERE member_id = p_member AND remaining > 0 AND NOT pending;
    IF v_spendable > greatest(v_available, 0) THEN
        PERFORM ledger_consume_lots(p_member, p_entry, v_spendable - greatest(v_available, 0));
    END IF;
END $$;

-- Resolve an open hold: 'void' (client cancels) or 'release' (expired; only once past expires_at).
-- Its points go back to the lots they were reserved from. Caller need not hold any lock.
CREATE FUNCTION ledger_release_hold(p_program uuid, p_hold bigint, p_kind text, p_now timestamptz)
RETURNS TABLE (status text, entry_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    h holds%ROWTYPE;
    v_entry bigint;
BEGIN
    SELECT * INTO h FROM holds WHERE id = p_hold AND program_id = p_program;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'hold_not_found'::text, NULL::bigint;
        RETURN;
    END IF;
    PERFORM 1 FROM member_balances WHERE member_id = h.member_id FOR UPDATE;
    SELECT * INTO h FROM holds WHERE id = p_hold FOR UPDATE;
    IF h.status <> 'open' THEN
        RETURN QUERY SELECT 'hold_not_open'::text, NULL::bigint;
        RETURN;
    END IF;
    IF p_kind = 'release' AND h.expires_at > p_now THEN
        RETURN QUERY SELECT 'hold_not_expired'::text, NULL::bigint;
        RETURN;
    END IF;

    INSERT INTO entries (program_id, member_id, kind, occurred_at, external_ref, description, metadata)
    VALUES (p_program, h.member_id, p_kind, p_now, NULL, h.description,
            jsonb_build_object('hold_id', h.id, 'reference', h.reference))
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, program_id, member_id, account, points) VALUES
        (v_entry, p_program, h.member_id, 'held', -h.points),
        (v_entry, p_program, h.member_id, 'available', h.points);
    PERFORM ledger_restore_lots(ARRAY[h.hold_entry_id], v_entry, h.points, p_now, false);
    UPDATE member_balances SET available = available + h.points, held = held - h.points
     WHERE member_id = h.member_id;
    PERFORM ledger_cover_debt(h.member_id, v_entry, h.points);
    UPDATE holds SET status = CASE p_kind WHEN 'void' THEN 'voided' ELSE 'expired' END,
                     resolved_at = p_now, resolve_entry_id = v_entry
     WHERE id = h.id;
    RETURN QUERY SELECT 'ok'::text, v_entry;
END $$;

-- Release a member's expired open holds before a new debit, so points whose hold lapsed are
-- spendable at once even if the release job has not run yet.
CREATE FUNCTION ledger_release_member_expired(p_member bigint, p_now timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_count integer := 0;
BEGIN
    FOR r IN SELECT id, program_id FROM holds
              WHERE member_id = p_member AND status = 'open' AND expires_at <= p_now ORDER BY id
    LOOP
        PERFORM ledger_release_hold(r.program_id, r.id, 'release', p_now);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END $$;

-- Move points out of `available` (direct redeem, or into a hold). One function for both because they
-- differ only in the account credited: 'redeemed' or 'held'.
CREATE FUNCTION ledger_debit_available(p_program uuid, p_member_ref text, p_points bigint, p_kind text,
                                       p_occurred_at timestamptz, p_reference text, p_description text,
                                       p_metadata jsonb, p_hold_expires_at timestamptz)
RETURNS TABLE (status text, entry_id bigint, object_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_member bigint;
    v_entry bigint;
    v_object bigint;
    v_account text := CASE p_kind WHEN 'hold' THEN 'held' ELSE 'redeemed' END;
BEGIN
    SELECT m.id INTO v_member FROM members m WHERE m.program_id = p_program AND m.external_id = p_member_ref;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'member_not_found'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM holds h WHERE h.member_id = v_member AND h.status = 'open'
                                       AND h.expires_at <= p_occurred_at) THEN
        PERFORM ledger_release_member_expired(v_member, p_occurred_at);
    END IF;
    PERFORM ledger_settle_member(v_member, p_occurred_at);

    UPDATE member_balances mb
       SET available = mb.available - p_points,
           held = mb.held + CASE WHEN p_kind = 'hold' THEN p_points ELSE 0 END,
           lifetime_redeemed = mb.lifetime_redeemed + CASE WHEN p_kind = 'redeem' THEN p_points ELSE 0 END
     WHERE mb.member_id = v_member AND mb.available >= p_points;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'insufficient_points'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;

    INSERT INTO entries (program_id, member_id, kind, occurred_at, description, metadata)
    VALUES (p_program, v_member, p_kind, p_occurred_at, p_description,
            p_metadata || jsonb_build_object('reference', p_reference))
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, program_id, member_id, account, points) VALUES
        (v_entry, p_program, v_member, 'available', -p_points),
        (v_entry, p_program, v_member, v_account, p_points);
    IF ledger_consume_lots(v_member, v_entry, p_points) <> 0 THEN
        RAISE EXCEPTION 'lots of member % do not cover its available balance', v_member
            USING ERRCODE = 'data_corrupted';
    END IF;

    IF p_kind = 'hold' THEN
        INSERT INTO holds (program_id, member_id, points, reference, description, expires_at, created_at,
                           hold_entry_id)
        VALUES (p_program, v_member, p_points, p_reference, p_description, p_hold_expires_at, p_occurred_at,
                v_entry)
        RETURNING id INTO v_object;
    ELSE
        INSERT INTO redemptions (program_id, member_id, points, reference, entry_id, created_at)
        VALUES (p_program, v_member, p_points, p_reference, v_entry, p_occurred_at)
        RETURNING id INTO v_object;
    END IF;
    RETURN QUERY SELECT 'ok'::text, v_entry, v_object;
END $$;

-- Capture an open, unexpired hold in full or in part: the captured points are redeemed (the
-- soonest-expiring of the reserved lots stay consumed), the rest goes back to available.
CREATE FUNCTION ledger_capture_hold(p_program uuid, p_hold bigint, p_points bigint, p_now timestamptz)
RETURNS TABLE (status text, entry_id bigint, redemption_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    h holds%ROWTYPE;
    v_capture bigint;
    v_back bigint;
    v_entry bigint;
    v_redemption bigint;
BEGIN
    SELECT * INTO h FROM holds WHERE id = p_hold AND program_id = p_program;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'hold_not_found'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    PERFORM 1 FROM member_balances WHERE member_id = h.member_id FOR UPDATE;
    SELECT * INTO h FROM holds WHERE id = p_hold FOR UPDATE;
    IF h.status <> 'open' THEN
        RETURN QUERY SELECT 'hold_not_open'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF h.expires_at <= p_now THEN
        RETURN QUERY SELECT 'hold_expired'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    v_capture := coalesce(p_points, h.points);
    IF v_capture > h.points THEN
        RETURN QUERY SELECT 'capture_exceeds_hold'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    v_back := h.points - v_capture;

    INSERT INTO entries (program_id, member_id, kind, occurred_at, description, metadata)
    VALUES (p_program, h.member_id, 'capture', p_now, h.description,
            jsonb_build_object('hold_id', h.id, 'reference', h.reference))
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, program_id, member_id, account, points)
    SELECT v_entry, p_program, h.member_id, x.account, x.points
      FROM (VALUES ('held', -h.points), ('redeemed', v_capture), ('available', v_back)) AS x(account, points)
     WHERE x.points <> 0;
    IF v_back > 0 THEN
        PERFORM ledger_restore_lots(ARRAY[h.hold_entry_id], v_entry, v_back, p_now, false);
    END IF;
    UPDATE member_balances
       SET held = held - h.points, available = available + v_back,
           lifetime_redeemed = lifetime_redeemed + v_capture
     WHERE member_id = h.member_id;
    PERFORM ledger_cover_debt(h.member_id, v_entry, v_back);
    UPDATE holds SET status = 'captured', captured_points = v_capture, resolved_at = p_now,
                     resolve_entry_id = v_entry
     WHERE id = h.id;
    IF v_capture > 0 THEN
        INSERT INTO redemptions (program_id, member_id, points, reference, entry_id, hold_id, created_at)
        VALUES (p_program, h.member_id, v_capture, h.reference, v_entry, h.id, p_now)
        RETURNING id INTO v_redemption;
    END IF;
    RETURN QUERY SELECT 'ok'::text, v_entry, v_redemption;
END $$;

-- Refund (part of) a redemption. Points go back to the lots they were taken from, latest-expiring
-- first, keeping those lots' expiry; points of lots that expired meanwhile come back expired.
CREATE FUNCTION ledger_refund(p_program uuid, p_redemption bigint, p_points bigint, p_now timestamptz,
                              p_description text, p_metadata jsonb)
RETURNS TABLE (status text, entry_id bigint, refund_id bigint, available_points bigint, expired_points bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r redemptions%ROWTYPE;
    v_sources bigint[];
    v_entry bigint;
    v_refund bigint;
    v_restored bigint;
    v_expired bigint;
BEGIN
    SELECT * INTO r FROM redemptions WHERE id = p_redemption AND program_id = p_program;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'redemption_not_found'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    PERFORM 1 FROM member_balances WHERE member_id = r.member_id FOR UPDATE;
    SELECT * INTO r FROM redemptions WHERE id = p_redemption FOR UPDATE;
    IF p_points > r.points - r.refunded_points THEN
        RETURN QUERY SELECT 'refund_exceeds_redemption'::text, NULL::bigint, NULL::bigint,
                            r.points - r.refunded_points, NULL::bigint;
        RETURN;
    END IF;

    -- the entries whose allocations make up this redemption: the redeem entry, or hold + capture,
    -- plus earlier refunds (their negative allocations already gave some back)
    SELECT array_agg(x) INTO v_sources FROM (
        SELECT r.entry_id AS x
        UNION ALL SELECT h.hold_entry_id FROM holds h WHERE h.id = r.hold_id
        UNION ALL SELECT f.entry_id FROM redemption_refunds f WHERE f.redemption_id = r.id
    ) s;

    INSERT INTO entries (program_id, member_id, kind, occurred_at, description, metadata)
    VALUES (p_program, r.member_id, 'refund', p_now, p_description,
            p_metadata || jsonb_build_object('redemption_id', r.id, 'reference', r.reference))
    RETURNING id INTO v_entry;
    SELECT x.restored, x.expired INTO v_restored, v_expired
      FROM ledger_restore_lots(v_sources, v_entry, p_points, p_now, true) x;
    INSERT INTO postings (entry_id, program_id, member_id, account, points)
    SELECT v_entry, p_program, r.member_id, x.account, x.points
      FROM (VALUES ('redeemed', -p_points), ('available', v_restored), ('expired', v_expired)) AS x(account, points)
     WHERE x.points <> 0;
    UPDATE member_balances
       SET available = available + v_restored, lifetime_redeemed = lifetime_redeemed - p_points
     WHERE member_id = r.member_id;
    PERFORM ledger_cover_debt(r.member_id, v_entry, v_restored);
    UPDATE redemptions SET refunded_points = refunded_points + p_points WHERE id = r.id;
    INSERT INTO redemption_refunds (redemption_id, entry_id, points, available_points, expired_points, created_at)
    VALUES (r.id, v_entry, p_points, v_restored, v_expired, p_now)
    RETURNING id INTO v_refund;
    RETURN QUERY SELECT 'ok'::text, v_entry, v_refund, v_restored, v_expired;
END $$;

-- The release job: up to p_limit expired open holds in one transaction, members locked in id order (so
-- concurrent runs cannot deadlock); a hold resolves at most once, so reruns release nothing twice.
-- issue-18: p_program limits the release to one program's holds (NULL: every program).
CREATE FUNCTION ledger_release_expired_holds(p_now timestamptz, p_limit integer, p_program uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    x record;
    v_released integer := 0;
BEGIN
    FOR r IN
        SELECT id, program_id FROM holds WHERE status = 'open' AND expires_at <= p_now
           AND (p_program IS NULL OR program_id = p_program)  -- issue-18
         ORDER BY member_id, id LIMIT p_limit
    LOOP
        SELECT * INTO x FROM ledger_release_hold(r.program_id, r.id, 'release', p_now);
        IF x.status = 'ok' THEN
            v_released := v_released + 1;
        END IF;
    END LOOP;
    RETURN v_released;
END $$;
