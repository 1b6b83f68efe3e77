-- Merging members (POST /v1/members/{member_id}/merge, admin): a customer with two cards keeps one.
--
-- The other member's points move to the survivor in ONE entry (kind `merge`, ledger.post_between): its available and
-- pending balances, whatever they are (a negative available balance moves too). Its open lots are emptied into
-- lots of the survivor that keep their expiry and, for pending points, their activation time (ledger.copy_lots):
-- a merge never extends the life of points. The survivor's tier becomes the higher of the two (by the ladder in force).
-- The merged-away member's history stays its own and readable: its entries keep its id, and the survivor's activity
-- lists them (ledger.activity_read). From then on its reference is an alias: ledger.member, THE lookup of a member
-- by reference, answers the survivor for it, so every read and write sent to it goes to the survivor.
-- Refused while the other member has open holds (they reserve specific lots: capture or void them first).
-- Idempotent: merging an alias into its survivor again answers the merge done (200, "replayed": true).

CREATE FUNCTION ledger.merge_json(p_merge_pk bigint) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'member_id', s.external_id, 'merged_member_id', o.external_id,
        'entry_id', ledger.public_id('ent', g.entry_id),
        'available_points', coalesce((SELECT sum(p.points) FROM postings p WHERE p.entry_id = g.entry_id
                                         AND p.member_id = g.member_id AND p.account = 'available'), 0),
        'pending_points', coalesce((SELECT sum(p.points) FROM postings p WHERE p.entry_id = g.entry_id
                                       AND p.member_id = g.member_id AND p.account = 'pending'), 0),
        'tier_before', g.tier_before, 'tier', g.merged_tier, 'created_at', ledger.ts(g.created_at))
      FROM member_merges g JOIN members s ON s.id = g.member_id JOIN members o ON o.id = g.merged_member_id
     WHERE g.id = p_merge_pk
$$;

