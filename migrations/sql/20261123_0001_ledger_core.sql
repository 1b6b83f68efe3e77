-- Ledger invariants and hot-path operations of the double-entry core.
-- Loaded by migrations/versions/20261123_0001_ledger_core.py after the tables exist.

-- 1. Append-only: entries, postings and lot allocations can never be changed or removed.
CREATE FUNCTION ledger_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER lot_allocations_append_only BEFORE UPDATE OR DELETE ON lot_allocations
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER lot_allocations_no_truncate BEFORE TRUNCATE ON lot_allocations
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- 2. Zero-sum: checked at COMMIT (deferred), so an entry and its postings can be inserted in any
--    order inside one transaction, but no transaction can commit an unbalanced entry, an entry with
--    fewer than two postings, or a posting added to an entry that was balanced before.
CREATE FUNCTION ledger_check_entry(p_entry bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_sum numeric;
    v_count integer;
BEGIN
    SELECT coalesce(sum(points), 0), count(*) INTO v_sum, v_count FROM postings WHERE entry_id = p_entry;
    IF v_count < 2 OR v_sum <> 0 THEN
        RAISE EXCEPTION 'entry % is not balanced: % postings summing to %', p_entry, v_count, v_sum
            USING ERRCODE = 'check_violation';
    END IF;
END $$;

CREATE FUNCTION ledger_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_entry(NEW.id);
    RETURN NULL;
END $$;

CREATE FUNCTION ledger_posting_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_entry(NEW.entry_id);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entry_balanced();
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_posting_balanced();

-- 3. Lots. Consume p_points of a member's open lots, soonest-expiring first (never-expiring last, then
--    oldest), recording each allocation under p_entry. With p_from_entry, only the lots that entry
--    created are used. The caller must hold the member's balance row lock: every change to a member's
--    lots happens under that one lock. Returns the points no lot could cover.
CREATE FUNCTION ledger_consume_lots(p_member bigint, p_entry bigint, p_points bigint,
                                    p_from_entry bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint := p_points;
    v_take bigint;
    r record;
BEGIN
    FOR r IN
        SELECT id, remaining FROM lots
        WHERE member_id = p_member AND remaining > 0 AND NOT pending
          AND (p_from_entry IS NULL OR entry_id = p_from_entry)
        ORDER BY expires_at ASC NULLS LAST, id
    LOOP
        EXIT WHEN v_left <= 0;
        v_take := least(r.remaining, v_left);
        UPDATE lots SET remaining = remaining - v_take WHERE id = r.id;
        INSERT INTO lot_allocations (entry_id, lot_id, points) VALUES (p_entry, r.id, v_take);
        v_left := v_left - v_take;
    END LOOP;
    RETURN v_left;
END $$;

-- Create the lot of a credit. A credit to a member whose available balance is negative (a return
-- clawed back points that were already spent) first pays that debt: the repaid points are allocated
-- out of the new lot at once, so spendable lots always cover exactly max(available, 0). Pending lots
-- repay nothing until they are activated.
CREATE FUNCTION ledger_credit_lot(p_program uuid, p_member bigint, p_entry bigint, p_points bigint,
                                  p_available_before bigint, p_available_at timestamptz,
                                  p_expires_at timestamptz, p_pending boolean,
                                  p_expires_on_inactivity boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_lot bigint;
    v_repay bigint := CASE WHEN p_pending THEN 0 ELSE least(p_points, greatest(0, -p_available_before)) END;
BEGIN
    INSERT INTO lots (program_id, member_id, entry_id, points, remaining, available_at, expires_at, pending,
                      expires_on_inactivity)
    VALUES (p_program, p_member, p_entry, p_points, p_points - v_repay, p_available_at, p_expires_at, p_pending,
            p_expires_on_inactivity)
    RETURNING id INTO v_lot;
    IF v_repay > 0 THEN
        INSERT INTO lot_allocations (entry_id, lot_id, points) VALUES (p_entry, v_lot, v_repay);
    END IF;
    RETURN v_lot;
END $$;

-- Activate a member's pending lots whose return window has passed (pending -> available), in one
-- 'activate' entry. Newly spendable points first repay a negative available balance. The caller holds
-- the member's lock, or this takes it. Returns the points activated.
CREATE FUNCTION ledger_activate_due(p_member bigint, p_now timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_program uuid;
    v_total bigint;
    v_before bigint;
    v_debt bigint;
    v_take bigint;
    v_entry bigint;
    r record;
BEGIN
    SELECT program_id, available INTO v_program, v_before FROM member_balances WHERE member_id = p_member FOR UPDATE;
    SELECT coalesce(sum(remaining), 0) INTO v_total FROM lots
     WHERE member_id = p_member AND pending AND available_at <= p_now;
    IF v_total = 0 THEN
        -- nothing left in them (clawed back while pending): just close them
        UPDATE lots SET pending = false WHERE member_id = p_member AND pending AND available_at <= p_now;
        RETURN 0;
    END IF;
    INSERT INTO entries (program_id, member_id, kind, occurred_at, description)
    VALUES (v_program, p_member, 'activate', p_now, 'return window passed')
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, program_id, member_id, account, points) VALUES
        (v_entry, v_program, p_member, 'pending', -v_total),
        (v_entry, v_program, p_member, 'available', v_total);
    UPDATE member_balances SET pending = pending - v_total, available = available + v_total
     WHERE member_id = p_member;
    v_debt := greatest(0, -v_before);
    FOR r IN
        UPDATE lots SET pending = false WHERE member_id = p_member AND pending AND available_at <= p_now
        RETURNING id, remaining, expires_at
    LOOP
        IF v_debt > 0 AND r.remaining > 0 THEN
            v_take := least(v_debt, r.remaining);
            UPDATE lots SET remaining = remaining - v_take WHERE id = r.id;
            INSERT INTO lot_allocations (entry_id, lot_id, points) VALUES (v_entry, r.id, v_take);
            v_debt := v_debt - v_take;
        END IF;
    END LOOP;
    RETURN v_total;
END $$;

-- Expiry. A spendable lot is due when its own date has passed, or, for a lot earned under the
-- activity policy, when the member's activity date has. Held points are outside `remaining`, so they
-- never expire while held; a voided hold gives them back and they expire on the next run.
CREATE FUNCTION ledger_has_due(p_member bigint, p_as_of timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM lots l WHERE l.member_id = p_member AND l.remaining > 0 AND NOT l.pending
                                           AND l.expires_at IS NOT NULL AND l.expires_at <= p_as_of)
        OR EXISTS (SELECT 1 FROM member_balances b WHERE b.member_id = p_member AND b.activity_expires_at <= p_as_of
                                                     AND b.available > 0)
$$;

-- Expire every due lot of a member in one 'expire' entry (available -> expired) for exactly their
-- remaining points. Takes the member's lock. Idempotent: expired lots have nothing left.
CREATE FUNCTION ledger_expire_member(p_member bigint, p_as_of timestamptz,
                                     OUT expired_points bigint, OUT expired_lots integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_program uuid;
    v_activity timestamptz;
    v_entry bigint;
BEGIN
    SELECT program_id, activity_expires_at INTO v_program, v_activity
      FROM member_balances WHERE member_id = p_member FOR UPDATE;
    SELECT coalesce(sum(l.remaining), 0), count(*) INTO expired_points, expired_lots FROM lots l
     WHERE l.member_id = p_member AND l.remaining > 0 AND NOT l.pending
       AND ((NOT l.expires_on_inactivity AND l.expires_at <= p_as_of)
            OR (l.expires_on_inactivity AND v_activity <= p_as_of));
    IF expired_points = 0 THEN
        RETURN;
    END IF;
    INSERT INTO entries (program_id, member_id, kind, occurred_at, description, metadata)
    VALUES (v_program, p_member, 'expire', p_as_of, 'points expired', jsonb_build_object('lots', expired_lots))
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, program_id, member_id, account, points) VALUES
        (v_entry, v_program, p_member, 'available', -expired_points),
        (v_entry, v_program, p_member, 'expired', expired_points);
    WITH due AS (
        SELECT l.id, l.remaining FROM lots l
         WHERE l.member_id = p_member AND l.remaining > 0 AND NOT l.pending
           AND ((NOT l.expires_on_inactivity AND l.expires_at <= p_as_of)
                OR (l.expires_on_inactivity AND v_activity <= p_as_of))
    ), emptied AS (
        UPDATE lots SET remaining = 0 FROM due WHERE lots.id = due.id
    )
    INSERT INTO lot_allocations (entry_id, lot_id, points) SELECT v_entry, due.id, due.remaining FROM due;
    UPDATE member_balances SET available = available - expired_points WHERE member_id = p_member;
END $$;

-- Before a debit: release lapsed holds, activate due pending points, expire due lots, so the debit
-- sees exactly what reads show, whether or not the jobs have run.
CREATE FUNCTION ledger_settle_member(p_member bigint, p_now timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM lots l WHERE l.member_id = p_member AND l.pending AND l.available_at <= p_now) THEN
        PERFORM ledger_activate_due(p_member, p_now);
    END IF;
    IF ledger_has_due(p_member, p_now) THEN
        PERFORM ledger_expire_member(p_member, p_now);
    END IF;
END $$;

-- 4. Manual adjustment: credit (a new lot) or debit (FIFO by expiry, never below zero).
--    p_occurred_at NULL means now (the transaction's time, so it equals recorded_at).
--    The balance row is updated first: it takes the member's lock and checks the overdraft in one
--    statement, so a refused debit has written nothing.
CREATE FUNCTION ledger_adjust(p_program uuid, p_member_ref text, p_points bigint, p_occurred_at timestamptz,
                              p_external_ref text, p_description text, p_metadata jsonb,
                              p_expires_at timestamptz, p_expires_on_inactivity boolean DEFAULT false)
RETURNS TABLE (status text, entry_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_member bigint;
    v_entry bigint;
    v_before bigint;
BEGIN
    SELECT m.id INTO v_member FROM members m WHERE m.program_id = p_program AND m.external_id = p_member_ref;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'member_not_found'::text, NULL::bigint;
        RETURN;
    END IF;

    IF p_points < 0 THEN
        PERFORM ledger_settle_member(v_member, now());
    END IF;

    UPDATE member_balances mb
       SET available = mb.available + p_points,
           lifetime_earned = mb.lifetime_earned + p_points
     WHERE mb.member_id = v_member AND (p_points > 0 OR mb.available + p_points >= 0)
    RETURNING mb.available - p_points INTO v_before;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'insufficient_points'::text, NULL::bigint;
        RETURN;
    END IF;

    INSERT INTO entries (program_id, member_id, kind, occurred_at, external_ref, description, metadata)
    VALUES (p_program, v_member, 'adjust', coalesce(p_occurred_at, now()), p_external_ref, p_description,
            p_metadata)
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, program_id, member_id, account, points) VALUES
        (v_entry, p_program, v_member, 'available', p_points),
        (v_entry, p_program, v_member, 'adjustments', -p_points);

    IF p_points > 0 THEN
        PERFORM ledger_credit_lot(p_program, v_member, v_entry, p_points, v_before,
                                  coalesce(p_occurred_at, now()), p_expires_at, false, p_expires_on_inactivity);
    ELSIF ledger_consume_lots(v_member, v_entry, -p_points) <> 0 THEN
        RAISE EXCEPTION 'lots of member % do not cover its available balance', v_member
            USING ERRCODE = 'data_corrupted';
    END IF;

    RETURN QUERY SELECT 'ok'::text, v_entry;
END $$;

-- 5. Reversal: post the mirror image of an entry, once. Points credited by the entry are taken back
--    from the lots it created first (then soonest-expiring); points it debited go back to the very lots
--    they came from, so they keep their original expiry.
CREATE FUNCTION ledger_reverse(p_program uuid, p_entry bigint, p_occurred_at timestamptz,
                               p_description text, p_metadata jsonb)
RETURNS TABLE (status text, entry_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    o entries%ROWTYPE;
    b member_balances%ROWTYPE;
    v_available bigint;
    v_granted bigint;
    v_redeemed bigint;
    v_other integer;
    v_entry bigint;
    v_left bigint;
BEGIN
    SELECT e.* INTO o FROM entries e WHERE e.id = p_entry AND e.program_id = p_program;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'entry_not_found'::text, NULL::bigint;
        RETURN;
    END IF;

    SELECT coalesce(sum(p.points) FILTER (WHERE p.account = 'available'), 0),
           coalesce(sum(p.points) FILTER (WHERE p.account IN ('issued', 'adjustments')), 0),
           coalesce(sum(p.points) FILTER (WHERE p.account = 'redeemed'), 0),
           count(*) FILTER (WHERE p.account IN ('pending', 'held'))
      INTO v_available, v_granted, v_redeemed, v_other
      FROM postings p WHERE p.entry_id = p_entry;

    -- The member's lock first, so two concurrent reversals of one entry serialise here.
    SELECT mb.* INTO b FROM member_balances mb WHERE mb.member_id = o.member_id FOR UPDATE;

    -- Only manual adjustments are reversed this way; redemptions have refunds, holds void/capture.
    IF o.kind <> 'adjust' OR v_other > 0 OR o.member_id IS NULL THEN
        RETURN QUERY SELECT 'entry_not_reversible'::text, NULL::bigint;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM entries e WHERE e.reverses_entry_id = p_entry) THEN
        RETURN QUERY SELECT 'already_reversed'::text, NULL::bigint;
        RETURN;
    END IF;
    IF b.available - v_available < 0 AND v_available > 0 THEN
        RETURN QUERY SELECT 'insufficient_points'::text, NULL::bigint;
        RETURN;
    END IF;

    UPDATE member_balances mb
       SET available = mb.available - v_available,
           lifetime_earned = mb.lifetime_earned + v_granted,
           lifetime_redeemed = mb.lifetime_redeemed - v_redeemed
     WHERE mb.member_id = o.member_id;

    INSERT INTO entries (program_id, member_id, kind, occurred_at, description, metadata, reverses_entry_id)
    VALUES (p_program, o.member_id, 'reverse', p_occurred_at, p_description, p_metadata, p_entry)
    RETURNING id INTO v_entry;
    INSERT INTO postings (entry_id, program_id, member_id, account, points)
    SELECT v_entry, p.program_id, p.member_id, p.account, -p.points
      FROM postings p WHERE p.entry_id = p_entry ORDER BY p.id;

    IF v_available > 0 THEN
        v_left := ledger_consume_lots(o.member_id, v_entry, v_available, p_entry);
        v_left := ledger_consume_lots(o.member_id, v_entry, v_left);
        IF v_left <> 0 THEN
            RAISE EXCEPTION 'lots of member % do not cover its available balance', o.member_id
                USING ERRCODE = 'data_corrupted';
        END IF;
    ELSIF v_available < 0 THEN
        WITH back AS (
            SELECT a.lot_id, sum(a.points) AS points FROM lot_allocations a
             WHERE a.entry_id = p_entry GROUP BY a.lot_id HAVING sum(a.points) <> 0
        ), restored AS (
            UPDATE lots l SET remaining = l.remaining + back.points FROM back WHERE l.id = back.lot_id
        )
        INSERT INTO lot_allocations (entry_id, lot_id, points)
        SELECT v_entry, back.lot_id, -back.points FROM back ORDER BY back.lot_id;
        -- repay a negative balance from the restored points (ledger_cover_debt, migration 0002)
        PERFORM ledger_cover_debt(o.member_id, v_entry, -v_available);
    END IF;

    RETURN QUERY SELECT 'ok'::text, v_entry;
END $$;
