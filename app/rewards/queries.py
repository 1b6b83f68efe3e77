"""All SQL of rewards and vouchers. The writes of the ledger (exchange, redeem, cancel, expiry) are the functions of
migrations/functions/95_rewards.sql, called through app.ledger.writes; the catalogue's own rows are written here;
every answer is JSON that Postgres renders (ledger.reward_json, ledger.voucher_json)."""

from __future__ import annotations

# The columns a reward's fields are stored in (RewardFields + kind), in the order of INSERT_REWARD's parameters.
REWARD_COLUMNS = (
    "name", "description", "kind", "cost_points", "currency", "amount_off", "percent_off", "min_spend", "sku", "stock",
    "low_stock_threshold", "limit_count", "limit_period", "available_from", "available_until", "min_tier", "channels",
    "voucher_valid_days", "cancel_window_hours", "refund_on_expiry", "metadata",
)

INSERT_REWARD = f"""
INSERT INTO rewards (program_id, {", ".join(REWARD_COLUMNS)})
VALUES ($1, {", ".join(f"${i}" for i in range(2, len(REWARD_COLUMNS) + 2))})
RETURNING id
"""

# Every column but the kind (a reward's kind never changes).
UPDATE_REWARD = f"""
UPDATE rewards SET ({", ".join(c for c in REWARD_COLUMNS if c != "kind")}, updated_at)
                 = ({", ".join(f"${i}" for i in range(2, len(REWARD_COLUMNS) + 1))}, now())
WHERE id = $1
"""

LOCK_REWARD = f"""
SELECT id, {", ".join(REWARD_COLUMNS)} FROM rewards
WHERE id = ledger.row_id('rwd', $2) AND program_id = $1 FOR UPDATE
"""

ARCHIVE_REWARD = """
UPDATE rewards SET archived_at = now(), updated_at = now()
WHERE id = ledger.row_id('rwd', $2) AND program_id = $1 AND archived_at IS NULL
"""

REWARD_JSON = "SELECT j::text FROM ledger.reward_json($1, NULL, $2) j"
REWARD_READ = "SELECT member_found, body::text AS body FROM ledger.reward_read($1, $2, $3, $4)"
REWARDS_PAGE = "SELECT j::text FROM ledger.rewards_page($1, $2, $3, $4, $5, $6) j"

# Partner codes, idempotent per code: the new ones are added to the reward's stock (under the reward's lock, which
# the caller holds: LOCK_REWARD).
ADD_PARTNER_CODES = """
WITH added AS (
    INSERT INTO partner_codes (program_id, reward_id, code)
    SELECT $1, $2, c FROM unnest($3::text[]) c
    ON CONFLICT (reward_id, code) DO NOTHING
    RETURNING 1
), n AS (
    SELECT count(*) AS added FROM added
)
UPDATE rewards r SET stock = r.stock + n.added, updated_at = now() FROM n WHERE r.id = $2
RETURNING n.added, r.stock
"""

WALLET = "SELECT j::text FROM ledger.vouchers_page($1, $2, $3, $4, $5) j"
VOUCHER = "SELECT j::text FROM ledger.voucher_read($1, $2) j"
OUTSTANDING = "SELECT j::text FROM ledger.outstanding_vouchers($1, $2, $3) j"

EXPIRE_VOUCHERS = "SELECT ledger.expire_vouchers(now(), $1, $2)"
COUNT_DUE_VOUCHERS = """
SELECT count(*) FROM vouchers
WHERE status = 'issued' AND expires_at <= now() AND ($1::uuid IS NULL OR program_id = $1)
"""
