"""dashboard sessions: an admin key exchanged for a session cookie (issue 17, the dashboard).

A row per signed-in browser: the SHA-256 of the session token (the token itself is only in the cookie), the
program and the admin key it was opened with, and its expiry. A session is valid only while its key is not
revoked (the lookup joins `api_keys`), so revoking the key ends its sessions at once.
And an index on vouchers (program_id, issued_at) for the dashboard's top rewards of a period.

Revision ID: 1702
Revises: 1701
Create Date: 2026-12-02 17:02:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1702'
down_revision: str | None = '1701'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False,
                  comment="SHA-256 of the session token; the token is only in the browser's cookie"),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("key_id", sa.UUID(), nullable=False,
                  comment="the admin key signed in with; revoked, the session ends"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_dashboard_sessions_key_id_api_keys")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"],
                                name=op.f("fk_dashboard_sessions_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dashboard_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_dashboard_sessions_token_hash")),
    )
    op.create_index(op.f("ix_dashboard_sessions_key_id"), "dashboard_sessions", ["key_id"])
    op.create_index(op.f("ix_dashboard_sessions_expires_at"), "dashboard_sessions", ["expires_at"])
    # the dashboard's top rewards of a period
    op.create_index(op.f("ix_vouchers_program_id_issued_at"), "vouchers", ["program_id", "issued_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_vouchers_program_id_issued_at"), table_name="vouchers")
    op.drop_table("dashboard_sessions")