-- Move everything a member has (its available and pending balances, its open lots with their expiry and activation
-- time) to another member in one `merge` entry; both are locked here, in the service-wide order. Answers the entry
-- (NULL: nothing to move). The merge does this once; afterwards, anything that still lands on the merged-away
-- member (a refund of one of its redemptions, a cancelled voucher of its own) is forwarded the same way
-- (ledger.forward_merged), so no point ever stays behind an alias.
CREATE FUNCTION ledger.move_points(p_program uuid, p_from bigint, p_to bigint, p_description text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    b member_balances;
    sb member_balances;
    v_entry bigint;
    v_spendable bigint;
    e record;
BEGIN
    PERFORM ledger.lock_members(ARRAY[p_from, p_to]);
    SELECT * INTO b FROM member_balances WHERE member_id = p_from;
    SELECT * INTO sb FROM member_balances WHERE member_id = p_to;
    IF b.available = 0 AND b.pending = 0 THEN
        RETURN NULL;
    END IF;
    e := ledger.post(p_program, p_from, 'merge', now(), ARRAY['available', 'available', 'pending', 'pending'],
                     ARRAY[-b.available, b.available, -b.pending, b.pending], NULL, p_description,
                     jsonb_build_object('member_id', (SELECT m.external_id FROM members m WHERE m.id = p_to),
                                        'merged_member_id', (SELECT m.external_id FROM members m WHERE m.id = p_from)),
                     p_overdraw => true, p_members => ARRAY[p_from, p_to, p_from, p_to]);
    v_entry := e.entry_pk;
    -- every open lot of the member is emptied into the entry, then recreated for the other one
    INSERT INTO lot_allocations (entry_id, lot_id, points)
    SELECT v_entry, l.id, l.remaining FROM lots l WHERE l.member_id = p_from AND l.remaining > 0 ORDER BY l.id;
    UPDATE lots SET remaining = 0 WHERE member_id = p_from AND remaining > 0;
    PERFORM ledger.copy_lots(p_program, v_entry, p_from, p_to, sb.available);
    -- a negative balance moved in: the receiver's spendable lots keep covering exactly max(available, 0)
    SELECT coalesce(sum(l.remaining), 0) INTO v_spendable FROM lots l
     WHERE l.member_id = p_to AND l.remaining > 0 AND NOT l.pending;
    SELECT * INTO sb FROM member_balances WHERE member_id = p_to;
    IF v_spendable > greatest(sb.available, 0) THEN
        PERFORM ledger.consume_lots(p_to, v_entry, v_spendable - greatest(sb.available, 0));
    END IF;
    RETURN v_entry;
END $$;

-- After a write on a merged-away member (addressed by its own objects' ids): its points go on to the survivor.
CREATE FUNCTION ledger.forward_merged(p_program uuid, p_member_pk bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_survivor bigint := ledger.survivor(p_member_pk);
BEGIN
    IF v_survivor <> p_member_pk THEN
        PERFORM ledger.move_points(p_program, p_member_pk, v_survivor, 'forwarded to the member it was merged into');
    END IF;
END $$;

CREATE FUNCTION ledger.merge(p_program uuid, p_key text, p_fingerprint bytea, p_member_ref text, p_from_ref text)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    s members%ROWTYPE;
    o members%ROWTYPE;
    st member_tiers%ROWTYPE;
    ot member_tiers%ROWTYPE;
    v_now timestamptz := now();
    v_merge bigint;
    v_entry bigint;
    v_tier text;
    v_body json;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO s FROM ledger.member(p_program, p_member_ref);
    IF NOT FOUND THEN
        RETURN ledger.refusal('member_not_found', jsonb_build_object('member_id', p_member_ref));
    END IF;
    SELECT * INTO o FROM ledger.member(p_program, p_from_ref);
    IF NOT FOUND THEN
        RETURN ledger.refusal('member_not_found', jsonb_build_object('member_id', p_from_ref));
    END IF;
    IF o.id = s.id THEN
        -- merged before (p_from_ref is an alias of the survivor now): the merge done, again
        SELECT g.id INTO v_merge FROM member_merges g JOIN members m ON m.id = g.merged_member_id
         WHERE m.program_id = p_program AND m.external_id = p_from_ref;
        IF v_merge IS NULL THEN
            RETURN ledger.refusal('same_member');
        END IF;
        RETURN ledger.respond(p_program, p_key, p_fingerprint, 200, json_build_object(
            'merge', (SELECT j FROM ledger.merge_json(v_merge) j), 'balance', (SELECT j FROM ledger.balance_json(s.id) j),
            'replayed', true), true);
    END IF;
    PERFORM ledger.lock_members(ARRAY[s.id, o.id]);
    IF EXISTS (SELECT 1 FROM member_balances x WHERE x.member_id IN (s.id, o.id) AND x.merged_into IS NOT NULL) THEN
        RAISE EXCEPTION 'a member of merge % <- % was merged meanwhile', p_member_ref, p_from_ref
            USING ERRCODE = 'serialization_failure';  -- it runs again and finds the survivors
    END IF;
    PERFORM ledger.settle(o.id, v_now);  -- lapsed holds released, due pending points activated, due points expired
    IF EXISTS (SELECT 1 FROM holds h WHERE h.member_id = o.id AND h.status = 'open') THEN
        RETURN ledger.refusal('member_has_open_holds', jsonb_build_object(
            'open_holds', (SELECT count(*) FROM holds h WHERE h.member_id = o.id AND h.status = 'open')));
    END IF;
    v_entry := ledger.move_points(p_program, o.id, s.id, 'merged into ' || s.external_id);
    -- the higher tier of the two, by the ladder in force
    SELECT * INTO st FROM member_tiers WHERE member_id = s.id;
    SELECT * INTO ot FROM member_tiers WHERE member_id = o.id;
    v_tier := st.tier;
    IF ot.tier IS NOT NULL AND (st.tier IS NULL OR coalesce(ledger.tier_rank(p_program, ot.tier, v_now), 0)
                                                   > coalesce(ledger.tier_rank(p_program, st.tier, v_now), 0)) THEN
        v_tier := ot.tier;
        PERFORM ledger.save_tier(p_program, s.id, ot.tier, ot.valid_until, ot.manual_tier, ot.manual_until, v_now,
                                 NULL, st.tier, 'merged', 'merge', o.external_id, NULL);
    ELSE
        UPDATE member_balances SET facts_version = facts_version + 1 WHERE member_id = s.id;
    END IF;
    -- the alias: the other member (and whatever was merged into it before) now names the survivor
    UPDATE members SET merged_into = s.id, updated_at = v_now WHERE id = o.id OR merged_into = o.id;
    UPDATE member_balances SET merged_into = s.id WHERE member_id = o.id;
    INSERT INTO member_merges (program_id, member_id, merged_member_id, entry_id, tier_before, merged_tier, created_at)
    VALUES (p_program, s.id, o.id, v_entry, st.tier, v_tier, v_now)
    RETURNING id INTO v_merge;
    v_body := json_build_object('merge', (SELECT j FROM ledger.merge_json(v_merge) j),
                                'balance', (SELECT j FROM ledger.balance_json(s.id) j), 'replayed', false);
    PERFORM ledger.emit(p_program, s.id, 'member.merged', v_now, v_body);
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
END $$;
