"""rewards: the catalogue, the vouchers an exchange issues, partner codes; entry kinds exchange and exchange_refund.

* `rewards`: what members can exchange points for (a voucher off an order, a free product, a gift, a partner's code),
  with stock, per-member limits, an availability window, a minimum tier, channels and the vouchers' validity.
* `vouchers`: one per exchange, with the reward's terms as they were then (changing a reward never changes a
  voucher), a code unique per program, and its state (issued -> redeemed | expired | cancelled).
* `partner_codes`: codes uploaded to a partner-code reward, each handed to at most one voucher.
* entries.kind: `exchange` (available -> redeemed) and `exchange_refund` (a cancelled or refunded voucher's points
  back, to their lots with their original expiry).

The functions are in migrations/functions/95_rewards.sql.

Revision ID: 1401
Revises: 0015
Create Date: 2026-12-02 14:01:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '1401'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = ("earn", "event", "activate", "redeem", "hold", "capture", "void", "release", "expire", "adjust",
                "reverse", "clawback", "refund")
KINDS_AFTER = (*KINDS_BEFORE, "exchange", "exchange_refund")


def _kinds(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_entries_kind"), "entries", type_="check")
    op.create_check_constraint(op.f("ck_entries_kind"), "entries", _kinds(KINDS_AFTER))
    op.create_table(
        "rewards",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False,
                  comment="opaque to clients (rwd_...)"),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False, comment="voucher, product, gift or partner_code; never changes"),
        sa.Column("cost_points", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=True,
                  comment="the program's currency, when amount_off or min_spend is set"),
        sa.Column("amount_off", sa.Numeric(), nullable=True,
                  comment="kind voucher: money off, rounded to the currency's minor unit"),
        sa.Column("percent_off", sa.Numeric(), nullable=True, comment="kind voucher: percentage off (0 < p <= 100)"),
        sa.Column("min_spend", sa.Numeric(), nullable=True,
                  comment="kind voucher: smallest order the voucher applies to"),
        sa.Column("sku", sa.Text(), nullable=True, comment="kind product: the free item"),
        sa.Column("stock", sa.BigInteger(), nullable=True,
                  comment="units left to exchange; NULL: unlimited. Partner codes: the codes not handed out yet"),
        sa.Column("low_stock_threshold", sa.BigInteger(), nullable=True,
                  comment="reward.stock_low is emitted when an exchange leaves exactly this many units"),
        sa.Column("limit_count", sa.Integer(), nullable=True,
                  comment="per member: at most this many vouchers per limit_period"),
        sa.Column("limit_period", sa.Text(), nullable=True,
                  comment="day or month (in the program's time zone), or ever"),
        sa.Column("available_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_until", sa.DateTime(timezone=True), nullable=True, comment="exclusive"),
        sa.Column("min_tier", sa.Text(), nullable=True,
                  comment="members below this tier of the ladder in force are not eligible"),
        sa.Column("channels", postgresql.ARRAY(sa.Text()), nullable=False, comment="where its vouchers can be used"),
        sa.Column("voucher_valid_days", sa.Integer(), nullable=True,
                  comment="an issued voucher expires this many days later; NULL: never"),
        sa.Column("cancel_window_hours", sa.Integer(), nullable=True,
                  comment="a redeem key may cancel a voucher this long after its issue (admin keys: any time)"),
        sa.Column("refund_on_expiry", sa.Boolean(), server_default=sa.false(), nullable=False,
                  comment="an expired voucher gives its points back"),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True,
                  comment="archived rewards cannot be exchanged; never deleted"),
        sa.CheckConstraint("kind IN ('voucher', 'product', 'gift', 'partner_code')", name=op.f("ck_rewards_kind")),
        sa.CheckConstraint("cost_points > 0", name=op.f("ck_rewards_cost_positive")),
        sa.CheckConstraint("stock >= 0", name=op.f("ck_rewards_stock_not_negative")),
        sa.CheckConstraint("kind <> 'partner_code' OR stock IS NOT NULL", name=op.f("ck_rewards_partner_code_stock")),
        sa.CheckConstraint("(limit_count IS NULL) = (limit_period IS NULL) AND limit_count > 0 AND "
                           "limit_period IN ('day', 'month', 'ever')", name=op.f("ck_rewards_limit")),
        sa.CheckConstraint("available_until > available_from", name=op.f("ck_rewards_window")),
        sa.CheckConstraint("kind = 'voucher' OR (amount_off IS NULL AND percent_off IS NULL AND min_spend IS NULL)",
                           name=op.f("ck_rewards_voucher_terms")),
        sa.CheckConstraint("kind <> 'voucher' OR (amount_off IS NULL) <> (percent_off IS NULL)",
                           name=op.f("ck_rewards_one_discount")),
        sa.CheckConstraint("(kind = 'product') = (sku IS NOT NULL)", name=op.f("ck_rewards_product_sku")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_rewards_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
    )
    op.create_index(op.f("ix_rewards_program_id_id"), "rewards", ["program_id", "id"])
    op.create_table(
        "vouchers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False,
                  comment="opaque to clients (vch_...)"),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("reward_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False,
                  comment="12 characters of a 32-letter alphabet (60 random bits), shown grouped: K7QM-3XDP-W9TF"),
        sa.Column("status", sa.Text(), server_default="issued", nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False, comment="points the exchange cost"),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("amount_off", sa.Numeric(), nullable=True),
        sa.Column("percent_off", sa.Numeric(), nullable=True),
        sa.Column("min_spend", sa.Numeric(), nullable=True),
        sa.Column("sku", sa.Text(), nullable=True),
        sa.Column("channels", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("refund_on_expiry", sa.Boolean(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True, comment="exclusive; NULL: never"),
        sa.Column("cancellable_until", sa.DateTime(timezone=True), nullable=True,
                  comment="until then a redeem key may cancel it"),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True,
                  comment="redeemed, cancelled or expired (by the job) then"),
        sa.Column("reference", sa.Text(), nullable=True, comment="redeemed: the order it was used on"),
        sa.Column("entry_id", sa.BigInteger(), nullable=False, comment="the exchange entry"),
        sa.Column("refund_entry_id", sa.BigInteger(), nullable=True,
                  comment="cancelled (or expired with refund_on_expiry): the entry that gave the points back"),
        sa.Column("returned_points", sa.BigInteger(), server_default="0", nullable=False,
                  comment="points the refund gave back spendable, into the lots they came from"),
        sa.Column("returned_expired_points", sa.BigInteger(), server_default="0", nullable=False,
                  comment="points the refund gave back expired (their lots expired meanwhile)"),
        sa.Column("delivery", postgresql.JSONB(astext_type=sa.Text()), nullable=True,
                  comment="personal data (a gift's shipping details): erased with the member's"),
        sa.CheckConstraint("status IN ('issued', 'redeemed', 'expired', 'cancelled')",
                           name=op.f("ck_vouchers_status")),
        sa.CheckConstraint("points > 0", name=op.f("ck_vouchers_points_positive")),
        sa.CheckConstraint("returned_points >= 0 AND returned_expired_points >= 0 AND "
                           "returned_points + returned_expired_points IN (0, points)", name=op.f("ck_vouchers_returned")),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], name=op.f("fk_vouchers_entry_id_entries")),
        sa.ForeignKeyConstraint(["refund_entry_id"], ["entries.id"], name=op.f("fk_vouchers_refund_entry_id_entries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vouchers")),
        sa.UniqueConstraint("program_id", "code", name=op.f("uq_vouchers_program_id_code")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_vouchers_entry_id")),
    )
    op.create_index(op.f("ix_vouchers_member_id_reward_id_issued_at"), "vouchers",
                    ["member_id", "reward_id", "issued_at"])
    op.create_index(op.f("ix_vouchers_member_id_id"), "vouchers", ["member_id", "id"])
    op.create_index("ix_vouchers_issued_expiry", "vouchers", ["expires_at"],
                    postgresql_where=sa.text("status = 'issued' AND expires_at IS NOT NULL"))
    op.create_index("ix_vouchers_issued_program", "vouchers", ["program_id", "reward_id"],
                    postgresql_where=sa.text("status = 'issued'"))
    op.create_table(
        "partner_codes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("reward_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False,
                  comment="as uploaded; shown only to the member it is handed to"),
        sa.Column("voucher_id", sa.BigInteger(), nullable=True, comment="NULL: not handed out yet"),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"], name=op.f("fk_partner_codes_reward_id_rewards")),
        sa.ForeignKeyConstraint(["voucher_id"], ["vouchers.id"], name=op.f("fk_partner_codes_voucher_id_vouchers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_codes")),
        sa.UniqueConstraint("reward_id", "code", name=op.f("uq_partner_codes_reward_id_code")),
        sa.UniqueConstraint("voucher_id", name=op.f("uq_partner_codes_voucher_id")),
    )
    op.create_index("ix_partner_codes_unused", "partner_codes", ["reward_id", "id"],
                    postgresql_where=sa.text("voucher_id IS NULL"))


def downgrade() -> None:
    # Functions of the schema `ledger` take rows of these tables as arguments: they go with them, and the repeatable
    # step applies the files again on the next upgrade.
    op.execute("DROP TABLE partner_codes, vouchers, rewards CASCADE")
    op.execute("UPDATE schema_functions SET checksum = 'downgraded below 1401'")
    op.drop_constraint(op.f("ck_entries_kind"), "entries", type_="check")
    op.create_check_constraint(op.f("ck_entries_kind"), "entries", _kinds(KINDS_BEFORE))
