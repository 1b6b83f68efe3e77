-- Balances as of an instant (issue 15), from the append-only ledger alone.
--
-- "As of T" means as RECORDED by T: the postings of entries whose `recorded_at` (the instant the service wrote
-- them; its transaction's start) is at or before T. That is the books as they stood at T, which is what finance
-- closes a quarter on: an entry written later but dated earlier (a late purchase, an import of legacy balances)
-- is not in them. A balance as of an instant never folds in what the jobs had not yet posted (a lapsed hold,
-- pending points past their window, due points): the current balance read does, the ledger does not until the
-- job's entry is recorded. An instant less than a transaction's length ago may still gain entries that commit
-- after the read.

-- A member's balances as of p_as_of: its postings (by postings.member_id: an entry may move two members' points),
-- an index-only range of ix_postings_member_id_entry_id, each checked against its entry's recorded_at.
-- `expired`: the points expired by then (cumulative); lifetime figures as ledger.post keeps them.
CREATE FUNCTION ledger.balance_as_of(p_member_pk bigint, p_as_of timestamptz)
RETURNS TABLE (available bigint, pending bigint, held bigint, expired bigint, lifetime_earned bigint,
               lifetime_redeemed bigint)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(p.points) FILTER (WHERE p.account = 'available'), 0)::bigint,
           coalesce(sum(p.points) FILTER (WHERE p.account = 'pending'), 0)::bigint,
           coalesce(sum(p.points) FILTER (WHERE p.account = 'held'), 0)::bigint,
           coalesce(sum(p.points) FILTER (WHERE p.account = 'expired'), 0)::bigint,
           coalesce(-sum(p.points) FILTER (WHERE p.account IN ('issued', 'adjustments')), 0)::bigint,
           coalesce(sum(p.points) FILTER (WHERE p.account = 'redeemed'), 0)::bigint
      FROM postings p JOIN entries e ON e.id = p.entry_id
     WHERE p.member_id = p_member_pk AND e.recorded_at <= p_as_of
$$;

-- The member's tier as recorded by p_as_of (its last tier change recorded by then; NULL before the first).
CREATE FUNCTION ledger.tier_as_of(p_member_pk bigint, p_as_of timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT h.to_tier FROM tier_history h
     WHERE h.member_id = p_member_pk AND h.recorded_at <= p_as_of
     ORDER BY h.recorded_at DESC, h.id DESC LIMIT 1
$$;

CREATE FUNCTION ledger.balance_as_of_json(p_member_pk bigint, p_member_ref text, p_as_of timestamptz)
RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'member_id', p_member_ref, 'as_of', ledger.ts(p_as_of), 'available', b.available, 'pending', b.pending,
        'held', b.held, 'expired', b.expired, 'lifetime_earned', b.lifetime_earned,
        'lifetime_redeemed', b.lifetime_redeemed, 'tier', ledger.tier_as_of(p_member_pk, p_as_of))
    FROM ledger.balance_as_of(p_member_pk, p_as_of) b
$$;

-- GET /v1/members/{member_id}/balance?as_of=: the JSON of the answer, or NULL when the member does not exist.
CREATE FUNCTION ledger.balance_as_of_read(p_program uuid, p_member_ref text, p_as_of timestamptz)
RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT j FROM ledger.member(p_program, p_member_ref) m
    CROSS JOIN LATERAL ledger.balance_as_of_json(m.id, m.external_id, p_as_of) j
$$;

-- The programme's outstanding liability as of p_as_of: the points its members held (available + pending + held)
-- as recorded by then. Computed backwards: today's balance rows (ledger.post keeps them equal to the postings;
-- verify proves it) minus the member-account postings of entries recorded after p_as_of, an index range of
-- ix_entries_program_id_recorded_at. So it costs the program's members plus what was recorded since p_as_of.
CREATE FUNCTION ledger.liability_as_of(p_program uuid, p_as_of timestamptz)
RETURNS TABLE (available bigint, pending bigint, held bigint, members bigint)
LANGUAGE sql STABLE AS $$
    WITH now_ AS (
        SELECT coalesce(sum(b.available), 0) AS available, coalesce(sum(b.pending), 0) AS pending,
               coalesce(sum(b.held), 0) AS held
          FROM member_balances b WHERE b.program_id = p_program
    ), since AS (
        SELECT coalesce(sum(p.points) FILTER (WHERE p.account = 'available'), 0) AS available,
               coalesce(sum(p.points) FILTER (WHERE p.account = 'pending'), 0) AS pending,
               coalesce(sum(p.points) FILTER (WHERE p.account = 'held'), 0) AS held
          FROM entries e JOIN postings p ON p.entry_id = e.id
         WHERE e.program_id = p_program AND e.recorded_at > p_as_of
           AND p.account IN ('available', 'pending', 'held')
    )
    SELECT (n.available - s.available)::bigint, (n.pending - s.pending)::bigint, (n.held - s.held)::bigint,
           (SELECT count(*) FROM members m WHERE m.program_id = p_program AND m.created_at <= p_as_of)
      FROM now_ n, since s
$$;

CREATE FUNCTION ledger.liability_as_of_read(p_program uuid, p_as_of timestamptz) RETURNS SETOF json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'as_of', ledger.ts(p_as_of), 'available', l.available, 'pending', l.pending, 'held', l.held,
        'outstanding', l.available + l.pending + l.held, 'members', l.members)
    FROM ledger.liability_as_of(p_program, p_as_of) l
$$;
