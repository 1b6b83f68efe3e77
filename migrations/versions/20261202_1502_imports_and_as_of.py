"""imports and as-of reads: entry kind `import`, the member_imports register, entries by member and by program in
recorded time.

* entries.kind: `import` (issued -> available/pending), the opening balance of a member brought over from a legacy
  system by `points-ledger import` / `POST /v1/imports`, one entry per member.
* `member_imports`: one row per imported member: the hash of the row it came from (a rerun of the same row is a
  no-op, another row for the same member is refused), its import entry, when.
* `ix_postings_member_id_entry_id` (with account and points): a member's balance as of an instant sums its
  postings (an index-only range; postings, not entries, because one entry may move the points of two members)
  whose entries were recorded by then; `ix_entries_program_id_recorded_at`: the programme's liability as of an
  instant (today's balances minus what was recorded since) and the ledger export walk a program's entries in
  recorded time.

The functions are in migrations/functions/88_imports.sql and 89_as_of.sql.

Revision ID: 1502
Revises: 1501
Create Date: 2026-12-02 15:02:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1502'
down_revision: str | None = '1501'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = ("earn", "event", "activate", "redeem", "hold", "capture", "void", "release", "expire", "adjust",
                "reverse", "clawback", "refund", "exchange", "exchange_refund", "transfer", "merge")
KINDS_AFTER = (*KINDS_BEFORE, "import")


def _kinds(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_entries_kind"), "entries", type_="check")
    op.create_check_constraint(op.f("ck_entries_kind"), "entries", _kinds(KINDS_AFTER))
    op.create_table(
        "member_imports",
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(), nullable=False,
                  comment="sha256 of the row as validated: the same row again is a no-op, another one a conflict"),
        sa.Column("entry_id", sa.BigInteger(), nullable=True,
                  comment="the member's import entry (NULL: imported without an opening balance)"),
        sa.Column("imported_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_member_imports_member_id_members")),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_imports")),
    )
    op.create_index(op.f("ix_postings_member_id_entry_id"), "postings", ["member_id", "entry_id"],
                    postgresql_include=["account", "points"])
    op.create_index(op.f("ix_entries_program_id_recorded_at"), "entries", ["program_id", "recorded_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_entries_program_id_recorded_at"), table_name="entries")
    op.drop_index(op.f("ix_postings_member_id_entry_id"), table_name="postings")
    op.drop_table("member_imports")
    op.drop_constraint(op.f("ck_entries_kind"), "entries", type_="check")
    op.create_check_constraint(op.f("ck_entries_kind"), "entries", _kinds(KINDS_BEFORE))
