"""purchase days: per-member daily totals of purchases, so the tier metric reads at most a window's days.

The trigger and the backfill are in migrations/sql/20261201_0005_purchase_days.sql.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:15:00
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from migrations.sqlfile import run_sql_file

SQL = Path(__file__).resolve().parents[1] / "sql" / "20261201_0005_purchase_days.sql"

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'member_purchase_days',
        sa.Column('member_id', sa.BigInteger(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False, comment='UTC date of the purchases\' occurred_at'),
        sa.Column('points', sa.BigInteger(), nullable=False, comment='points awarded minus clawed back'),
        sa.Column('qualifying_points', sa.BigInteger(), nullable=False,
                  comment='per purchase: line points minus those returned, at least 0; summed'),
        sa.Column('spend', sa.Numeric(), nullable=False, comment='eligible amounts'),
        sa.Column('purchases', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_purchase_days_member_id_members')),
        sa.PrimaryKeyConstraint('member_id', 'day', name=op.f('pk_member_purchase_days')),
        comment='materialised from purchases by a trigger; checked by verify',
    )
    run_sql_file(SQL)


def downgrade() -> None:
    op.execute("DROP TRIGGER purchases_days ON purchases")
    op.execute("DROP FUNCTION ledger_purchase_days_apply()")
    op.drop_table('member_purchase_days')
