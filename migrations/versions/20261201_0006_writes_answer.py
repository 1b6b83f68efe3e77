"""writes answer: ledger_balance as a SQL function, and ledger_debit (redeem or hold, then the balance, in
one round trip).

The SQL is in migrations/sql/20261201_0006_writes_answer.sql.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 20:00:00
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

from migrations.sqlfile import run_sql_file

SQL = Path(__file__).resolve().parents[1] / "sql" / "20261201_0006_writes_answer.sql"

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    run_sql_file(SQL)


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_debit(uuid, text, bigint, text, timestamptz, text, text, jsonb, timestamptz)")
    op.execute("DROP FUNCTION ledger_balance(uuid, text)")
