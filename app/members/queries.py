"""All SQL for members."""

from __future__ import annotations

_COLUMNS = "external_id AS member_id, name, email, phone, birthday, status, attributes, created_at, updated_at"

UPSERTABLE = ("name", "email", "phone", "birthday", "status", "attributes")
_DEFAULTS = {"status": "'active'", "attributes": "'{}'::jsonb"}


def upsert(fields: tuple[str, ...]) -> str:
    """Insert or update a member, setting exactly ``fields`` (a subset of UPSERTABLE, so no user input
    reaches the SQL text), and create the balance row of a new member in the same statement."""
    assert set(fields) <= set(UPSERTABLE)
    cols = ", ".join(("program_id", "external_id", *fields))
    values = ", ".join(
        ["$1", "$2"]
        + [f"coalesce(${i + 3}, {_DEFAULTS[f]})" if f in _DEFAULTS else f"${i + 3}" for i, f in enumerate(fields)]
    )
    updates = ", ".join([f"{f} = EXCLUDED.{f}" for f in fields] + ["updated_at = now()"])
    return f"""
WITH m AS (
    INSERT INTO members ({cols}) VALUES ({values})
    ON CONFLICT (program_id, external_id) DO UPDATE SET {updates} WHERE members.merged_into IS NULL
    RETURNING id, program_id, {_COLUMNS}, (xmax = 0) AS created
), b AS (
    INSERT INTO member_balances (member_id, program_id)
    SELECT id, program_id FROM m WHERE created
    ON CONFLICT DO NOTHING
), announced AS (
    SELECT ledger.emit(program_id, id, CASE WHEN created THEN 'member.created' ELSE 'member.updated' END, now(),
                       ledger.member_event(member_id, status, created_at, updated_at))
    FROM m
)
SELECT m.* FROM m, (SELECT count(*) FROM announced) x
"""


# issue-15: the reference of a merged-away member is an alias: the survivor's reference (the upsert updates that one).
SURVIVOR_REF = "SELECT m.external_id FROM ledger.member($1, $2) m"

GET = f"""
SELECT {_COLUMNS}, (SELECT t.tier FROM member_tiers t WHERE t.member_id = members.id) AS tier
FROM ledger.member($1, $2) members
"""

# Erase personal data, keep the member (and so its ledger) intact. Its vouchers stay too, without the delivery
# details of gifts (issue 14).
ERASE = f"""
WITH m AS (
    SELECT m.id FROM ledger.member($1, $2) m
), vouchers AS (
    UPDATE vouchers SET delivery = NULL WHERE member_id = (SELECT id FROM m) AND delivery IS NOT NULL
)
UPDATE members SET name = NULL, email = NULL, phone = NULL, birthday = NULL, attributes = '{{}}'::jsonb,
                   updated_at = now()
WHERE id = (SELECT id FROM m)
RETURNING id, {_COLUMNS}
"""

# Announced in the erasure's transaction; what earlier events said of the member is redacted with it.
ERASED = """
SELECT ledger.emit(m.program_id, m.id, 'member.erased', now(), ledger.member_event(m.external_id, m.status,
                   m.created_at, m.updated_at))
FROM members m WHERE m.id = $1
"""
