"""purchase days: per-member daily totals of purchases, so the tier metric reads at most a window's days.

The trigger that keeps them is in migrations/functions/80_purchases.sql (the one home of the SQL functions);
this revision creates the table and fills it from the purchases posted so far.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:15:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

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
    op.execute("""
        INSERT INTO member_purchase_days (member_id, day, points, qualifying_points, spend, purchases)
        SELECT member_id, (occurred_at AT TIME ZONE 'UTC')::date, sum(points - clawed_back_points),
               sum(greatest(qualifying_points - qualifying_clawed_back, 0)), sum(eligible_amount), count(*)
          FROM purchases GROUP BY 1, 2
    """)


def downgrade() -> None:
    op.drop_table('member_purchase_days')
