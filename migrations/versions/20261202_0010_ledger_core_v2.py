"""ledger core v2: the SQL in one home, one posting primitive, answers stored as text, opaque public ids.

* Every SQL function and trigger of the service now lives in the schema `ledger`, defined only by the files of
  migrations/functions/ and applied by the repeatable step (app/db/functions.py) after the numbered migrations.
  The functions earlier migrations created in `public` (ledger_*) are dropped here, their triggers with them.
* member_balances.facts_version: the version of what an earn evaluation depends on (see 80_purchases.sql).
* idempotency_keys.response_body becomes text: the answer as sent, so a replay is byte for byte the first
  answer (jsonb reordered its keys) and storing it costs no parse.
* The documents stored as evaluated (purchase, award, return request and result) become json: kept as written.
* member_events.evaluation: the evaluation as answered, replayed with the event.
* public_id_keys: the secret of the opaque public ids; schema_functions: the checksum the repeatable step applied.

Downgrade reverses the tables; the functions of an older revision are not restored (they lived in files that
no longer exist): run the code of that revision's own commit to get them back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 09:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_COLUMNS = (("purchases", "purchase"), ("purchases", "award"), ("purchase_returns", "request"),
                ("purchase_returns", "result"))


def upgrade() -> None:
    op.execute("""
        DO $$
        DECLARE f regprocedure;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE n.nspname = 'public' AND p.proname LIKE 'ledger\\_%'
            LOOP
                EXECUTE 'DROP FUNCTION ' || f || ' CASCADE';
            END LOOP;
        END $$
    """)
    op.add_column("member_balances", sa.Column(
        "facts_version", sa.BigInteger(), server_default="0", nullable=False,
        comment="bumped by every purchase, return, event and tier change: an evaluation read without the member's "
        "lock is posted only if it is unchanged"))
    op.alter_column("idempotency_keys", "response_body", type_=sa.Text(), postgresql_using="response_body::text",
                    existing_nullable=True, comment="the answer as sent (JSON text), replayed byte for byte")
    for table, column in JSON_COLUMNS:
        op.alter_column(table, column, type_=postgresql.JSON(), postgresql_using=f"{column}::json",
                        existing_nullable=False)
    op.alter_column("purchases", "award", comment="the evaluation with its breakdown, as answered",
                    existing_type=postgresql.JSON(), existing_nullable=False)
    op.alter_column("purchase_returns", "result", comment="the clawback computation, as answered",
                    existing_type=postgresql.JSON(), existing_nullable=False)
    op.add_column("member_events", sa.Column("evaluation", postgresql.JSON(), nullable=True,
                                             comment="the evaluation as answered (limits reached...)"))
    op.create_table(
        "public_id_keys",
        sa.Column("id", sa.SmallInteger(), server_default="1", nullable=False),
        sa.Column("secret", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_public_id_keys_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_public_id_keys")),
    )
    # 64 random bits from gen_random_uuid() (a CSPRNG in Postgres 13+)
    op.execute("INSERT INTO public_id_keys (secret) "
               "SELECT ('x' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 16))::bit(64)::bigint")
    op.create_table(
        "schema_functions",
        sa.Column("id", sa.SmallInteger(), server_default="1", nullable=False),
        sa.Column("checksum", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_schema_functions_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_functions")),
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS ledger CASCADE")
    op.drop_table("schema_functions")
    op.drop_table("public_id_keys")
    op.drop_column("member_events", "evaluation")
    for table, column in JSON_COLUMNS:
        op.alter_column(table, column, type_=postgresql.JSONB(), postgresql_using=f"{column}::jsonb",
                        existing_nullable=False)
    op.alter_column("idempotency_keys", "response_body", type_=postgresql.JSONB(),
                    postgresql_using="response_body::jsonb", existing_nullable=True)
    op.drop_column("member_balances", "facts_version")
