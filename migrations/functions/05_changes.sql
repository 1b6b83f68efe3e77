-- The outbox: every state change a member, a CRM or the merchant cares about is recorded by the function that makes
-- it, in its transaction (so the change and its event exist together or not at all), through ledger.emit.
--
-- Order without gaps. Transactions commit out of the order of the ids they took, so a feed that handed out events by
-- id could hand out 7 before a transaction holding 6 commits, and a consumer paging "after 7" would never see 6.
-- Each event records its transaction's id (xid); the feed orders by (xid, id) and exposes only events of
-- transactions below the oldest transaction still running (pg_snapshot_xmin): every transaction below it has
-- committed or aborted, and every later one has a larger xid, so it lands after any position already handed out.
-- The price: a transaction that stays open holds the feed back (by design, writes are one statement).

-- Record one event. p_data: the object in the shapes the API answers with (usually the answer of the write that
-- made the change), never personal data beyond the member's reference.
CREATE FUNCTION ledger.emit(p_program uuid, p_member_pk bigint, p_type text, p_occurred_at timestamptz, p_data json)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO changes (program_id, member_id, type, occurred_at, data)
    VALUES (p_program, p_member_pk, p_type, p_occurred_at, p_data)
$$;

-- The same data announced under several types (NULLs left out): a positive adjustment is points.adjusted and
-- points.earned, a capture hold.captured and points.redeemed.
CREATE FUNCTION ledger.emit_all(p_program uuid, p_member_pk bigint, p_types text[], p_occurred_at timestamptz,
                                p_data json)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO changes (program_id, member_id, type, occurred_at, data)
    SELECT p_program, p_member_pk, t, p_occurred_at, p_data FROM unnest(p_types) AS t WHERE t IS NOT NULL
$$;
