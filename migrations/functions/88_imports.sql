-- Bulk import of a legacy system's members (issue 15): profile, opening balance as lots, tier. Set-based: one
-- call takes a chunk of rows (a jsonb array, validated and shaped by app/imports/service.py) and answers one
-- status per row. Idempotent per row: `member_imports` keeps the hash of the row each member came from, so a rerun
-- of the same row is answered as replayed and changes nothing, and another row for an imported member is refused.
--
-- What a row writes, for a member that did not exist (never for an existing one: 'member_exists'):
--   * the member (profile, status) and its balance row;
--   * with an opening balance, ONE entry of kind 'import' posted by ledger.post_many, the posting primitive's set
--     form (issued -> available and/or pending; the balance row changed by exactly those postings), dated at the
--     import, its metadata the number of lots and the latest earn date (`earned_until`);
--   * one lot per legacy lot: its points, its own expiry, `available_at` its original earn date (or, for points
--     still in a return window, the day they become available: a pending lot, activated by the usual job);
--   * the tier with its valid_until, and its history row (reason 'imported', source 'import');
--   * its member_imports row.
-- The new members are invisible to every other transaction until the chunk commits, so no member lock is needed;
-- a concurrent import of the same member waits on the members' unique index, then finds it and answers from
-- member_imports. No events are emitted (README "Migrating from a legacy system").
CREATE FUNCTION ledger.import_members(p_program uuid, p_rows jsonb)
RETURNS TABLE (line integer, status ledger.status, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_pks bigint[];
    v_refs text[];
    v_posted bigint[];
    v_points bigint[];
    v_metadata jsonb[];
    v_entry_members bigint[];
    v_entries bigint[];
BEGIN
    WITH r AS (
        SELECT * FROM jsonb_to_recordset(p_rows) AS x(member_id text, name text, email text, phone text,
                                                     birthday date, status text, attributes jsonb)
    ), ins AS (
        INSERT INTO members (program_id, external_id, name, email, phone, birthday, status, attributes)
        SELECT p_program, r.member_id, r.name, r.email, r.phone, r.birthday, r.status, coalesce(r.attributes, '{}')
          FROM r
        ON CONFLICT (program_id, external_id) DO NOTHING
        RETURNING id, external_id
    )
    SELECT coalesce(array_agg(ins.id), '{}'), coalesce(array_agg(ins.external_id), '{}') INTO v_pks, v_refs FROM ins;

    IF cardinality(v_pks) > 0 THEN
        -- The new members' balance rows, empty; their opening balances are posted next, by the posting primitive.
        INSERT INTO member_balances (member_id, program_id) SELECT m.pk, p_program FROM unnest(v_pks) AS m(pk);

        -- One 'import' entry per member with an opening balance: ledger.post_many, the posting primitive's set
        -- form (entries, postings issued -> available/pending, balance rows, in one statement).
        SELECT array_agg(n.member_pk ORDER BY n.member_pk) FILTER (WHERE x.k = 1),
               array_agg(x.points ORDER BY n.member_pk, x.k),
               array_agg(jsonb_build_object('lots', jsonb_array_length(n.lots), 'earned_until', n.occurred_at)
                         ORDER BY n.member_pk) FILTER (WHERE x.k = 1)
          INTO v_posted, v_points, v_metadata
          FROM (SELECT r.*, m.pk AS member_pk
                  FROM unnest(v_pks, v_refs) AS m(pk, ref)
                  JOIN jsonb_to_recordset(p_rows) AS r(member_id text, available bigint, pending bigint,
                                                       occurred_at timestamptz, lots jsonb) ON r.member_id = m.ref
                 WHERE r.available + r.pending > 0) n
         CROSS JOIN LATERAL unnest(ARRAY[-(n.available + n.pending), n.available, n.pending])
               WITH ORDINALITY AS x(points, k);
        IF v_posted IS NOT NULL THEN
            SELECT array_agg(pm.member_pk), array_agg(pm.entry_pk) INTO v_entry_members, v_entries
              FROM ledger.post_many('import', now(), ARRAY['issued', 'available', 'pending'], v_posted, v_points,
                                    'opening balance imported', v_metadata) pm;
        END IF;

        WITH r AS (
            SELECT * FROM jsonb_to_recordset(p_rows) AS x(member_id text, hash text, lots jsonb, tier text,
                                                         tier_valid_until timestamptz)
        ), n AS (
            SELECT r.*, m.pk AS member_pk, e.entry_pk
              FROM unnest(v_pks, v_refs) AS m(pk, ref) JOIN r ON r.member_id = m.ref
              LEFT JOIN unnest(v_entry_members, v_entries) AS e(member_pk, entry_pk) ON e.member_pk = m.pk
        ), l AS (
            INSERT INTO lots (program_id, member_id, entry_id, points, remaining, available_at, expires_at, pending,
                              expires_on_inactivity)
            SELECT p_program, n.member_pk, n.entry_pk, (lot ->> 'points')::bigint, (lot ->> 'points')::bigint,
                   (lot ->> 'available_at')::timestamptz, (lot ->> 'expires_at')::timestamptz,
                   (lot ->> 'pending')::boolean, false
              FROM n CROSS JOIN LATERAL jsonb_array_elements(n.lots) AS lot
             WHERE n.entry_pk IS NOT NULL
        ), t AS (
            INSERT INTO member_tiers (member_id, program_id, tier, valid_until, since)
            SELECT n.member_pk, p_program, n.tier, n.tier_valid_until, now() FROM n WHERE n.tier IS NOT NULL
        ), h AS (
            INSERT INTO tier_history (program_id, member_id, from_tier, to_tier, valid_until, reason, source,
                                      changed_at)
            SELECT p_program, n.member_pk, NULL, n.tier, n.tier_valid_until, 'imported', 'import', now()
              FROM n WHERE n.tier IS NOT NULL
        )
        INSERT INTO member_imports (member_id, program_id, row_hash, entry_id)
        SELECT n.member_pk, p_program, decode(n.hash, 'hex'), n.entry_pk FROM n;
    END IF;

    RETURN QUERY
    SELECT r.line,
           CASE WHEN new.ref IS NOT NULL OR i.row_hash = decode(r.hash, 'hex') THEN 'ok'
                WHEN i.member_id IS NOT NULL THEN 'import_conflict'
                ELSE 'member_exists' END::ledger.status,
           coalesce(new.ref IS NULL AND i.row_hash = decode(r.hash, 'hex'), false)
      FROM jsonb_to_recordset(p_rows) AS r(line integer, member_id text, hash text)
      LEFT JOIN unnest(v_refs) AS new(ref) ON new.ref = r.member_id
      LEFT JOIN members m ON new.ref IS NULL AND m.program_id = p_program AND m.external_id = r.member_id
      LEFT JOIN member_imports i ON i.member_id = m.id
     ORDER BY r.line;
END $$;
