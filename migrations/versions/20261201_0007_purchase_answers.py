"""purchase answers: ledger_tier_metrics as a SQL function, and ledger_purchase (earn, then the tier metric
and the balance, in one round trip).

The SQL is in migrations/sql/20261201_0007_purchase_answers.sql.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:10:00
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

from migrations.sqlfile import run_sql_file

SQL = Path(__file__).resolve().parents[1] / "sql" / "20261201_0007_purchase_answers.sql"

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    run_sql_file(SQL)


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_purchase(uuid, bigint, text, timestamptz, bytea, jsonb, bigint, jsonb, bigint, "
               "timestamptz, timestamptz, boolean, timestamptz, bigint, numeric, text, timestamptz, timestamptz, "
               "boolean)")
    op.execute("DROP FUNCTION ledger_tier_metrics(bigint[], timestamptz, timestamptz, boolean)")
