"""All SQL of tiers: configuration versions, member tier state and history, the qualifying metric."""

# The qualifying metric of members over [start, end] (points, spend, purchases): the SQL function
# ledger_tier_metrics (migration 0007, where its method is explained), inlined by the planner. $1: member ids.
METRICS = "SELECT member_pk AS member_id, points, spend, purchases FROM ledger.tier_metrics($1, $2, $3, $4)"


STATES_PEEK = """
SELECT b.member_id, t.tier, t.valid_until, t.manual_tier, t.manual_until
FROM member_balances b LEFT JOIN member_tiers t ON t.member_id = b.member_id
WHERE b.member_id = ANY($1::bigint[])
ORDER BY b.member_id
"""
# The members' locks, in the service's one lock order (ledger.lock_members), before reading their states with
# STATES_PEEK in the next statement (which then sees what their last writers committed).
LOCK_MEMBERS = "SELECT ledger.lock_members($1::bigint[])"

# Record a tier state (and its history row when p_reason is given): ledger.save_tier (70_tiers.sql).
SAVE = """
SELECT ledger.save_tier(p_program => $1, p_member_pk => $2, p_tier => $3, p_valid_until => $4, p_manual_tier => $5,
                        p_manual_until => $6, p_at => $7, p_evaluated_at => $8, p_from_tier => $9, p_reason => $10,
                        p_source => $11, p_reference => $12, p_config_version => $13)
"""

MEMBER = """
SELECT m.id, t.tier, t.valid_until, t.manual_tier, t.manual_until, t.since
FROM ledger.member($1, $2) m LEFT JOIN member_tiers t ON t.member_id = m.id
"""

MEMBER_HISTORY = """
SELECT from_tier, to_tier, valid_until, reason, source, reference, config_version, changed_at, recorded_at
FROM tier_history WHERE member_id = $1 ORDER BY changed_at DESC, id DESC LIMIT $2
"""

# Members of a program in id order after $2 (keyset pagination of the evaluation job).
MEMBER_BATCH = "SELECT id FROM members WHERE program_id = $1 AND id > $2 ORDER BY id LIMIT $3"
# $2: that program only, or NULL for all.
PROGRAMS_WITH_TIERS = """
SELECT DISTINCT program_id FROM tier_config_versions
WHERE effective_from <= $1 AND ($2::uuid IS NULL OR program_id = $2)
"""
PROGRAM_TZ = "SELECT timezone FROM programs WHERE id = $1"
# How many members evaluate_all(as_of $1, program $2 or all) walks: the total of the CLI's progress bar.
MEMBERS_TO_EVALUATE = """
SELECT count(*) FROM members m
WHERE m.program_id IN (SELECT program_id FROM tier_config_versions WHERE effective_from <= $1)
  AND ($2::uuid IS NULL OR m.program_id = $2)
"""
