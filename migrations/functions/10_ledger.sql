-- The double-entry core: entries and postings, append-only and zero-sum, written by ONE primitive.

-- 1. Append-only. Entries, postings and lot allocations (and the append-only facts of earning and tiers) can
--    never be changed or removed.
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger.forbid_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger.forbid_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_change();
CREATE TRIGGER lot_allocations_append_only BEFORE UPDATE OR DELETE ON lot_allocations
    FOR EACH ROW EXECUTE FUNCTION ledger.forbid_change();
CREATE TRIGGER lot_allocations_no_truncate BEFORE TRUNCATE ON lot_allocations
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_change();

-- 2. Zero-sum, checked once per statement, set-based. An entry and its postings are written by one statement
--    (ledger.post), so at the end of every statement each entry it inserted must have two or more postings
--    summing to zero, and each entry it added postings to must still sum to zero (postings can never be
--    added to an entry afterwards). A violation aborts the statement: nothing of it is written.
CREATE FUNCTION ledger.check_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v record;
BEGIN
    -- The entries the statement wrote, or wrote postings to; each one's postings are summed by an index range of
    -- its own (LATERAL): a join would let the planner, which cannot know how many rows the transition table holds,
    -- walk the whole postings index instead (110 ms for a 2,000-entry statement at 650,000 postings).
    IF TG_TABLE_NAME = 'entries' THEN
        SELECT array_agg(n.id) INTO v_ids FROM new_rows n;
    ELSE
        SELECT array_agg(DISTINCT n.entry_id) INTO v_ids FROM new_rows n;
    END IF;
    SELECT t.entry_id, x.postings, x.total INTO v
      FROM unnest(v_ids) AS t(entry_id)
     CROSS JOIN LATERAL (SELECT count(*) AS postings, coalesce(sum(p.points), 0) AS total
                           FROM postings p WHERE p.entry_id = t.entry_id) x
     WHERE x.postings < 2 OR x.total <> 0 LIMIT 1;
    IF v.entry_id IS NOT NULL THEN
        RAISE EXCEPTION 'entry % is not balanced: % postings summing to %', v.entry_id, v.postings, v.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER entries_balanced AFTER INSERT ON entries REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_entries_balanced();
CREATE TRIGGER postings_balanced AFTER INSERT ON postings REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_entries_balanced();

-- 3. Members. What each member status refuses (README "Member status"):
--      earn (purchases, events)             active, suspended: yes   closed: member_closed
--      spend (redeem, hold, capture)        active: yes   suspended: member_suspended   closed: member_closed
--      give back (void, release, refund, return) and admin (adjustment, reversal): always
CREATE FUNCTION ledger.status_allows(p_member_status text, p_action text) RETURNS ledger.status
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_member_status = 'active' OR p_action IN ('give_back', 'admin') THEN 'ok'
        WHEN p_member_status = 'closed' THEN 'member_closed'
        WHEN p_action = 'earn' THEN 'ok'
        ELSE 'member_suspended' END::ledger.status
$$;

-- THE lookup of a member by the program's own reference: every function and query that takes a member_ref finds the
-- member here (inlined by the planner: the unique index on (program_id, external_id)). issue-15: the reference of a
-- member merged into another is an alias of the survivor (members.merged_into, ledger.merge): reads and writes on it
-- find the survivor.
CREATE FUNCTION ledger.member(p_program uuid, p_member_ref text) RETURNS SETOF members
LANGUAGE sql STABLE AS $$
    SELECT s.* FROM members m JOIN members s ON s.id = coalesce(m.merged_into, m.id)
     WHERE m.program_id = p_program AND m.external_id = p_member_ref
$$;

