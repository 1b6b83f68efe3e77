"""All SQL for programs and API keys."""

INSERT_PROGRAM = """
INSERT INTO programs (name, currency, timezone, settings) VALUES ($1, $2, $3, $4)
RETURNING id, name, currency, timezone, settings, created_at
"""

GET_PROGRAM = "SELECT id, name, currency, timezone, settings, created_at FROM programs WHERE id = $1"

UPDATE_PROGRAM = """
UPDATE programs SET name = coalesce($2, name), settings = $3 WHERE id = $1
RETURNING id, name, currency, timezone, settings, created_at
"""

INSERT_API_KEY = """
INSERT INTO api_keys (program_id, name, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4, $5)
RETURNING id, name, prefix, scopes, created_at, revoked_at
"""

LIST_API_KEYS = """
SELECT id, name, prefix, scopes, created_at, revoked_at FROM api_keys
WHERE program_id = $1 ORDER BY created_at, id
"""

# The program's active admin keys, locked in id order: two revocations at once wait for each other, and the
# second sees the first's revocation (the revoked row no longer matches), so the last admin key always stays.
LOCK_ACTIVE_ADMIN_KEYS = """
SELECT id FROM api_keys WHERE program_id = $1 AND revoked_at IS NULL AND 'admin' = ANY(scopes)
ORDER BY id FOR UPDATE
"""

# Every program with its count of active keys (`points-ledger programs list`).
LIST_PROGRAMS = """
SELECT p.id, p.name, p.currency, p.timezone, p.created_at,
       (SELECT count(*) FROM api_keys k WHERE k.program_id = p.id AND k.revoked_at IS NULL)::integer AS active_keys,
       (SELECT count(*) FROM api_keys k WHERE k.program_id = p.id AND k.revoked_at IS NULL
           AND 'admin' = ANY(k.scopes))::integer AS active_admin_keys
FROM programs p ORDER BY p.created_at, p.id
"""

REVOKE_API_KEY = """
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE program_id = $1 AND id = $2
RETURNING id, name, prefix, scopes, created_at, revoked_at
"""

# Authentication: the key's row and its program in one round trip.
AUTHENTICATE = """
SELECT k.id AS key_id, k.key_hash, k.scopes, k.revoked_at,
       p.id AS program_id, p.currency, p.timezone, p.settings
FROM api_keys k JOIN programs p ON p.id = k.program_id
WHERE k.prefix = $1
"""
