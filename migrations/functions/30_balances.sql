-- The balance as the API shows it, computed from the materialised balance row and the member's lots and holds.
--
-- Reads never wait for a job: holds past their expiry count as available again at once, pending points past
-- their return window count as available, and due points (ledger.due_lots) stop counting, before the jobs
-- post the entries that make it so. Every lot subquery is an index range, so a member with thousands of open
-- lots reads as fast as a new one. LANGUAGE sql and STABLE: inlined into the calling query.
CREATE FUNCTION ledger.balance(p_member_pk bigint)
RETURNS TABLE (member_ref text, available bigint, pending bigint, held bigint, lifetime_earned bigint,
               lifetime_redeemed bigint, next_expiry_at timestamptz, next_expiry_points bigint, tier text)
LANGUAGE sql STABLE AS $$
    SELECT m.external_id,
           b.available + x.lapsed + y.due - z.expired, b.pending - y.due, b.held - x.lapsed,
           b.lifetime_earned, b.lifetime_redeemed,
           nx.at,
           (CASE WHEN nx.at = n.dated_at THEN
                (SELECT coalesce(sum(l.remaining), 0) FROM lots l
                  WHERE l.member_id = m.id AND l.remaining > 0 AND l.expires_at = n.dated_at
                    AND NOT l.expires_on_inactivity)
            ELSE 0 END
            + CASE WHEN nx.at = b.activity_expires_at THEN coalesce(n.inactive_points, 0) ELSE 0 END)::bigint,
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
        SELECT coalesce(sum(d.remaining), 0)::bigint AS expired FROM ledger.due_lots(ARRAY[m.id], now()) d
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
    WHERE m.id = p_member_pk
$$;

-- JSON renderers are set-returning SQL functions used in FROM (or a scalar subquery), so the planner inlines
-- them into the statement that uses them, whose plan is prepared and cached once per connection.
CREATE FUNCTION ledger.balance_json(p_member_pk bigint) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'member_id', b.member_ref, 'available', b.available, 'pending', b.pending, 'held', b.held,
        'lifetime_earned', b.lifetime_earned, 'lifetime_redeemed', b.lifetime_redeemed,
        'next_expiry_at', ledger.ts(b.next_expiry_at), 'next_expiry_points', b.next_expiry_points, 'tier', b.tier)
    FROM ledger.balance(p_member_pk) b
$$;

-- GET /v1/members/{member_id}/balance: the JSON of the answer, or NULL when the member does not exist.
CREATE FUNCTION ledger.balance_read(p_program uuid, p_member_ref text) RETURNS SETOF json LANGUAGE sql STABLE AS $$
    SELECT j FROM ledger.member(p_program, p_member_ref) m CROSS JOIN LATERAL ledger.balance_json(m.id) j
$$;
