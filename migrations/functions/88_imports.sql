-- Bulk import of a legacy system's members (issue 15): profile, opening balance as lots, tier. Set-based: one
-- call takes a chunk of rows (a jsonb array, validated and shaped by app/imports/service.py) and answers one
-- status per row. Idempotent per row: `member_imports` keeps the hash of the row each member came from, so a rerun
-- of the same row is answered as replayed and changes nothing, and another row for an imported member is refused.
--
-- What a row writes, for a member that did not exist (never for an existing one: 'member_exists'):
--   * the member (profile, status) and its balance row;
--   * with an opening balance, ONE entry of kind 'import' (external_ref: the member's reference, so the
--     database itself refuses a second) with the postings ledger.post would write (issued -> available and/or
--     pending), and the balance row set to exactly those postings, in one statement (so the zero-sum triggers see
--     the entries with their postings);
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
        WITH r AS (
            SELECT * FROM jsonb_to_recordset(p_rows) AS x(member_id text, hash text, available bigint,
                                                         pending bigint, occurred_at timestamptz, lots jsonb,
                                                         tier text, tier_valid_until timestamptz)
        ), n AS (
            SELECT r.*, m.pk AS member_pk FROM unnest(v_pks, v_refs) AS m(pk, ref) JOIN r ON r.member_id = m.ref
        ), b AS (
            INSERT INTO member_balances (member_id, program_id, available, pending, lifetime_earned)
            SELECT n.member_pk, p_program, n.available, n.pending, n.available + n.pending FROM n
        ), e AS (
            INSERT INTO entries (program_id, member_id, kind, occurred_at, external_ref, description, metadata)
            SELECT p_program, n.member_pk, 'import', n.occurred_at, n.member_id, 'opening balance imported',
                   jsonb_build_object('lots', jsonb_array_length(n.lots))
              FROM n WHERE n.available + n.pending > 0
            RETURNING id, member_id
        ), p AS (
            INSERT INTO postings (entry_id, program_id, member_id, account, points)
            SELECT e.id, p_program, e.member_id, x.account, x.points
              FROM e JOIN n ON n.member_pk = e.member_id
             CROSS JOIN LATERAL (VALUES ('issued', -(n.available + n.pending)), ('available', n.available),
                                        ('pending', n.pending)) AS x(account, points)
             WHERE x.points <> 0
        ), l AS (
            INSERT INTO lots (program_id, member_id, entry_id, points, remaining, available_at, expires_at, pending,
                              expires_on_inactivity)
            SELECT p_program, e.member_id, e.id, (lot ->> 'points')::bigint, (lot ->> 'points')::bigint,
                   (lot ->> 'available_at')::timestamptz, (lot ->> 'expires_at')::timestamptz,
                   (lot ->> 'pending')::boolean, false
              FROM e JOIN n ON n.member_pk = e.member_id CROSS JOIN LATERAL jsonb_array_elements(n.lots) AS lot
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
        SELECT n.member_pk, p_program, decode(n.hash, 'hex'), e.id FROM n LEFT JOIN e ON e.member_id = n.member_pk;
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
