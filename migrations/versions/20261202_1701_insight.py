"""insight: the members' RFM scores, segments and lifecycle stages as of the last refresh, and the refreshes.

* `member_insights`: one row per member of a refreshed programme, as of its last refresh (not part of the
  ledger: derived from `member_purchase_days` and `members`).
* `insight_refreshes`: one row per refresh of a programme: when, the window and thresholds used, and the sizes,
  spend and movement per segment and per stage (what `GET /v1/segments` answers, and compares with the one before).
* `audiences`: named, saved filters over segment, stage, tier, balance and the member's own attributes.

The functions are in migrations/functions/97_insight.sql.

Revision ID: 1701
Revises: 1401
Create Date: 2026-12-02 17:01:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1701"
down_revision: str | None = "1401"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "insight_refreshes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False,
                  comment="the instant the refresh computed for (its UTC day is the day D of the rules)"),
        sa.Column("window_days", sa.Integer(), nullable=False, comment="frequency and monetary: the last N days"),
        sa.Column("median_interval_days", sa.Numeric(), nullable=True,
                  comment="the programme's median inter-purchase interval (NULL: no member with two purchase days)"),
        sa.Column("thresholds", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  comment="new_days, at_risk_days, lapsed_days in force"),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.Column("summary", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  comment="per segment and stage: members, spend, moved_in, moved_out"),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_insight_refreshes_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insight_refreshes")),
        comment="one row per insight refresh of a programme",
    )
    op.create_index(op.f("ix_insight_refreshes_program_id_id"), "insight_refreshes", ["program_id", "id"])
    op.create_table(
        "member_insights",
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("first_purchase_on", sa.Date(), nullable=True),
        sa.Column("last_purchase_on", sa.Date(), nullable=True),
        sa.Column("frequency", sa.Integer(), nullable=False, comment="purchases in the window"),
        sa.Column("monetary", sa.Numeric(), nullable=False, comment="eligible spend in the window"),
        sa.Column("r_score", sa.SmallInteger(), nullable=True),
        sa.Column("f_score", sa.SmallInteger(), nullable=True),
        sa.Column("m_score", sa.SmallInteger(), nullable=True),
        sa.Column("segment", sa.Text(), nullable=True, comment="NULL: never purchased"),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_insights")),
        comment="derived, as of the programme's last refresh (rows it left unchanged are not rewritten); not part of "
                "the ledger",
    )
    op.create_index(op.f("ix_member_insights_program_id_segment_member_id"), "member_insights",
                    ["program_id", "segment", "member_id"])
    op.create_table(
        "audiences",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False,
                  comment="opaque to clients (aud_...)"),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("filter", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  comment="app/insight/schemas.py AudienceFilter"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_audiences_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audiences")),
        sa.UniqueConstraint("program_id", "name", name=op.f("uq_audiences_program_id_name")),
        comment="saved member filters (issue 17)",
    )


def downgrade() -> None:
    op.drop_table("audiences")
    op.drop_table("member_insights")
    op.drop_table("insight_refreshes")