-- The member a member's rows now belong to: itself, or the survivor it was merged into (issue 15). Writes addressed by
-- another id (a purchase's return) post to this member.
CREATE FUNCTION ledger.survivor(p_member_pk bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(m.merged_into, m.id) FROM members m WHERE m.id = p_member_pk
$$;

-- A member as events show it (member.created, member.updated, member.erased): its reference, status and times,
-- never its personal data.
CREATE FUNCTION ledger.member_event(p_member_ref text, p_status text, p_created_at timestamptz,
                                    p_updated_at timestamptz) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object('member', json_build_object(
        'member_id', p_member_ref, 'status', p_status, 'created_at', ledger.ts(p_created_at),
        'updated_at', ledger.ts(p_updated_at)))
$$;

CREATE FUNCTION ledger.member_event_json(p_member_pk bigint) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT ledger.member_event(m.external_id, m.status, m.created_at, m.updated_at)
    FROM members m WHERE m.id = p_member_pk
$$;

-- Lock a member's balance row: the one lock of every change to the member's balances, lots and holds.
CREATE FUNCTION ledger.lock_member(p_member_pk bigint) RETURNS member_balances
LANGUAGE sql AS $$ SELECT * FROM member_balances WHERE member_id = p_member_pk FOR UPDATE $$;

-- Several members' locks, in THE one order of the service: by program, then by the member's reference in byte order
-- (COLLATE "C", whatever the database's collation). Group commit's batches take theirs in the same order
-- (app/ledger/batch.py sorts by (program, member reference)), so a job or a transfer holding several members and
-- a batch can never wait for each other in a cycle. Anything that locks more than one member goes through here.
CREATE FUNCTION ledger.lock_members(p_member_pks bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM member_balances b JOIN members m ON m.id = b.member_id
      WHERE b.member_id = ANY (p_member_pks) AND m.id = ANY (p_member_pks)
      ORDER BY m.program_id, m.external_id COLLATE "C"
        FOR UPDATE OF b;
END $$;

-- What postings do to a member's balance row, written once (ledger.post, post_many, post_between): member accounts move
-- their column; `issued` and `adjustments` move lifetime_earned (negated), `redeemed` lifetime_redeemed; `expired`
-- has no row.
-- (A set-returning function of one row, so the planner inlines it into ledger.post_many's statement.)
CREATE FUNCTION ledger.balance_deltas(p_accounts text[], p_points bigint[])
RETURNS TABLE (available bigint, pending bigint, held bigint, earned bigint, redeemed bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(x.points) FILTER (WHERE x.account = 'available'), 0),
           coalesce(sum(x.points) FILTER (WHERE x.account = 'pending'), 0),
           coalesce(sum(x.points) FILTER (WHERE x.account = 'held'), 0),
           coalesce(-sum(x.points) FILTER (WHERE x.account IN ('issued', 'adjustments')), 0),
           coalesce(sum(x.points) FILTER (WHERE x.account = 'redeemed'), 0)
      FROM unnest(p_accounts, p_points) AS x(account, points)
$$;

-- 4. THE posting primitive: one entry, its postings, and the member's balance row changed by exactly what the
--    postings say. Every movement of points in the service is one call of this function.
--    `p_accounts`/`p_points`: the postings (zero points are left out); they must sum to zero (the trigger above
--    refuses the statement otherwise). Member accounts move the balance row; postings to `issued` and
--    `adjustments` move lifetime_earned (negated), to `redeemed` lifetime_redeemed; `expired` has no row.
--    The balance row is updated first: that takes the member's lock and, for a debit of `available`, checks the
--    overdraft in the same statement. Overdrawn (unless p_overdraw): entry_pk NULL and nothing written.
--    `available_before`: the member's available points before this entry (a credit first repays a negative
--    balance: ledger.credit_lot).
--    `p_members` (issue 15: transfers, merges): the member of each posting, when an entry moves the points of two
--    members (ledger.post_between); NULL: every posting is p_member_pk's. A member merged away meanwhile (its
--    balance row's merged_into) refuses the post with a serialization failure, and the write runs again against the
--    survivor, unless p_to_merged (a refund to the merged-away member's own lots, forwarded afterwards).
CREATE FUNCTION ledger.post(
    p_program uuid, p_member_pk bigint, p_kind text, p_occurred_at timestamptz, p_accounts text[], p_points bigint[],
    p_external_ref text DEFAULT NULL, p_description text DEFAULT NULL, p_metadata jsonb DEFAULT '{}',
    p_reverses bigint DEFAULT NULL, p_overdraw boolean DEFAULT false, p_members bigint[] DEFAULT NULL,
    p_to_merged boolean DEFAULT false,
    OUT entry_pk bigint, OUT available_before bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_merged bigint;
    v_available bigint;
    v_pending bigint;
    v_held bigint;
    v_earned bigint;
    v_redeemed bigint;
BEGIN
    IF p_members IS NOT NULL THEN
        SELECT x.entry_pk, x.available_before INTO entry_pk, available_before
          FROM ledger.post_between(p_program, p_member_pk, p_kind, p_occurred_at, p_accounts, p_points, p_members,
                                   p_external_ref, p_description, p_metadata, p_overdraw) x;
        RETURN;
    END IF;
    SELECT d.available, d.pending, d.held, d.earned, d.redeemed INTO v_available, v_pending, v_held, v_earned, v_redeemed
      FROM ledger.balance_deltas(p_accounts, p_points) d;
    UPDATE member_balances b
       SET available = b.available + v_available, pending = b.pending + v_pending, held = b.held + v_held,
           lifetime_earned = b.lifetime_earned + v_earned, lifetime_redeemed = b.lifetime_redeemed + v_redeemed
     WHERE b.member_id = p_member_pk AND (v_available >= 0 OR p_overdraw OR b.available + v_available >= 0)
    RETURNING b.available - v_available, b.merged_into INTO available_before, v_merged;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_merged IS NOT NULL AND NOT p_to_merged THEN
        -- issue-15: the member was merged into another while this write waited for its lock; the write found it by
        -- its reference before: it runs again (app/ledger/writes.py) and finds the survivor
        RAISE EXCEPTION 'member % was merged into member %', p_member_pk, v_merged
            USING ERRCODE = 'serialization_failure';
    END IF;
    WITH e AS (
        INSERT INTO entries (program_id, member_id, kind, occurred_at, external_ref, description, metadata,
                             reverses_entry_id)
        VALUES (p_program, p_member_pk, p_kind, p_occurred_at, p_external_ref, p_description,
                coalesce(p_metadata, '{}'), p_reverses)
        RETURNING id
    ), p AS (
        INSERT INTO postings (entry_id, program_id, member_id, account, points)
        SELECT e.id, p_program, p_member_pk, x.account, x.points
          FROM e CROSS JOIN unnest(p_accounts, p_points) AS x(account, points)
         WHERE x.points <> 0
    )
    SELECT e.id INTO entry_pk FROM e;
END $$;

-- 4b. The posting primitive for a set of members, for jobs that move many members at once (the expiry sweep): one
--     entry of kind p_kind per member of p_members (each at most once, every one locked by the caller), all with
--     the postings to p_accounts, p_points holding cardinality(p_accounts) points per member, member after member,
--     and the members' balance rows changed by exactly what their postings say (ledger.balance_deltas), in ONE
--     statement: the same rows and the same checks as calling ledger.post for each, at a fraction of the cost.
--     There is no overdraft check: callers move what the members' own lots hold, under their locks.
--     Answers each member's entry (and program).
CREATE FUNCTION ledger.post_many(
    p_kind text, p_occurred_at timestamptz, p_accounts text[], p_members bigint[], p_points bigint[],
    p_description text DEFAULT NULL, p_metadata jsonb[] DEFAULT NULL)
RETURNS TABLE (member_pk bigint, entry_pk bigint, program_id uuid)
LANGUAGE sql AS $$
    WITH input AS (
        SELECT u.m AS member_pk, p_points[(u.o - 1) * cardinality(p_accounts) + 1 : u.o * cardinality(p_accounts)] AS pts,
               coalesce(p_metadata[u.o], '{}') AS metadata
          FROM unnest(p_members) WITH ORDINALITY AS u(m, o)
    ), bal AS (
        UPDATE member_balances b
           SET available = b.available + d.available, pending = b.pending + d.pending, held = b.held + d.held,
               lifetime_earned = b.lifetime_earned + d.earned, lifetime_redeemed = b.lifetime_redeemed + d.redeemed
          FROM input i CROSS JOIN LATERAL ledger.balance_deltas(p_accounts, i.pts) d
         WHERE b.member_id = i.member_pk AND b.member_id = ANY (p_members)
        RETURNING b.member_id, b.program_id, i.pts, i.metadata
    ), e AS (
        INSERT INTO entries (program_id, member_id, kind, occurred_at, description, metadata)
        SELECT bal.program_id, bal.member_id, p_kind, p_occurred_at, p_description, bal.metadata FROM bal
         ORDER BY bal.member_id
        RETURNING id, member_id, program_id
    ), p AS (
        INSERT INTO postings (entry_id, program_id, member_id, account, points)
        SELECT e.id, e.program_id, e.member_id, x.account, x.points
          FROM e JOIN bal ON bal.member_id = e.member_id CROSS JOIN LATERAL unnest(p_accounts, bal.pts) AS x(account, points)
         WHERE x.points <> 0
    )
    SELECT e.member_id, e.id, e.program_id FROM e
$$;

-- An entry moving the points of two members (a transfer, a merge), both already locked by the caller
-- (ledger.lock_members): p_member_pk is the entry's member (whose points leave), p_members the member of each posting,
-- the other one being recorded in entry_counterparties. Each member's balance row changes by its own postings; an
-- overdraft of p_member_pk's available points (unless p_overdraw) writes nothing and answers entry_pk NULL.
-- `available_before`: p_member_pk's.
CREATE FUNCTION ledger.post_between(
    p_program uuid, p_member_pk bigint, p_kind text, p_occurred_at timestamptz, p_accounts text[], p_points bigint[],
    p_members bigint[], p_external_ref text, p_description text, p_metadata jsonb, p_overdraw boolean,
    OUT entry_pk bigint, OUT available_before bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_before bigint;
BEGIN
    -- the entry's own member first: its overdraft check decides before anything is written
    FOR r IN
        SELECT g.member_pk, d.available, d.pending, d.held, d.earned, d.redeemed
          FROM (SELECT x.member_pk, array_agg(x.account) AS accounts, array_agg(x.points) AS points
                  FROM unnest(p_accounts, p_points, p_members) AS x(account, points, member_pk)
                 GROUP BY x.member_pk) g
         CROSS JOIN LATERAL ledger.balance_deltas(g.accounts, g.points) d
         ORDER BY g.member_pk <> p_member_pk, g.member_pk
    LOOP
        UPDATE member_balances b
           SET available = b.available + r.available, pending = b.pending + r.pending, held = b.held + r.held,
               lifetime_earned = b.lifetime_earned + r.earned, lifetime_redeemed = b.lifetime_redeemed + r.redeemed
         WHERE b.member_id = r.member_pk
           AND (r.member_pk <> p_member_pk OR r.available >= 0 OR p_overdraw OR b.available + r.available >= 0)
        RETURNING b.available - r.available INTO v_before;
        IF NOT FOUND THEN
            IF r.member_pk = p_member_pk THEN
                RETURN;  -- overdrawn: nothing written
            END IF;
            RAISE EXCEPTION 'member % has no balance row', r.member_pk USING ERRCODE = 'data_corrupted';
        END IF;
        IF r.member_pk = p_member_pk THEN
            available_before := v_before;
        END IF;
    END LOOP;
    WITH e AS (
        INSERT INTO entries (program_id, member_id, kind, occurred_at, external_ref, description, metadata)
        VALUES (p_program, p_member_pk, p_kind, p_occurred_at, p_external_ref, p_description,
                coalesce(p_metadata, '{}'))
        RETURNING id
    ), p AS (
        INSERT INTO postings (entry_id, program_id, member_id, account, points)
        SELECT e.id, p_program, x.member_pk, x.account, x.points
          FROM e CROSS JOIN unnest(p_accounts, p_points, p_members) AS x(account, points, member_pk)
         WHERE x.points <> 0
    ), c AS (
        INSERT INTO entry_counterparties (member_id, entry_id, program_id)
        SELECT DISTINCT x.member_pk, e.id, p_program FROM e CROSS JOIN unnest(p_members) AS x(member_pk)
         WHERE x.member_pk <> p_member_pk
    )
    SELECT e.id INTO entry_pk FROM e;
END $$;

-- 5. Entries as the API shows them.
CREATE FUNCTION ledger.entry_json(p_entry_pk bigint) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', ledger.public_id('ent', e.id), 'kind', e.kind, 'member_id', m.external_id,
        'occurred_at', ledger.ts(e.occurred_at), 'recorded_at', ledger.ts(e.recorded_at),
        'external_ref', e.external_ref, 'description', e.description, 'metadata', e.metadata,
        'reverses_entry_id', ledger.public_id('ent', e.reverses_entry_id),
        'reversed_by_entry_id', (SELECT ledger.public_id('ent', r.id) FROM entries r WHERE r.reverses_entry_id = e.id),
        'postings', (SELECT coalesce(json_agg(json_build_object('account', p.account, 'points', p.points)
                                              ORDER BY p.id), '[]'::json)
                       FROM postings p WHERE p.entry_id = e.id))
    FROM entries e LEFT JOIN members m ON m.id = e.member_id
    WHERE e.id = p_entry_pk
$$;

-- The entry of a program by its public id, as JSON (NULL: not found).
CREATE FUNCTION ledger.entry_read(p_program uuid, p_entry_id text) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT j FROM entries e CROSS JOIN LATERAL ledger.entry_json(e.id) j
     WHERE e.id = ledger.row_id('ent', p_entry_id) AND e.program_id = p_program
$$;

-- A member's activity page: `p_limit` entries, newest first, before the entry `p_before` (a public id; NULL:
-- from the newest), and the cursor of the next page (NULL at the end). NULL when the member does not exist.
-- Entry ids of one member are assigned under the member's lock, so they commit in id order and a page never
-- skips a late commit. issue-15: the member's entries are its own, those it is the counterparty of (a transfer it
-- received, a merge it survived: ledger.post_between, under its lock too), and those of the members merged into it.
-- With p_until (issue 15, as of an instant): only the entries recorded at or before it.
CREATE FUNCTION ledger.activity_read(p_program uuid, p_member_ref text, p_before text, p_limit integer,
                                     p_until timestamptz DEFAULT NULL)
RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'data', coalesce(json_agg(ej ORDER BY x.id DESC) FILTER (WHERE x.n <= p_limit),
                         '[]'::json),
        'next_cursor', CASE WHEN count(x.id) > p_limit
                            THEN ledger.public_id('ent', min(x.id) FILTER (WHERE x.n <= p_limit)) END)
      FROM ledger.member(p_program, p_member_ref) m
      LEFT JOIN LATERAL (
          SELECT y.id, row_number() OVER (ORDER BY y.id DESC) AS n FROM (
              SELECT DISTINCT z.id
                FROM (SELECT m.id UNION ALL SELECT a.id FROM members a WHERE a.merged_into = m.id) s(id)
               CROSS JOIN LATERAL (
                   (SELECT e.id FROM entries e
                     WHERE e.member_id = s.id AND (p_before IS NULL OR e.id < ledger.row_id('ent', p_before))
                       AND (p_until IS NULL OR e.recorded_at <= p_until)
                     ORDER BY e.id DESC LIMIT p_limit + 1)
                   UNION ALL
                   (SELECT c.entry_id FROM entry_counterparties c
                     WHERE c.member_id = s.id AND (p_before IS NULL OR c.entry_id < ledger.row_id('ent', p_before))
                       AND (p_until IS NULL OR EXISTS (SELECT 1 FROM entries ce
                                                        WHERE ce.id = c.entry_id AND ce.recorded_at <= p_until))
                     ORDER BY c.entry_id DESC LIMIT p_limit + 1)
               ) z
          ) y ORDER BY y.id DESC LIMIT p_limit + 1
      ) x ON true
      LEFT JOIN LATERAL ledger.entry_json(x.id) ej ON true
     GROUP BY m.id
$$;
