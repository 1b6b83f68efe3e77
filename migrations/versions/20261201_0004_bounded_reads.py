"""bounded reads: indexes for a member's lots under the activity policy and pending lots by due time.

Functions are not created here (see migrations/functions/, applied by the repeatable step of
app/db/functions.py); this revision keeps only its indexes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:50:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The lots under the activity policy, by member: the balance read sums them only for members who have an
    # activity date, instead of filtering every open lot of every member.
    op.create_index("ix_lots_open_inactivity", "lots", ["member_id"],
                    postgresql_where=sa.text("remaining > 0 AND expires_on_inactivity"))
    # A member's pending lots by the time they become available: the balance read's "pending points now due"
    # is a range, however many purchases are still inside their return window.
    op.drop_index("ix_lots_pending_member", table_name="lots")
    op.create_index("ix_lots_pending_member", "lots", ["member_id", "available_at"], postgresql_where=sa.text("pending"))


def downgrade() -> None:
    op.drop_index("ix_lots_open_inactivity", table_name="lots")
    op.drop_index("ix_lots_pending_member", table_name="lots")
    op.create_index("ix_lots_pending_member", "lots", ["member_id"], postgresql_where=sa.text("pending"))
