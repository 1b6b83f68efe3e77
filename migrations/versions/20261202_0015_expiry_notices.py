"""expiry notices: which lot was announced at which threshold (points.expiring, issue 13).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 15:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "expiry_notices",
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False, comment="the threshold: days before the expiry"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, comment="the expiry announced"),
        sa.Column("announced_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("lot_id", "days", name=op.f("pk_expiry_notices")),
    )
    op.create_index(op.f("ix_expiry_notices_expires_at"), "expiry_notices", ["expires_at"])


def downgrade() -> None:
    op.drop_table("expiry_notices")
