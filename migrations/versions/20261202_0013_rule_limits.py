"""rule limits: the member's awards of limited earn rules (counted by the purchase context), the time a
return happened, and the one rewrite erasure may make to a return's stored clawback (issue 12).

The function that counts (ledger.rule_counts) and the trigger that allows erasure's one rewrite of a return
(ledger.forbid_change_but_redaction) are in migrations/functions/80_purchases.sql.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 09:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('member_rule_awards',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('program_id', sa.UUID(), nullable=False),
    sa.Column('member_id', sa.BigInteger(), nullable=False),
    sa.Column('purchase_id', sa.BigInteger(), nullable=False),
    sa.Column('rule_id', sa.Text(), nullable=False, comment="the earn rule's id: counts are by id, across rule versions"),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False, comment="the purchase's occurred_at: the periods the limits count in"),
    sa.Column('personal', sa.Boolean(), server_default=sa.text('false'), nullable=False, comment='the rule depends on the birthday: deleted on erasure'),
    sa.Column('released', sa.Boolean(), server_default=sa.text('false'), nullable=False, comment='a return took back everything the rule gave on that purchase: no longer counted'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_rule_awards_member_id_members')),
    sa.ForeignKeyConstraint(['purchase_id'], ['purchases.id'], name=op.f('fk_member_rule_awards_purchase_id_purchases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_rule_awards')),
    sa.UniqueConstraint('purchase_id', 'rule_id', name=op.f('uq_member_rule_awards_purchase_id_rule_id'))
    )
    op.create_index('ix_member_rule_awards_counted', 'member_rule_awards', ['member_id', 'rule_id', 'occurred_at'], unique=False, postgresql_where=sa.text('NOT released'))
    # A return's occurred_at; the returns posted so far happened when they were recorded.
    op.add_column('purchase_returns', sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True, comment='when the return happened (client time; default when recorded)'))
    # (the table is append-only: its triggers, if the functions exist yet, are set aside for this one data change)
    op.execute("ALTER TABLE purchase_returns DISABLE TRIGGER USER")
    op.execute("UPDATE purchase_returns SET occurred_at = created_at")
    op.execute("ALTER TABLE purchase_returns ENABLE TRIGGER USER")
    op.alter_column('purchase_returns', 'occurred_at', nullable=False, server_default=sa.text('now()'))


def downgrade() -> None:
    op.drop_column('purchase_returns', 'occurred_at')
    op.drop_index('ix_member_rule_awards_counted', table_name='member_rule_awards', postgresql_where=sa.text('NOT released'))
    op.drop_table('member_rule_awards')
