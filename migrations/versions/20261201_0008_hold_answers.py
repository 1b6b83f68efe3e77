"""capture and void answer in one round trip (ledger_resolve_hold and the hold/redemption views).

This revision created SQL functions only. Their current definitions live in migrations/functions/ (the one home
of the service's SQL), applied by the repeatable step of app/db/functions.py, so it changes nothing any more;
it stays so that databases stamped at it upgrade along the same chain.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
