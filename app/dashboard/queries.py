"""The dashboard's own reads (everything else it shows comes from the services of members, ledger, tiers,
rewards and insight)."""

from __future__ import annotations

# The rewards most exchanged in [from, to): one voucher per exchange (vouchers keep the points the exchange
# cost). Cancelled vouchers were exchanges too; their points came back, so they are counted apart.
TOP_REWARDS = """
SELECT ledger.public_id('rwd', r.id) AS reward_id, r.name, r.kind, r.cost_points, r.archived_at IS NOT NULL AS archived,
       count(*) AS exchanges,
       count(*) FILTER (WHERE v.status = 'redeemed') AS redeemed,
       count(*) FILTER (WHERE v.status = 'cancelled') AS cancelled,
       count(DISTINCT v.member_id) AS members,
       coalesce(sum(v.points) FILTER (WHERE v.status <> 'cancelled'), 0) AS points
FROM vouchers v
JOIN rewards r ON r.id = v.reward_id AND r.program_id = v.program_id
WHERE v.program_id = $1 AND v.issued_at >= $2 AND v.issued_at < $3
GROUP BY r.id
ORDER BY exchanges DESC, points DESC, r.id
LIMIT $4
"""

# The liability now, by where the points are (the analytics summary and the forecast give the total; verify proves
# it equals the postings).
BALANCES = """
SELECT coalesce(sum(available), 0)::bigint AS available, coalesce(sum(pending), 0)::bigint AS pending,
       coalesce(sum(held), 0)::bigint AS held,
       count(*) FILTER (WHERE available + pending + held > 0) AS members_with_points
FROM member_balances WHERE program_id = $1
"""
