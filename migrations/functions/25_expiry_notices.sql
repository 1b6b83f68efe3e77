-- points.expiring: the notice that a member's points expire within N days, for each threshold of the program
-- (setting expiring_notice_days, e.g. [30, 7]). Each lot is announced at most once per threshold: a lot counts
-- under the smallest threshold its expiry is within, and is marked for that one and every larger one (a lot earned
-- 10 days before it expires gets the 7-day notice only). One event per member and threshold per run, listing the
-- points by expiry as GET /v1/members/{id}/expiring does. Pending points are included (they expire on their date
-- once available), as in that list. Closed members get no notices.
--
-- Walks one program's members upwards from p_after (one call per batch, its own transaction); overlapping runs
-- announce nothing twice: a notice is announced only by the transaction that inserted its marks.
CREATE FUNCTION ledger.announce_expiring(p_program uuid, p_days integer[], p_tz text, p_now timestamptz,
                                         p_after bigint, p_limit integer)
RETURNS TABLE (members integer, notices integer, last_member bigint) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH batch AS (
        SELECT b.member_id, b.activity_expires_at FROM member_balances b
         WHERE b.program_id = p_program AND b.member_id > p_after
         ORDER BY b.member_id LIMIT p_limit
    ), lot AS (
        SELECT l.id, l.member_id, l.remaining,
               ledger.lot_expires_at(l.expires_at, l.expires_on_inactivity, batch.activity_expires_at) AS expires_at
          FROM batch JOIN lots l ON l.member_id = batch.member_id
          JOIN members m ON m.id = batch.member_id AND m.status <> 'closed'
         WHERE l.remaining > 0
    ), due AS (
        SELECT lot.*, (SELECT min(d) FROM unnest(p_days) d
                        WHERE lot.expires_at <= p_now + make_interval(days => d)) AS days
          FROM lot WHERE lot.expires_at > p_now
    ), fresh AS (
        SELECT due.* FROM due
         WHERE due.days IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM expiry_notices n WHERE n.lot_id = due.id AND n.days = due.days)
    ), marked AS (
        INSERT INTO expiry_notices (lot_id, days, expires_at)
        SELECT f.id, d, f.expires_at FROM fresh f CROSS JOIN unnest(p_days) d WHERE d >= f.days
        ON CONFLICT DO NOTHING
        RETURNING lot_id, days
    ), announced AS (
        SELECT f.member_id, f.days, f.expires_at, sum(f.remaining)::bigint AS points
          FROM fresh f JOIN marked k ON k.lot_id = f.id AND k.days = f.days
         GROUP BY f.member_id, f.days, f.expires_at
    ), events AS (
        INSERT INTO changes (xid, program_id, member_id, type, occurred_at, data)
        SELECT ledger.change_position(a.member_id), p_program, a.member_id, 'points.expiring', p_now, json_build_object(
                   'member_id', m.external_id, 'within_days', a.days, 'points', sum(a.points),
                   'data', json_agg(json_build_object(
                       'expires_at', ledger.ts(a.expires_at),
                       'date', to_char(a.expires_at AT TIME ZONE p_tz, 'YYYY-MM-DD'),
                       'points', a.points) ORDER BY a.expires_at))
          FROM announced a JOIN members m ON m.id = a.member_id
         GROUP BY a.member_id, m.external_id, a.days
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM batch)::integer, (SELECT count(*) FROM events)::integer,
           (SELECT max(batch.member_id) FROM batch);
END $$;

-- Marks of expiries long past are of no use any more.
CREATE FUNCTION ledger.purge_expiry_notices(p_before timestamptz) RETURNS integer LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM expiry_notices WHERE expires_at < p_before RETURNING 1) SELECT count(*)::integer FROM gone
$$;
