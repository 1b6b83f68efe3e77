"""a purchase answers in one round trip (ledger_tier_metrics, ledger_purchase).

This revision created SQL functions only. Their current definitions live in migrations/functions/ (the one home
of the service's SQL), applied by the repeatable step of app/db/functions.py, so it changes nothing any more;
it stays so that databases stamped at it upgrade along the same chain.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
