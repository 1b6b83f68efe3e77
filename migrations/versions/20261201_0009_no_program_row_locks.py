"""no program row locks: the ledger's high-volume tables no longer have a foreign key to `programs`.

A foreign key check takes FOR KEY SHARE on the referenced row. Every write of every member of a program
inserted rows referencing that program's one `programs` row (an idempotency key, an entry, its postings,
a lot, a hold or redemption or purchase), so every write transaction locked that one row several times;
lockers of one row share a MultiXact that is rewritten (and WAL-logged) whenever the set of lockers changes.
With many terminals writing for one program at once, that single row was written by every transaction:
exactly the hot row the design otherwise avoids. The program of these rows is fixed by construction instead
(each write function finds the member by program and external id, and posts under that program), and
`verify` checks it: every entry's and posting's program is its member's. `members`, `api_keys` and the
configuration versions keep their foreign key to `programs`; every row keeps its foreign key to its member.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 20:40:00
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("entries", "postings", "lots", "idempotency_keys", "holds", "redemptions", "purchases", "member_events",
          "member_balances", "member_tiers", "tier_history")


def upgrade() -> None:
    for table in TABLES:
        op.drop_constraint(f"fk_{table}_program_id_programs", table, type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        op.create_foreign_key(f"fk_{table}_program_id_programs", table, "programs", ["program_id"], ["id"])
