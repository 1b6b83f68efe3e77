"""bounded reads: indexes for a member's lots under the activity policy and pending lots by due time, and
a purchase context that sums the day's and month's points only when a cap needs them.

The SQL is in migrations/sql/20261201_0004_bounded_reads.sql.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:50:00
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from migrations.sqlfile import run_sql, run_sql_file

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
SQL = SQL_DIR / "20261201_0004_bounded_reads.sql"

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    run_sql_file(SQL)


def downgrade() -> None:
    # Put back 0003's definition, read from its own file rather than copied here.
    earning = (SQL_DIR / "20261123_0003_earning.sql").read_text()
    match = re.search(r"^CREATE FUNCTION ledger_purchase_context\(.*?^END \$\$;", earning, re.S | re.M)
    assert match is not None, "ledger_purchase_context not found in 0003's SQL"
    # issue-12: 0004's definition returns more columns than 0003's: drop it before putting 0003's back.
    op.execute("DROP FUNCTION ledger_purchase_context(uuid, text, boolean, text, timestamptz, text)")
    run_sql(match.group(0))
    op.drop_index("ix_lots_open_inactivity", table_name="lots")
    op.drop_index("ix_lots_pending_member", table_name="lots")
    op.create_index("ix_lots_pending_member", "lots", ["member_id"], postgresql_where=sa.text("pending"))
