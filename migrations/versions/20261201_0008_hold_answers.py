"""hold answers: the hold and redemption reads as SQL functions, and ledger_resolve_hold (capture or void,
then the hold, the redemption and the balance, in one round trip).

The SQL is in migrations/sql/20261201_0008_hold_answers.sql.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:30:00
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

from migrations.sqlfile import run_sql_file

SQL = Path(__file__).resolve().parents[1] / "sql" / "20261201_0008_hold_answers.sql"

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    run_sql_file(SQL)


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_resolve_hold(uuid, bigint, text, bigint, timestamptz)")
    op.execute("DROP FUNCTION ledger_redemption_view(uuid, bigint)")
    op.execute("DROP FUNCTION ledger_hold_view(uuid, bigint)")
