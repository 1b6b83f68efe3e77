"""SQL of the change feed and of webhook endpoints and deliveries (the queue's functions: 95_webhooks.sql)."""

FEED = "SELECT j::text FROM ledger.changes_page($1, NULL, $2, $3, $4) j"
# No row: no such member; a NULL page: the cursor is not one of this program's events.
MEMBER_FEED = """
SELECT (SELECT j::text FROM ledger.changes_page($1, m.id, $3, $4, $5) j) AS page FROM ledger.member($1, $2) m
"""

_ENDPOINT = """id, url, description, event_types, enabled, disabled_reason, failing_since,
       CASE WHEN previous_secret_until > now() THEN previous_secret_until END AS previous_secret_valid_until,
       created_at, updated_at"""

ENDPOINT_COUNT = "SELECT count(*) FROM webhook_endpoints WHERE program_id = $1"

# An endpoint starts at the feed's horizon: it receives the changes of transactions not yet ended when it was made,
# and every later one (xid >= horizon), none from before.
CREATE_ENDPOINT = f"""
INSERT INTO webhook_endpoints (program_id, url, description, event_types, enabled, secret, position_xid, position_id)
VALUES ($1, $2, $3, $4, $5, $6, ledger.changes_horizon() - 1, 9223372036854775807)
RETURNING {_ENDPOINT}
"""

LIST_ENDPOINTS = f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE program_id = $1 ORDER BY created_at, id"

GET_ENDPOINT = f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE program_id = $1 AND id = $2"

# Fields given replace (NULL keeps); enabling clears the failure state, so the endpoint gets a fresh start.
UPDATE_ENDPOINT = f"""
UPDATE webhook_endpoints
   SET url = coalesce($3, url),
       description = CASE WHEN $4 THEN $5 ELSE description END,
       event_types = coalesce($6, event_types),
       enabled = coalesce($7, enabled),
       failing_since = CASE WHEN $7 AND NOT enabled THEN NULL ELSE failing_since END,
       disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END,
       updated_at = now()
 WHERE program_id = $1 AND id = $2
RETURNING {_ENDPOINT}
"""

DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE program_id = $1 AND id = $2 RETURNING id"

ROTATE_SECRET = """
UPDATE webhook_endpoints
   SET previous_secret = secret, previous_secret_until = now() + make_interval(secs => $4), secret = $3,
       updated_at = now()
 WHERE program_id = $1 AND id = $2
RETURNING CASE WHEN previous_secret_until > now() THEN previous_secret_until END AS previous_secret_valid_until
"""

# A delivery as the API shows it, with its last 20 attempts (newest first).
_DELIVERY_JSON = """
json_build_object(
    'id', ledger.public_id('dlv', d.id), 'event_id', ledger.public_id('evt', d.change_id),
    'event_type', c.type, 'status', d.status, 'attempts', d.attempts,
    'next_attempt_at', CASE WHEN d.status = 'pending' THEN ledger.ts(d.next_attempt_at) END,
    'last_status', d.last_status, 'last_error', d.last_error, 'created_at', ledger.ts(d.created_at),
    'delivered_at', ledger.ts(d.delivered_at),
    'log', coalesce((SELECT json_agg(json_build_object(
                         'attempted_at', ledger.ts(a.attempted_at), 'status_code', a.status_code,
                         'latency_ms', a.latency_ms, 'response_snippet', a.response_snippet, 'error', a.error)
                         ORDER BY a.id DESC)
                       FROM (SELECT * FROM webhook_attempts a WHERE a.delivery_id = d.id
                              ORDER BY a.id DESC LIMIT 20) a), '[]'::json))"""

# Newest first, after the cursor (a delivery's public id), optionally of one status. NULL: no such endpoint.
DELIVERIES = f"""
WITH ep AS (SELECT id FROM webhook_endpoints WHERE program_id = $1 AND id = $2),
page AS (
    SELECT d.*, row_number() OVER (ORDER BY d.id DESC) AS n
      FROM webhook_deliveries d, ep
     WHERE d.endpoint_id = ep.id AND ($3::bigint IS NULL OR d.id < $3) AND ($4::text IS NULL OR d.status = $4)
     ORDER BY d.id DESC LIMIT $5 + 1
)
SELECT json_build_object(
    'data', coalesce((SELECT json_agg({_DELIVERY_JSON} ORDER BY d.n)
                        FROM page d LEFT JOIN changes c ON c.id = d.change_id WHERE d.n <= $5), '[]'::json),
    'next_cursor', (SELECT ledger.public_id('dlv', d.id) FROM page d WHERE d.n = $5 AND EXISTS (
                        SELECT 1 FROM page x WHERE x.n > $5)))::text
  FROM ep
"""

DELIVERY_ROW_ID = "SELECT ledger.row_id('dlv', $1)"

# Send it again now (whatever its status). No row: not this endpoint's delivery. Then the member's queue is put
# back in shape (NORMALIZE): if an older delivery of the member is pending, this one waits for it.
RETRY_DELIVERY = """
UPDATE webhook_deliveries d
   SET status = 'pending', next_attempt_at = now(), delivered_at = NULL
  FROM webhook_endpoints e
 WHERE e.program_id = $1 AND e.id = $2 AND d.endpoint_id = e.id AND d.id = ledger.row_id('dlv', $3)
RETURNING d.id, d.member_id
"""
NORMALIZE = "SELECT ledger.webhook_normalize($1, $2)"
DELIVERY_JSON = f"""
SELECT {_DELIVERY_JSON}::text FROM webhook_deliveries d LEFT JOIN changes c ON c.id = d.change_id WHERE d.id = $1
"""

# Every delivery that failed for good since $3, due again (then NORMALIZE the endpoint's queues).
RECOVER = """
WITH d AS (
    UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now()
      FROM webhook_endpoints e
     WHERE e.program_id = $1 AND e.id = $2 AND d.endpoint_id = e.id AND d.status = 'failed' AND d.created_at >= $3
    RETURNING 1
)
SELECT count(*) FROM d
"""

# The queue (worker side).
FAN_OUT = "SELECT ledger.webhook_fan_out($1)"
WAKE = "SELECT ledger.webhook_wake($1)"
PAUSE = "SELECT ledger.webhook_pause($1)"
CLAIM = "SELECT * FROM ledger.webhook_claim($1, $2)"
RECORD = "SELECT ledger.webhook_record($1, $2, $3, $4, $5, $6, $7, $8)"

# Retention: changes and settled deliveries older than the retention go (attempts with their delivery). In slices,
# so a purge never holds many locks nor runs long.
PURGE_CHANGES = """
WITH old AS (SELECT id FROM changes WHERE recorded_at < now() - make_interval(days => $1) ORDER BY recorded_at
             LIMIT $2)
DELETE FROM changes c USING old WHERE c.id = old.id
"""
PURGE_DELIVERIES = """
WITH old AS (SELECT id FROM webhook_deliveries WHERE status <> 'pending'
                AND created_at < now() - make_interval(days => $1) ORDER BY id LIMIT $2)
DELETE FROM webhook_deliveries d USING old WHERE d.id = old.id
"""
