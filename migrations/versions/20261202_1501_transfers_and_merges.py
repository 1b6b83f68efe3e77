"""transfers and merges: entry kinds `transfer` and `merge`, entries moving points of two members, member aliases.

* entries.kind: `transfer` (one member's available points to another's, lots keeping their expiry) and `merge` (a
  merged-away member's balances and open lots to the surviving member).
* `entry_counterparties`: the member other than entries.member_id whose points an entry moves (a transfer's
  receiver, a merge's survivor): their activity lists the entry, and verify accepts their postings on it.
* `transfers`: one row per transfer (the daily limit counts them).
* `member_merges` and members.merged_into: a merged-away member is an alias of its survivor from then on;
  member_balances.merged_into: a write that resolved the member before the merge committed runs again.

The functions are in migrations/functions/87_transfers.sql and 88_merges.sql.

Revision ID: 1501
Revises: 1702
Create Date: 2026-12-02 15:01:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '1501'
down_revision: str | None = '1702'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = ("earn", "event", "activate", "redeem", "hold", "capture", "void", "release", "expire", "adjust",
                "reverse", "clawback", "refund", "exchange", "exchange_refund")
KINDS_AFTER = (*KINDS_BEFORE, "transfer", "merge")


def _kinds(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_entries_kind"), "entries", type_="check")
    op.create_check_constraint(op.f("ck_entries_kind"), "entries", _kinds(KINDS_AFTER))
    op.create_table(
        "entry_counterparties",
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "entry_id", name=op.f("pk_entry_counterparties")),
        comment="the other member an entry moves points of (a transfer's receiver, a merge's survivor)",
    )
    op.create_index(op.f("ix_entry_counterparties_entry_id"), "entry_counterparties", ["entry_id"])
    op.create_table(
        "transfers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False,
                  comment="opaque to clients (trf_...)"),
        sa.Column("program_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("from_member_id", sa.BigInteger(), nullable=False),
        sa.Column("to_member_id", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True, comment="the client's reference"),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_transfers_points_positive")),
        sa.CheckConstraint("from_member_id <> to_member_id", name=op.f("ck_transfers_two_members")),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], name=op.f("fk_transfers_entry_id_entries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_transfers_entry_id")),
    )
    op.create_index(op.f("ix_transfers_from_member_id_created_at"), "transfers", ["from_member_id", "created_at"])
    op.add_column("members", sa.Column("merged_into", sa.BigInteger(), nullable=True,
                                       comment="merged away: the surviving member, which its reference now names"))
    op.create_index("ix_members_merged_into", "members", ["merged_into"],
                    postgresql_where=sa.text("merged_into IS NOT NULL"))
    op.add_column("member_balances", sa.Column(
        "merged_into", sa.BigInteger(), nullable=True,
        comment="set by a merge: a write that locked this row meanwhile raced the merge, and runs again"))
    op.create_table(
        "member_merges",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("program_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False, comment="the surviving member"),
        sa.Column("merged_member_id", sa.BigInteger(), nullable=False, comment="the member merged into it"),
        sa.Column("entry_id", sa.BigInteger(), nullable=True, comment="the merge entry (NULL: nothing to move)"),
        sa.Column("tier_before", sa.Text(), nullable=True),
        sa.Column("merged_tier", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], name=op.f("fk_member_merges_entry_id_entries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_merges")),
        sa.UniqueConstraint("merged_member_id", name=op.f("uq_member_merges_merged_member_id")),
    )


def downgrade() -> None:
    op.execute("DROP TABLE member_merges, transfers, entry_counterparties CASCADE")
    op.drop_column("member_balances", "merged_into")
    op.drop_index("ix_members_merged_into", table_name="members")
    op.drop_column("members", "merged_into")
    op.execute("UPDATE schema_functions SET checksum = 'downgraded below 1501'")
    op.drop_constraint(op.f("ck_entries_kind"), "entries", type_="check")
    op.create_check_constraint(op.f("ck_entries_kind"), "entries", _kinds(KINDS_BEFORE))
