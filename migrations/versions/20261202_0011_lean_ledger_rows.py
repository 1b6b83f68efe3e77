"""lean ledger rows: no foreign-key checks on the high-volume rows of the ledger, two redundant indexes less.

A foreign key check runs a query and takes a FOR KEY SHARE lock on the referenced row for every inserted row.
Posting one entry checked five (its member, and each posting's entry and member), each lot allocation two, and the
member checks locked the member's own `members` row at every write, rewriting its lock information. These rows
are written only by the SQL functions of migrations/functions/, which take both ends of every reference from one
another; `verify` proves the references instead (its `orphan` checks and `program_mismatch`).

Indexes: `ix_lots_expiring` duplicated `ix_lots_open_by_expiry` (the due lots are an index range of the latter),
`ix_lots_entry_id` and `ix_postings_member_id_account` served no query. Every update of a lot's `remaining` is
not HOT (the column is in the partial indexes' predicates), so each index of `lots` costs an insert per consumed
lot.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEYS = (
    ("entries", "member_id", "members"), ("postings", "entry_id", "entries"), ("postings", "member_id", "members"),
    ("lots", "member_id", "members"), ("lot_allocations", "entry_id", "entries"), ("lot_allocations", "lot_id", "lots"),
    ("holds", "member_id", "members"), ("redemptions", "member_id", "members"), ("purchases", "member_id", "members"),
    ("member_events", "member_id", "members"), ("member_purchase_days", "member_id", "members"),
)


def upgrade() -> None:
    for table, column, referred in FOREIGN_KEYS:
        op.drop_constraint(f"fk_{table}_{column}_{referred}", table, type_="foreignkey")
    op.drop_index("ix_lots_expiring", table_name="lots")
    op.drop_index("ix_lots_entry_id", table_name="lots")
    op.drop_index("ix_postings_member_id_account", table_name="postings")


def downgrade() -> None:
    op.create_index("ix_postings_member_id_account", "postings", ["member_id", "account"])
    op.create_index("ix_lots_entry_id", "lots", ["entry_id"])
    op.create_index("ix_lots_expiring", "lots", ["member_id", "expires_at"],
                    postgresql_where=sa.text("remaining > 0 AND NOT pending AND expires_at IS NOT NULL"))
    for table, column, referred in FOREIGN_KEYS:
        op.create_foreign_key(f"fk_{table}_{column}_{referred}", table, referred, [column], ["id"])
