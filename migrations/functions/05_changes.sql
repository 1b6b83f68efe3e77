-- The outbox: every state change a member, a CRM or the merchant cares about is recorded by the function that makes
-- it, in its transaction (so the change and its event exist together or not at all), through ledger.emit.
--
-- Order without gaps. Transactions commit out of the order of the ids they took, so a feed that handed out events by
-- id could hand out 7 before a transaction holding 6 commits, and a consumer paging "after 7" would never see 6.
-- Each event records its transaction's id (xid); the feed orders by (xid, id) and exposes only events of
-- transactions below the oldest transaction still running (pg_snapshot_xmin): every transaction below it has
-- committed or aborted, and every later one has a larger xid, so it lands after any position already handed out.
-- The price: a transaction that stays open holds the feed back (by design, writes are one statement).
--
-- One member's events in the order they happened. A transaction gets its xid at its first write, which may come
-- before it waits for a member's lock (a batch of writes, a sweep over many members): it can then write after a
-- transaction with a larger xid that held the lock. So an event's position (the column `xid`) is the larger of
-- its transaction's xid and the position of the member's previous event (committed: its writer held the member's
-- lock until then). Positions only grow per member, and never fall below the writer's own xid, so the horizon
-- rule above still holds.

-- Record one event. p_data: the object in the shapes the API answers with (usually the answer of the write that
-- made the change), never personal data beyond the member's reference.
CREATE FUNCTION ledger.change_position(p_member_pk bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT greatest(pg_current_xact_id()::text::bigint,
                    (SELECT c.xid FROM changes c WHERE p_member_pk IS NOT NULL AND c.member_id = p_member_pk
                      ORDER BY c.member_id DESC, c.xid DESC, c.id DESC LIMIT 1))
$$;

CREATE FUNCTION ledger.emit(p_program uuid, p_member_pk bigint, p_type text, p_occurred_at timestamptz, p_data json)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO changes (xid, program_id, member_id, type, occurred_at, data)
    VALUES (ledger.change_position(p_member_pk), p_program, p_member_pk, p_type, p_occurred_at, p_data)
$$;

-- The same data announced under several types (NULLs left out): a positive adjustment is points.adjusted and
-- points.earned, a capture hold.captured and points.redeemed.
CREATE FUNCTION ledger.emit_all(p_program uuid, p_member_pk bigint, p_types text[], p_occurred_at timestamptz,
                                p_data json)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO changes (xid, program_id, member_id, type, occurred_at, data)
    SELECT ledger.change_position(p_member_pk), p_program, p_member_pk, t, p_occurred_at, p_data
      FROM unnest(p_types) AS t WHERE t IS NOT NULL
$$;

-- The horizon of the feed: every transaction below it has ended (committed or rolled back); every transaction still
-- running, or to come, has an xid at or above it.
CREATE FUNCTION ledger.changes_horizon() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint
$$;

-- An event as the feed and the webhooks show it.
CREATE FUNCTION ledger.change_json(p_change_pk bigint) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', ledger.public_id('evt', c.id), 'type', c.type, 'occurred_at', ledger.ts(c.occurred_at),
        'recorded_at', ledger.ts(c.recorded_at), 'member_id', m.external_id, 'data', c.data)
      FROM changes c LEFT JOIN members m ON m.id = c.member_id
     WHERE c.id = p_change_pk
$$;

-- A page of a program's feed (or of one member's, p_member_pk), after the event p_after (a public id; NULL: from
-- the start), of the types p_types (NULL: all), in commit order: {"data": [...], "next_cursor": ..., "has_more"}.
-- next_cursor is the last event of the page (the cursor given when the page is empty): pass it as `after`.
-- NULL when p_after is not an event of this program (unknown, or purged past the retention).
CREATE FUNCTION ledger.changes_page(p_program uuid, p_member_pk bigint, p_after text, p_types text[],
                                    p_limit integer) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    WITH after AS (
        SELECT coalesce(max(c.xid), -1) AS xid, coalesce(max(c.id), -1) AS id, count(*) AS found
          FROM changes c WHERE p_after IS NOT NULL AND c.id = ledger.row_id('evt', p_after)
           AND c.program_id = p_program
    ), page AS (
        SELECT c.id, c.xid, row_number() OVER (ORDER BY c.xid, c.id) AS n
          FROM changes c, after a
         WHERE c.program_id = p_program AND (p_member_pk IS NULL OR c.member_id = p_member_pk)
           AND (c.xid, c.id) > (a.xid, a.id) AND c.xid < ledger.changes_horizon()
           AND (p_types IS NULL OR c.type = ANY (p_types))
         ORDER BY c.xid, c.id
         LIMIT p_limit + 1
    )
    SELECT json_build_object(
        'data', coalesce((SELECT json_agg(j ORDER BY p.n) FROM page p CROSS JOIN LATERAL ledger.change_json(p.id) j
                           WHERE p.n <= p_limit), '[]'::json),
        'next_cursor', coalesce((SELECT ledger.public_id('evt', p.id) FROM page p WHERE p.n <= p_limit
                                  ORDER BY p.n DESC LIMIT 1), p_after),
        'has_more', (SELECT count(*) > p_limit FROM page))
      FROM after a WHERE p_after IS NULL OR a.found > 0
$$;
