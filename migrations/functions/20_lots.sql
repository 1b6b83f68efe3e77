-- Lots: every credit creates one; every debit consumes open lots soonest-expiring first; expiry empties due
-- lots. `lots.remaining` is materialised (points minus the lot's allocations), checked by verify. Every change
-- to a member's lots happens under the member's lock (ledger.lock_member / ledger.post).

-- When a lot stops being spendable. THE rule, written once: its own date, or, for a lot earned under the
-- activity policy, its member's activity date (member_balances.activity_expires_at).
CREATE FUNCTION ledger.lot_expires_at(p_expires_at timestamptz, p_on_inactivity boolean,
                                      p_activity_expires_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_on_inactivity THEN p_activity_expires_at ELSE p_expires_at END
$$;

-- The lots of members due to expire by p_as_of: spendable (remaining > 0, not pending) with
-- ledger.lot_expires_at(...) <= p_as_of. Written as two index ranges (lots with a date of their own; lots under
-- the activity policy of members whose activity date has passed) so it costs what the due lots cost;
-- tests/test_balance_query.py proves it equals the plain definition. Inlined by the planner.
CREATE FUNCTION ledger.due_lots(p_members bigint[], p_as_of timestamptz)
RETURNS TABLE (lot_pk bigint, member_pk bigint, program_id uuid, remaining bigint)
LANGUAGE sql STABLE AS $$
    SELECT l.id, l.member_id, l.program_id, l.remaining FROM lots l
     WHERE l.member_id = ANY (p_members) AND l.remaining > 0 AND NOT l.pending AND NOT l.expires_on_inactivity
       AND l.expires_at <= p_as_of
    UNION ALL
    SELECT l.id, l.member_id, l.program_id, l.remaining
      FROM member_balances b JOIN lots l ON l.member_id = b.member_id
     WHERE b.member_id = ANY (p_members) AND b.activity_expires_at <= p_as_of
       AND l.remaining > 0 AND NOT l.pending AND l.expires_on_inactivity
$$;

-- Consume p_points of a member's open, spendable lots, soonest-expiring first (never-expiring last, then
-- oldest), recording each allocation under p_entry. With p_from_entry, only the lots that entry created.
-- Returns the points no lot could cover.
CREATE FUNCTION ledger.consume_lots(p_member_pk bigint, p_entry bigint, p_points bigint,
                                    p_from_entry bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint := p_points;
    v_take bigint;
    r record;
BEGIN
    FOR r IN
        SELECT id, remaining FROM lots
         WHERE member_id = p_member_pk AND remaining > 0 AND NOT pending
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

-- Consume lots for a debit that the balance allowed: the lots must cover it (they cover max(available, 0)).
CREATE FUNCTION ledger.consume_lots_exactly(p_member_pk bigint, p_entry bigint, p_points bigint,
                                            p_from_entry bigint DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint := ledger.consume_lots(p_member_pk, p_entry, p_points, p_from_entry);
BEGIN
    IF v_left > 0 AND p_from_entry IS NOT NULL THEN
        v_left := ledger.consume_lots(p_member_pk, p_entry, v_left);
    END IF;
    IF v_left <> 0 THEN
        RAISE EXCEPTION 'lots of member % do not cover its available balance', p_member_pk
            USING ERRCODE = 'data_corrupted';
    END IF;
END $$;

-- The lot of a credit. A credit to a member whose available balance was negative (a return clawed back points
-- already spent) first repays that debt: the repaid points are allocated out of the new lot at once, so
-- spendable lots always cover exactly max(available, 0). Pending lots repay nothing until activated.
CREATE FUNCTION ledger.credit_lot(p_program uuid, p_member_pk bigint, p_entry bigint, p_points bigint,
                                  p_available_before bigint, p_available_at timestamptz, p_expires_at timestamptz,
                                  p_pending boolean, p_expires_on_inactivity boolean) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_lot bigint;
    v_repay bigint := CASE WHEN p_pending THEN 0 ELSE least(p_points, greatest(0, -p_available_before)) END;
BEGIN
    INSERT INTO lots (program_id, member_id, entry_id, points, remaining, available_at, expires_at, pending,
                      expires_on_inactivity)
    VALUES (p_program, p_member_pk, p_entry, p_points, p_points - v_repay, p_available_at, p_expires_at, p_pending,
            p_expires_on_inactivity)
    RETURNING id INTO v_lot;
    IF v_repay > 0 THEN
        INSERT INTO lot_allocations (entry_id, lot_id, points) VALUES (p_entry, v_lot, v_repay);
    END IF;
    RETURN v_lot;
END $$;

-- Which lots get back up to p_points of what p_from_entries allocated (net) from them: latest-expiring first, so
-- points keep the latest expiry they had. `expired`: with p_skip_expired, the lot expired by p_as_of, so its
-- points come back expired instead of into the lot (a refund). A plan, read-only: the postings of the entry that
-- gives the points back depend on it (ledger.refund), and ledger.restore_lots applies it.
CREATE FUNCTION ledger.restore_plan(p_from_entries bigint[], p_points bigint, p_as_of timestamptz,
                                    p_skip_expired boolean)
RETURNS TABLE (lot_pk bigint, points bigint, expired boolean)
LANGUAGE sql STABLE AS $$
    WITH net AS (
        SELECT a.lot_id, ledger.lot_expires_at(l.expires_at, l.expires_on_inactivity, b.activity_expires_at) AS at,
               sum(a.points) AS net
          FROM lot_allocations a
          JOIN lots l ON l.id = a.lot_id
          JOIN member_balances b ON b.member_id = l.member_id
         WHERE a.entry_id = ANY (p_from_entries)
         GROUP BY a.lot_id, l.expires_on_inactivity, l.expires_at, b.activity_expires_at
        HAVING sum(a.points) > 0
    ), ordered AS (
        SELECT n.lot_id, n.at, n.net, sum(n.net) OVER (ORDER BY n.at DESC NULLS FIRST, n.lot_id DESC) AS running
          FROM net n
    )
    SELECT o.lot_id, least(o.net, p_points - (o.running - o.net)), coalesce(p_skip_expired AND o.at <= p_as_of, false)
      FROM ordered o WHERE o.running - o.net < p_points
$$;

-- Give back p_points of the lots allocated by p_from_entries (ledger.restore_plan), as negative allocations under
-- p_to_entry; points of lots expired meanwhile (p_skip_expired) are counted in `expired` and stay out.
CREATE FUNCTION ledger.restore_lots(p_from_entries bigint[], p_to_entry bigint, p_points bigint,
                                    p_as_of timestamptz, p_skip_expired boolean,
                                    OUT restored bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
BEGIN
    WITH plan AS (
        SELECT * FROM ledger.restore_plan(p_from_entries, p_points, p_as_of, p_skip_expired)
    ), back AS (
        UPDATE lots l SET remaining = l.remaining + plan.points FROM plan WHERE l.id = plan.lot_pk AND NOT plan.expired
    ), allocated AS (
        INSERT INTO lot_allocations (entry_id, lot_id, points)
        SELECT p_to_entry, plan.lot_pk, -plan.points FROM plan WHERE NOT plan.expired
    )
    SELECT coalesce(sum(plan.points) FILTER (WHERE NOT plan.expired), 0),
           coalesce(sum(plan.points) FILTER (WHERE plan.expired), 0)
      INTO restored, expired FROM plan;
    IF restored + expired <> p_points THEN
        RAISE EXCEPTION 'allocations of entries % cannot give back % points', p_from_entries, p_points
            USING ERRCODE = 'data_corrupted';
    END IF;
END $$;

-- After points went back into their lots: if the member's available balance is below what its spendable lots
-- now hold (it was negative), the lots give up the difference at once, soonest-expiring first, so spendable
-- lots keep covering exactly max(available, 0). Recorded as (positive) allocations under p_entry.
CREATE FUNCTION ledger.cover_debt(p_member_pk bigint, p_entry bigint, p_restored bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_available bigint;
    v_spendable bigint;
BEGIN
    IF p_restored <= 0 THEN
        RETURN;
    END IF;
    SELECT available INTO v_available FROM member_balances WHERE member_id = p_member_pk;
    IF v_available >= p_restored THEN
        RETURN;  -- it was not negative: nothing to repay
    END IF;
    SELECT coalesce(sum(remaining), 0) INTO v_spendable FROM lots
     WHERE member_id = p_member_pk AND remaining > 0 AND NOT pending;
    IF v_spendable > greatest(v_available, 0) THEN
        PERFORM ledger.consume_lots(p_member_pk, p_entry, v_spendable - greatest(v_available, 0));
    END IF;
END $$;

-- Activate a member's pending lots whose return window has passed (pending -> available) in one 'activate'
-- entry; newly spendable points first repay a negative available balance. Takes the member's lock. Returns the
-- points activated.
CREATE FUNCTION ledger.activate_due(p_member_pk bigint, p_now timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    b member_balances;
    v_total bigint;
    v_debt bigint;
    v_take bigint;
    v_entry bigint;
    e record;
    r record;
BEGIN
    b := ledger.lock_member(p_member_pk);
    SELECT coalesce(sum(remaining), 0) INTO v_total FROM lots
     WHERE member_id = p_member_pk AND pending AND available_at <= p_now;
    IF v_total > 0 THEN
        e := ledger.post(b.program_id, p_member_pk, 'activate', p_now, ARRAY['pending', 'available'],
                         ARRAY[-v_total, v_total], p_description => 'return window passed');
        v_entry := e.entry_pk;
    END IF;
    v_debt := greatest(0, -b.available);
    FOR r IN
        UPDATE lots SET pending = false WHERE member_id = p_member_pk AND pending AND available_at <= p_now
        RETURNING id, remaining
    LOOP
        IF v_debt > 0 AND r.remaining > 0 THEN
            v_take := least(v_debt, r.remaining);
            UPDATE lots SET remaining = remaining - v_take WHERE id = r.id;
            INSERT INTO lot_allocations (entry_id, lot_id, points) VALUES (v_entry, r.id, v_take);
            v_debt := v_debt - v_take;
        END IF;
    END LOOP;
    IF v_total > 0 THEN
        PERFORM ledger.emit(b.program_id, p_member_pk, 'points.available', p_now, json_build_object(
            'entry', (SELECT j FROM ledger.entry_json(v_entry) j),
            'balance', (SELECT j FROM ledger.balance_json(p_member_pk) j)));
    END IF;
    RETURN v_total;
END $$;

-- Expire every due lot (ledger.due_lots) of members the caller has locked: per member, one 'expire' entry
-- (available -> expired) for exactly their remaining points, at p_as_of, and its points.expired event. Set-based:
-- one ledger.post_many for all of them, one UPDATE of the lots, one INSERT of the allocations, one of the events,
-- however many members (the sweep's batches and ledger.expire_member's one). Idempotent: expired lots have
-- nothing left.
CREATE FUNCTION ledger.expire_locked(p_members bigint[], p_as_of timestamptz,
                                     OUT expired_points bigint, OUT expired_lots integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_lots bigint[];
    v_lot_members bigint[];
    v_lot_points bigint[];
    v_members bigint[];
    v_sums bigint[];
    v_points bigint[];
    v_metadata jsonb[];
    v_entry_members bigint[];
    v_entries bigint[];
    v_programs uuid[];
BEGIN
    SELECT coalesce(sum(d.remaining), 0), count(*), array_agg(d.lot_pk), array_agg(d.member_pk),
           array_agg(d.remaining)
      INTO expired_points, expired_lots, v_lots, v_lot_members, v_lot_points
      FROM ledger.due_lots(p_members, p_as_of) d;
    IF expired_points = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(t.member_pk ORDER BY t.member_pk), array_agg(t.points ORDER BY t.member_pk),
           array_agg(jsonb_build_object('lots', t.n) ORDER BY t.member_pk)
      INTO v_members, v_sums, v_metadata
      FROM (SELECT x.member_pk, sum(x.points) AS points, count(*) AS n
              FROM unnest(v_lot_members, v_lot_points) AS x(member_pk, points)
             GROUP BY x.member_pk) t;
    SELECT array_agg(z.v ORDER BY s.o, z.k) INTO v_points
      FROM unnest(v_sums) WITH ORDINALITY AS s(p, o)
     CROSS JOIN LATERAL unnest(ARRAY[-s.p, s.p]) WITH ORDINALITY AS z(v, k);
    SELECT array_agg(x.member_pk ORDER BY x.member_pk), array_agg(x.entry_pk ORDER BY x.member_pk),
           array_agg(x.program_id ORDER BY x.member_pk)
      INTO v_entry_members, v_entries, v_programs
      FROM ledger.post_many('expire', p_as_of, ARRAY['available', 'expired'], v_members, v_points,
                            p_description => 'points expired', p_metadata => v_metadata) x;
    UPDATE lots SET remaining = 0 WHERE id = ANY (v_lots);
    INSERT INTO lot_allocations (entry_id, lot_id, points)
    SELECT e.entry_pk, x.lot, x.points
      FROM unnest(v_lots, v_lot_members, v_lot_points) AS x(lot, member_pk, points)
      JOIN unnest(v_entry_members, v_entries) AS e(member_pk, entry_pk) ON e.member_pk = x.member_pk;
    INSERT INTO changes (xid, program_id, member_id, type, occurred_at, data)
    SELECT ledger.change_position(e.member_pk), e.program_id, e.member_pk, 'points.expired', p_as_of,
           json_build_object('entry', (SELECT j FROM ledger.entry_json(e.entry_pk) j),
                             'balance', (SELECT j FROM ledger.balance_json(e.member_pk) j))
      FROM unnest(v_entry_members, v_entries, v_programs) AS e(member_pk, entry_pk, program_id)
     ORDER BY e.member_pk;
END $$;

-- Expire a member's due lots (ledger.expire_locked), taking its lock.
CREATE FUNCTION ledger.expire_member(p_member_pk bigint, p_as_of timestamptz,
                                     OUT expired_points bigint, OUT expired_lots integer)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger.lock_member(p_member_pk);
    SELECT x.expired_points, x.expired_lots INTO expired_points, expired_lots
      FROM ledger.expire_locked(ARRAY[p_member_pk], p_as_of) x;
END $$;

-- Does a member have lots due by p_as_of? (cheap: two index probes)
CREATE FUNCTION ledger.has_due(p_member_pk bigint, p_as_of timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM ledger.due_lots(ARRAY[p_member_pk], p_as_of))
$$;

-- Before a debit: release lapsed holds, activate due pending points, expire due lots, so a debit sees exactly
-- what reads show, whether or not the jobs have run.
CREATE FUNCTION ledger.settle(p_member_pk bigint, p_now timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id FROM holds
              WHERE member_id = p_member_pk AND status = 'open' AND expires_at <= p_now ORDER BY id
    LOOP
        PERFORM ledger.release_hold(r.id, 'release', p_now);
    END LOOP;
    IF EXISTS (SELECT 1 FROM lots l WHERE l.member_id = p_member_pk AND l.pending AND l.available_at <= p_now) THEN
        PERFORM ledger.activate_due(p_member_pk, p_now);
    END IF;
    IF ledger.has_due(p_member_pk, p_now) THEN
        PERFORM ledger.expire_member(p_member_pk, p_now);
    END IF;
END $$;

-- The expiry sweep: up to p_limit members after p_after (optionally of one program) with lots due by p_as_of,
-- locked together (ledger.lock_members: the service's one order; a crashed run resumes where it stopped), all
-- expired by one ledger.expire_locked. One call is one batch, committed by the caller; a rerun finds nothing left.
-- With p_dry_run, nothing is written: the answer is what would be expired.
CREATE FUNCTION ledger.expire_batch(p_as_of timestamptz, p_after bigint, p_limit integer,
                                    p_program uuid DEFAULT NULL, p_dry_run boolean DEFAULT false)
RETURNS TABLE (members integer, lots integer, points bigint, last_member bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_members bigint[];
BEGIN
    members := 0;
    lots := 0;
    points := 0;
    SELECT array_agg(c.member_id ORDER BY c.member_id) INTO v_members FROM (
        SELECT u.member_id FROM (
            (SELECT DISTINCT l.member_id FROM lots l
              WHERE l.remaining > 0 AND NOT l.pending AND l.expires_at IS NOT NULL AND l.expires_at <= p_as_of
                AND l.member_id > p_after AND (p_program IS NULL OR l.program_id = p_program)
              ORDER BY l.member_id LIMIT p_limit)
            UNION
            (SELECT b.member_id FROM member_balances b
              WHERE b.activity_expires_at <= p_as_of AND b.available > 0 AND b.member_id > p_after
                AND (p_program IS NULL OR b.program_id = p_program)
              ORDER BY b.member_id LIMIT p_limit)
        ) u ORDER BY u.member_id LIMIT p_limit
    ) c;
    IF v_members IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    members := cardinality(v_members);
    last_member := v_members[members];
    IF p_dry_run THEN
        SELECT count(*), coalesce(sum(d.remaining), 0) INTO lots, points FROM ledger.due_lots(v_members, p_as_of) d;
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM ledger.lock_members(v_members);
    SELECT x.expired_lots, x.expired_points INTO lots, points FROM ledger.expire_locked(v_members, p_as_of) x;
    RETURN NEXT;
END $$;
