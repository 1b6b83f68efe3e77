-- Writes that answer with what they wrote, in the one round trip, while the member's lock is held.
--
-- 1. ledger_balance: the balance read, as a SQL function so that the write functions below return it too.
--    LANGUAGE sql, STABLE, one SELECT: the planner inlines it into the calling query, so
--    `SELECT * FROM ledger_balance($1, $2)` plans exactly as the query written out would.
--
-- Reads never wait for a job: holds past their expiry count as available again at once, pending points
-- past their return window count as available, and points past their expiry stop counting, before the
-- jobs post the entries that make it so. Every lot subquery is an index range (expired lots, the first
-- future expiry and the lots expiring then; lots under the activity policy only for members who have an
-- activity date), so a member with thousands of open lots reads as fast as a new one.
CREATE FUNCTION ledger_balance(p_program uuid, p_member_ref text)
RETURNS TABLE (member_id text, available bigint, pending bigint, held bigint, lifetime_earned bigint,
               lifetime_redeemed bigint, next_expiry_at timestamptz, next_expiry_points bigint, tier text)
LANGUAGE sql STABLE AS $$
    SELECT m.external_id AS member_id,
           b.available + x.lapsed + y.due - z.dated - z.inactive AS available, b.pending - y.due AS pending,
           b.held - x.lapsed AS held, b.lifetime_earned, b.lifetime_redeemed,
           nx.at AS next_expiry_at,
           (CASE WHEN nx.at = n.dated_at THEN
                (SELECT coalesce(sum(l.remaining), 0) FROM lots l
                  WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_at = n.dated_at
                    AND NOT l.expires_on_inactivity)
            ELSE 0 END
            + CASE WHEN nx.at = b.activity_expires_at THEN coalesce(n.inactive_points, 0) ELSE 0 END
           )::bigint AS next_expiry_points,
           mt.tier
    FROM members m
    JOIN member_balances b ON b.member_id = m.id
    LEFT JOIN member_tiers mt ON mt.member_id = m.id
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(h.points), 0)::bigint AS lapsed FROM holds h
        WHERE h.member_id = m.id AND h.status = 'open' AND h.expires_at <= now()
    ) x
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(l.remaining), 0)::bigint AS due FROM lots l
        WHERE l.member_id = m.id AND l.pending AND l.available_at <= now()
    ) y
    CROSS JOIN LATERAL (
        SELECT (SELECT coalesce(sum(l.remaining), 0) FROM lots l
                 WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_at <= now()
                   AND NOT l.pending AND NOT l.expires_on_inactivity)::bigint AS dated,
               CASE WHEN b.activity_expires_at <= now() THEN
                   (SELECT coalesce(sum(l.remaining), 0) FROM lots l
                     WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_on_inactivity AND NOT l.pending)
               ELSE 0 END::bigint AS inactive
    ) z
    CROSS JOIN LATERAL (
        SELECT (SELECT l.expires_at FROM lots l
                 WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_at > now() AND NOT l.expires_on_inactivity
                 ORDER BY l.expires_at LIMIT 1) AS dated_at,
               CASE WHEN b.activity_expires_at > now() THEN
                   (SELECT sum(l.remaining) FROM lots l
                     WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_on_inactivity)
               END AS inactive_points
    ) n
    CROSS JOIN LATERAL (
        SELECT least(n.dated_at, CASE WHEN n.inactive_points > 0 THEN b.activity_expires_at END) AS at
    ) nx
    WHERE m.program_id = p_program AND m.external_id = p_member_ref
$$;

-- 2. ledger_debit: ledger_debit_available (a redemption or a hold), then the member's balance after it (also
--    after a refusal for insufficient points, whose answer shows what is available), and the creation time.
--    The balance is read by a statement after the debit's, so it sees the debit; the member's lock is still
--    held, so nothing else changed in between. A redemption or hold answers in one round trip instead of
--    three, and the hot member's lock is held for two fewer round trips.
CREATE FUNCTION ledger_debit(p_program uuid, p_member_ref text, p_points bigint, p_kind text,
                             p_occurred_at timestamptz, p_reference text, p_description text,
                             p_metadata jsonb, p_hold_expires_at timestamptz)
RETURNS TABLE (status text, entry_id bigint, object_id bigint, created_at timestamptz, member_id text,
               available bigint, pending bigint, held bigint, lifetime_earned bigint, lifetime_redeemed bigint,
               next_expiry_at timestamptz, next_expiry_points bigint, tier text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    d record;
BEGIN
    SELECT * INTO d FROM ledger_debit_available(p_program, p_member_ref, p_points, p_kind, p_occurred_at,
                                                p_reference, p_description, p_metadata, p_hold_expires_at);
    RETURN QUERY
    SELECT d.status, d.entry_id, d.object_id, p_occurred_at, b.member_id, b.available, b.pending, b.held,
           b.lifetime_earned, b.lifetime_redeemed, b.next_expiry_at, b.next_expiry_points, b.tier
      FROM (SELECT 1) one LEFT JOIN ledger_balance(p_program, p_member_ref) b ON d.status <> 'member_not_found';
END $$;
