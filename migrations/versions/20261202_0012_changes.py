"""changes: the outbox of the change feed and the webhooks (issue 13).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 11:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False,
                  comment="opaque to clients (ledger.public_id)"),
        sa.Column("xid", sa.BigInteger(), server_default=sa.text("pg_current_xact_id()::text::bigint"),
                  nullable=False, comment="the writing transaction: the feed's order is (xid, id)"),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=True, comment="the member it is about (none: the program itself)"),
        sa.Column("type", sa.Text(), nullable=False, comment="points.earned, hold.created, tier.changed, ..."),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("data", postgresql.JSON(astext_type=sa.Text()), nullable=False,
                  comment="in the shapes the API answers with; no personal data"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_changes")),
    )
    op.create_index(op.f("ix_changes_program_id_xid_id"), "changes", ["program_id", "xid", "id"])
    op.create_index(op.f("ix_changes_member_id_xid_id"), "changes", ["member_id", "xid", "id"])
    op.create_index(op.f("ix_changes_recorded_at"), "changes", ["recorded_at"])


def downgrade() -> None:
    op.drop_table("changes")
