"""The schema, described once. Alembic migrations are written against this metadata and a test proves
that upgrading an empty database yields exactly it (no drift).

Design notes
------------
* ``entries``/``postings``/``lot_allocations`` are append-only: triggers in the migration refuse UPDATE,
  DELETE and TRUNCATE. Every entry's postings sum to zero (deferred constraint trigger).
* A posting names an account by ``account`` code. Member accounts (``available``, ``pending``,
  ``held``) carry the member. System accounts (``issued``, ``redeemed``, ``expired``,
  ``adjustments``) carry the member the movement was *for* as an attribution, so per-member lifetime
  figures and program totals are both plain aggregations, and no system row is ever updated.
* ``member_balances`` is the only materialised state of the ledger besides ``lots.remaining``; both
  are recomputed from postings/allocations by ``verify``.
* The high-volume rows of the ledger (entries, postings, lots, allocations, holds, redemptions, purchases,
  member events, daily purchase totals) carry no foreign key to ``members`` or ``programs``, and postings and
  allocations none to their entry or lot (migrations 0009, 0011): a foreign key check is a query and a row lock
  (FOR KEY SHARE) on the referenced row per inserted row: five per posted entry, and on the member's own row at
  every write. They are written only by the functions of migrations/functions/, which take both ends from one
  another, and ``verify`` proves every reference (``orphan`` checks).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

MEMBER_ACCOUNTS = ("available", "pending", "held")
SYSTEM_ACCOUNTS = ("issued", "redeemed", "expired", "adjustments")
ACCOUNTS = MEMBER_ACCOUNTS + SYSTEM_ACCOUNTS
ENTRY_KINDS = (
    "earn", "event", "activate", "redeem", "hold", "capture", "void", "release", "expire", "adjust", "reverse",
    "clawback", "refund",
    "exchange", "exchange_refund",  # issue-14: points for a reward (available -> redeemed), and given back
    "transfer", "merge",  # issue-15: points between two members; a merged-away member's balances to its survivor
    "import",  # issue-15: a migrated member's opening balance (issued -> available/pending), one per member
)
SCOPES = ("earn", "redeem", "read", "admin")
MEMBER_STATUSES = ("active", "suspended", "closed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _now() -> sa.TextClause:
    return sa.text("now()")


programs = sa.Table(
    "programs",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False, comment="ISO 4217 code of the program's money"),
    sa.Column("timezone", sa.Text, nullable=False, comment="IANA zone used for calendar rules"),
    sa.Column("settings", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("prefix", sa.Text, nullable=False, comment="public part of the key, used to find the row"),
    sa.Column("key_hash", sa.LargeBinary, nullable=False, comment="SHA-256 of the whole key; never the key"),
    sa.Column("scopes", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("prefix"),
    sa.Index(None, "program_id"),
)

members = sa.Table(
    "members",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("external_id", sa.Text, nullable=False, comment="the program's own customer id (member_id)"),
    sa.Column("name", sa.Text),
    sa.Column("email", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("birthday", sa.Date),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),
    sa.Column("attributes", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("merged_into", sa.BigInteger,
              comment="merged away: the surviving member, which its reference now names"),
    sa.UniqueConstraint("program_id", "external_id"),
    sa.CheckConstraint(_in("status", MEMBER_STATUSES), name="status"),
    sa.Index("ix_members_merged_into", "merged_into", postgresql_where=sa.text("merged_into IS NOT NULL")),
)

member_balances = sa.Table(
    "member_balances",
    metadata,
    sa.Column("member_id", sa.BigInteger, sa.ForeignKey("members.id"), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("available", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pending", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("held", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column(
        "lifetime_earned", sa.BigInteger, nullable=False, server_default="0",
        comment="net points granted (issued + adjustments), i.e. minus their postings",
    ),
    sa.Column(
        "lifetime_redeemed", sa.BigInteger, nullable=False, server_default="0",
        comment="net points spent (sum of the member's postings to redeemed)",
    ),
    sa.Column("activity_expires_at", sa.DateTime(timezone=True),
              comment="activity policy: when the member's activity-bound lots expire"),
    sa.Column("facts_version", sa.BigInteger, nullable=False, server_default="0",
              comment="bumped by every purchase, return, event and tier change: an evaluation read without the "
              "member's lock is posted only if it is unchanged"),
    sa.Column("merged_into", sa.BigInteger,
              comment="set by a merge: a write that locked this row meanwhile raced the merge, and runs again"),
    sa.Index(None, "program_id"),
    sa.Index("ix_member_balances_activity_expiry", "activity_expires_at",
             postgresql_where=sa.text("activity_expires_at IS NOT NULL")),
)

entries = sa.Table(
    "entries",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, comment="time-ordered id"),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, comment="member the entry is about"),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, comment="business time (client)"),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("external_ref", sa.Text, comment="client's own reference, unique per program and kind"),
    sa.Column("description", sa.Text),
    sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("reverses_entry_id", sa.BigInteger, sa.ForeignKey("entries.id")),
    sa.CheckConstraint(_in("kind", ENTRY_KINDS), name="kind"),
    sa.UniqueConstraint("reverses_entry_id"),
    sa.Index(None, "member_id", "id"),
    # As-of reads (issue 15): a program's entries in recorded time (liability as of an instant, the ledger export).
    sa.Index(None, "program_id", "recorded_at"),
    sa.Index(
        "uq_entries_program_id_kind_external_ref", "program_id", "kind", "external_ref", unique=True,
        postgresql_where=sa.text("external_ref IS NOT NULL"),
    ),
)

postings = sa.Table(
    "postings",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("entry_id", sa.BigInteger, nullable=False),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False, comment="signed; credit to the account is positive"),
    sa.CheckConstraint(_in("account", ACCOUNTS), name="account"),
    sa.CheckConstraint("points <> 0", name="points_nonzero"),
    sa.Index(None, "entry_id"),
    sa.Index(None, "program_id", "account"),
    # A member's postings (issue 15: balances as of an instant, index-only): by postings, not entries, because one
    # entry may move the points of two members.
    sa.Index(None, "member_id", "entry_id", postgresql_include=["account", "points"]),
)

lots = sa.Table(
    "lots",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, nullable=False),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id"), nullable=False, comment="the credit"),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column(
        "remaining", sa.BigInteger, nullable=False,
        comment="materialised: points minus the sum of this lot's allocations",
    ),
    sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column(
        "expires_on_inactivity", sa.Boolean, nullable=False, server_default=sa.false(),
        comment="earned under the activity policy: expires with the member's activity_expires_at",
    ),
    sa.Column(
        "pending", sa.Boolean, nullable=False, server_default=sa.false(),
        comment="points still in the member's pending account (return window); false once activated",
    ),
    sa.CheckConstraint("points > 0", name="points_positive"),
    sa.CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_range"),
    # Only lots with points left are in this index, so consuming lots, reading the next expiry and the
    # expiring-soon list cost the same however long a member's history is.
    sa.Index(
        "ix_lots_open_by_expiry", "member_id", "expires_at", "id",
        postgresql_where=sa.text("remaining > 0"),
    ),
    # Pending lots by the time they become available (the activation job, read-time split).
    sa.Index("ix_lots_pending_due", "available_at", postgresql_where=sa.text("pending")),
    # A member's pending lots by the time they become available (the balance read, settling before a debit).
    sa.Index("ix_lots_pending_member", "member_id", "available_at", postgresql_where=sa.text("pending")),
    # Lots under the activity policy (they expire with the member's activity date, not their own).
    sa.Index("ix_lots_open_inactivity", "member_id",
             postgresql_where=sa.text("remaining > 0 AND expires_on_inactivity")),
)

lot_allocations = sa.Table(
    "lot_allocations",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("entry_id", sa.BigInteger, nullable=False),
    sa.Column("lot_id", sa.BigInteger, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False, comment="positive consumes the lot, negative restores"),
    sa.CheckConstraint("points <> 0", name="points_nonzero"),
    sa.Index(None, "lot_id"),
    sa.Index(None, "entry_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("program_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("request_hash", sa.LargeBinary, nullable=False, comment="SHA-256 of method, path, canonical body"),
    # Claimed (NULL) and completed in the same transaction as the effect, so a committed row always
    # has both; NULL is only ever seen by the transaction that is processing the request.
    sa.Column("status_code", sa.Integer),
    sa.Column("response_body", sa.Text, comment="the answer as sent (JSON text), replayed byte for byte"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Index(None, "created_at"),
)

HOLD_STATUSES = ("open", "captured", "voided", "expired")

holds = sa.Table(
    "holds",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False, comment="points reserved (moved available -> held)"),
    sa.Column("captured_points", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("status", sa.Text, nullable=False, server_default="open"),
    sa.Column("reference", sa.Text, comment="the client's order or checkout id"),
    sa.Column("description", sa.Text),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("hold_entry_id", sa.BigInteger, sa.ForeignKey("entries.id"), nullable=False),
    sa.Column("resolve_entry_id", sa.BigInteger, sa.ForeignKey("entries.id"),
              comment="the capture, void or release entry"),
    sa.CheckConstraint("points > 0", name="points_positive"),
    sa.CheckConstraint("captured_points >= 0 AND captured_points <= points", name="captured_range"),
    sa.CheckConstraint(_in("status", HOLD_STATUSES), name="status"),
    # Open holds per member (read-time expiry) and open holds by expiry (the release job).
    sa.Index("ix_holds_open_member", "member_id", postgresql_where=sa.text("status = 'open'")),
    sa.Index("ix_holds_open_expiry", "expires_at", postgresql_where=sa.text("status = 'open'")),
)

redemptions = sa.Table(
    "redemptions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("refunded_points", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reference", sa.Text),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id"), nullable=False,
              comment="the redeem entry, or the capture entry of a hold"),
    sa.Column("hold_id", sa.BigInteger, sa.ForeignKey("holds.id")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.CheckConstraint("points > 0", name="points_positive"),
    sa.CheckConstraint("refunded_points >= 0 AND refunded_points <= points", name="refunded_range"),
    sa.UniqueConstraint("hold_id"),
    sa.Index(None, "member_id"),
)

redemption_refunds = sa.Table(
    "redemption_refunds",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("redemption_id", sa.BigInteger, sa.ForeignKey("redemptions.id"), nullable=False),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id"), nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("available_points", sa.BigInteger, nullable=False, comment="came back spendable"),
    sa.Column("expired_points", sa.BigInteger, nullable=False, comment="came back from lots expired meanwhile"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.CheckConstraint("points > 0 AND points = available_points + expired_points", name="split"),
    sa.Index(None, "redemption_id"),
)

earn_rule_versions = sa.Table(
    "earn_rule_versions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False,
              comment="purchases occurring at or after this use this version (until a later one)"),
    sa.Column("rules", pg.JSONB, nullable=False, comment="the validated RuleSet, as PUT"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.UniqueConstraint("program_id", "version"),
    sa.Index(None, "program_id", "effective_from"),
)

purchases = sa.Table(
    "purchases",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False, comment="the client's order id, unique per program"),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("content_hash", sa.LargeBinary, nullable=False, comment="SHA-256 of the purchase as posted"),
    sa.Column("purchase", pg.JSON, nullable=False, comment="the purchase as posted (lines, totals...)"),
    sa.Column("rule_version_id", sa.BigInteger, sa.ForeignKey("earn_rule_versions.id")),
    sa.Column("award", pg.JSON, nullable=False, comment="the evaluation with its breakdown, as answered"),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("qualifying_points", sa.BigInteger, nullable=False, server_default="0",
              comment="points of the lines (order bonuses excluded), for the tier metric"),
    sa.Column("eligible_amount", sa.Numeric(24, 6), nullable=False, server_default="0",
              comment="spend that earned points, for the tier metric"),
    sa.Column("clawed_back_points", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("qualifying_clawed_back", sa.BigInteger, nullable=False, server_default="0",
              comment="line points taken back by returns (order bonuses excluded), for the tier metric"),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id"), comment="NULL when nothing was awarded"),
    sa.Column("lot_id", sa.BigInteger, sa.ForeignKey("lots.id")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.CheckConstraint("points >= 0 AND clawed_back_points >= 0 AND clawed_back_points <= points",
                       name="points_range"),
    sa.UniqueConstraint("program_id", "order_id"),
    sa.Index(None, "member_id", "occurred_at"),
)

purchase_returns = sa.Table(
    "purchase_returns",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("purchase_id", sa.BigInteger, sa.ForeignKey("purchases.id"), nullable=False),
    sa.Column("return_id", sa.Text, nullable=False, comment="the client's return id, unique per purchase"),
    sa.Column("content_hash", sa.LargeBinary, nullable=False),
    sa.Column("request", pg.JSON, nullable=False, comment="returned lines or amount, as posted"),
    sa.Column("result", pg.JSON, nullable=False, comment="the clawback computation, as answered"),
    sa.Column("points", sa.BigInteger, nullable=False, comment="points clawed back"),
    sa.Column("shortfall", sa.BigInteger, nullable=False, server_default="0",
              comment="points that could not be taken back (negative_balance_on_return = clamp)"),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=_now(),
              comment="when the return happened (client time; default when recorded)"),
    sa.UniqueConstraint("purchase_id", "return_id"),
)

# issue 12: each application of an earn rule that has limits ("birthday +100, once a year"), so the purchase
# context counts them per period (ledger_rule_counts) instead of scanning stored awards. Written with the
# purchase, under the member's lock; `released` by the return that takes back all the rule gave; rows of rules
# that depend on the birthday (`personal`) are deleted on erasure.
member_rule_awards = sa.Table(
    "member_rule_awards",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, sa.ForeignKey("members.id"), nullable=False),
    sa.Column("purchase_id", sa.BigInteger, sa.ForeignKey("purchases.id"), nullable=False),
    sa.Column("rule_id", sa.Text, nullable=False, comment="the earn rule's id: counts are by id, across rule versions"),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False,
              comment="the purchase's occurred_at: the periods the limits count in"),
    sa.Column("personal", sa.Boolean, nullable=False, server_default=sa.false(),
              comment="the rule depends on the birthday: deleted on erasure"),
    sa.Column("released", sa.Boolean, nullable=False, server_default=sa.false(),
              comment="a return took back everything the rule gave on that purchase: no longer counted"),
    sa.UniqueConstraint("purchase_id", "rule_id"),
    sa.Index("ix_member_rule_awards_counted", "member_id", "rule_id", "occurred_at",
             postgresql_where=sa.text("NOT released")),
)

member_events = sa.Table(
    "member_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False, comment="the client's event id, unique per program"),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id")),
    sa.Column("evaluation", pg.JSON, comment="the evaluation as answered (limits reached...)"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.UniqueConstraint("program_id", "event_id"),
    sa.Index(None, "member_id", "name", "occurred_at"),
)


expiration_policy_versions = sa.Table(
    "expiration_policy_versions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False,
              comment="lots created at or after this get their expiry from this version"),
    sa.Column("policy", pg.JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.UniqueConstraint("program_id", "version"),
    sa.Index(None, "program_id", "effective_from"),
)

tier_config_versions = sa.Table(
    "tier_config_versions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("config", pg.JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.UniqueConstraint("program_id", "version"),
    sa.Index(None, "program_id", "effective_from"),
)

# Per member and UTC day of occurred_at, the sums the tier metric needs: materialised from `purchases` by
# the trigger of migration 0005 (under the member's lock), recomputed by `verify`. The metric over a window
# reads at most the window's days instead of every purchase in it.
member_purchase_days = sa.Table(
    "member_purchase_days",
    metadata,
    sa.Column("member_id", sa.BigInteger, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True, comment="UTC date of the purchases' occurred_at"),
    sa.Column("points", sa.BigInteger, nullable=False, comment="points awarded minus clawed back"),
    sa.Column("qualifying_points", sa.BigInteger, nullable=False,
              comment="per purchase: line points minus those returned, at least 0; summed"),
    sa.Column("spend", sa.Numeric, nullable=False, comment="eligible amounts"),
    sa.Column("purchases", sa.Integer, nullable=False),
    comment="materialised from purchases by a trigger; checked by verify",
)

member_tiers = sa.Table(
    "member_tiers",
    metadata,
    sa.Column("member_id", sa.BigInteger, sa.ForeignKey("members.id"), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("tier", sa.Text, nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), comment="NULL: the base tier, never lapses"),
    sa.Column("manual_tier", sa.Text, comment="a manual assignment holds this tier at least until manual_until"),
    sa.Column("manual_until", sa.DateTime(timezone=True)),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    sa.Column("evaluated_at", sa.DateTime(timezone=True), comment="last run of the evaluation job for this member"),
    sa.Index(None, "program_id", "member_id"),
)

member_imports = sa.Table(
    "member_imports",
    metadata,
    sa.Column("member_id", sa.BigInteger, sa.ForeignKey("members.id"), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("row_hash", sa.LargeBinary, nullable=False,
              comment="sha256 of the row as validated: the same row again is a no-op, another one a conflict"),
    sa.Column("entry_id", sa.BigInteger,
              comment="the member's import entry (NULL: imported without an opening balance)"),
    sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
)

tier_history = sa.Table(
    "tier_history",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, sa.ForeignKey("members.id"), nullable=False),
    sa.Column("from_tier", sa.Text),
    sa.Column("to_tier", sa.Text, nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False, comment="purchase, evaluation or manual"),
    sa.Column("reference", sa.Text, comment="order id, job run, or the admin's reason"),
    sa.Column("config_version", sa.Integer),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False,
              comment="business time of the change (a purchase's occurred_at, the job's as-of)"),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Index(None, "member_id", "changed_at"),
)


# The secret of this database's public ids (ledger.public_id: a keyed permutation of row ids, so the ids the API
# shows reveal no counts). One row, generated by migration 0010; never shown.
public_id_keys = sa.Table(
    "public_id_keys",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, server_default="1"),
    sa.Column("secret", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

# The repeatable step (app/db/functions.py): the checksum of migrations/functions/*.sql last applied.
schema_functions = sa.Table(
    "schema_functions",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, server_default="1"),
    sa.Column("checksum", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.CheckConstraint("id = 1", name="single_row"),
)

# The outbox (issue 13): every state change a member, a CRM or the merchant cares about, written by the SQL function
# that makes the change (ledger.emit), in its transaction. The change feed and the webhooks read it in commit order:
# by (xid, id), exposing only transactions below the oldest one still running (migrations/functions/90_changes.sql).
changes = sa.Table(
    "changes",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, comment="opaque to clients (ledger.public_id)"),
    sa.Column("xid", sa.BigInteger, nullable=False, server_default=sa.text("pg_current_xact_id()::text::bigint"),
              comment="the writing transaction: the feed's order is (xid, id)"),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, comment="the member it is about (none: the program itself)"),
    sa.Column("type", sa.Text, nullable=False, comment="points.earned, hold.created, tier.changed, ..."),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("data", pg.JSON, nullable=False, comment="in the shapes the API answers with; no personal data"),
    sa.Index(None, "program_id", "xid", "id"),
    sa.Index(None, "member_id", "xid", "id"),
    sa.Index(None, "recorded_at"),
)

# Webhooks (issue 13). An endpoint receives the changes of its program (of `event_types`, all when empty) from its
# position in the feed on: the fan-out turns the changes after `position` into deliveries, and moves it.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("event_types", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"),
              comment="types delivered; empty: all"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("secret", sa.Text, nullable=False, comment="whsec_...: signs deliveries (Standard Webhooks)"),
    sa.Column("previous_secret", sa.Text, comment="the secret before the last rotation, signing too until..."),
    sa.Column("previous_secret_until", sa.DateTime(timezone=True)),
    sa.Column("position_xid", sa.BigInteger, nullable=False, comment="the fan-out's position in the feed: (xid, id)"),
    sa.Column("position_id", sa.BigInteger, nullable=False),
    sa.Column("failing_since", sa.DateTime(timezone=True), comment="first failed attempt since the last success"),
    sa.Column("disabled_reason", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Index(None, "program_id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("endpoint_id", pg.UUID(as_uuid=True), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("change_id", sa.BigInteger, nullable=False),
    sa.Column("change_xid", sa.BigInteger, nullable=False, comment="the change's position: deliveries of one member "
              "go out in this order"),
    sa.Column("member_id", sa.BigInteger, nullable=False, comment="0: a change of the program itself"),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("lease_until", sa.DateTime(timezone=True), comment="claimed by a process until then"),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint(_in("status", ("pending", "delivered", "failed")), name="status"),
    sa.UniqueConstraint("endpoint_id", "change_id"),
    sa.Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=sa.text("status = 'pending'")),
    sa.Index("ix_webhook_deliveries_member_order", "endpoint_id", "member_id", "change_xid", "change_id",
             postgresql_where=sa.text("status = 'pending'")),
    sa.Index(None, "endpoint_id", "id"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("delivery_id", sa.BigInteger, sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("status_code", sa.Integer, comment="the receiver's HTTP status; none: no answer"),
    sa.Column("latency_ms", sa.Integer),
    sa.Column("response_snippet", sa.Text, comment="the first 500 characters of the receiver's answer"),
    sa.Column("error", sa.Text),
    sa.Index(None, "delivery_id"),
)

# points.expiring: each lot is announced at most once per threshold (the smallest threshold it is within; the larger
# ones are marked too, so a lot earned 10 days before its expiry gets the 7-day notice only).
expiry_notices = sa.Table(
    "expiry_notices",
    metadata,
    sa.Column("lot_id", sa.BigInteger, primary_key=True),
    sa.Column("days", sa.Integer, primary_key=True, comment="the threshold: days before the expiry"),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, comment="the expiry announced"),
    sa.Column("announced_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Index(None, "expires_at"),
)

# --- Rewards and vouchers (issue 14) --------------------------------------------------------------------------
# The catalogue (`rewards`), the vouchers an exchange issues, and the partner codes uploaded to a reward. Written by
# the functions of migrations/functions/95_rewards.sql. Vouchers carry no foreign key to their member or reward (the
# rows of an exchange, like the ledger's, are written only by those functions, and a key check would lock the
# reward's row at every exchange of it); `verify` proves those references (voucher_reference_mismatch).

REWARD_KINDS = ("voucher", "product", "gift", "partner_code")
LIMIT_PERIODS = ("day", "month", "ever")
VOUCHER_STATUSES = ("issued", "redeemed", "expired", "cancelled")

rewards = sa.Table(
    "rewards",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, comment="opaque to clients (rwd_...)"),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("kind", sa.Text, nullable=False, comment="voucher, product, gift or partner_code; never changes"),
    sa.Column("cost_points", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, comment="the program's currency, when amount_off or min_spend is set"),
    sa.Column("amount_off", sa.Numeric, comment="kind voucher: money off, rounded to the currency's minor unit"),
    sa.Column("percent_off", sa.Numeric, comment="kind voucher: percentage off (0 < p <= 100)"),
    sa.Column("min_spend", sa.Numeric, comment="kind voucher: smallest order the voucher applies to"),
    sa.Column("sku", sa.Text, comment="kind product: the free item"),
    sa.Column("stock", sa.BigInteger,
              comment="units left to exchange; NULL: unlimited. Partner codes: the codes not handed out yet"),
    sa.Column("low_stock_threshold", sa.BigInteger,
              comment="reward.stock_low is emitted when an exchange leaves exactly this many units"),
    sa.Column("limit_count", sa.Integer, comment="per member: at most this many vouchers per limit_period"),
    sa.Column("limit_period", sa.Text, comment="day or month (in the program's time zone), or ever"),
    sa.Column("available_from", sa.DateTime(timezone=True)),
    sa.Column("available_until", sa.DateTime(timezone=True), comment="exclusive"),
    sa.Column("min_tier", sa.Text, comment="members below this tier of the ladder in force are not eligible"),
    sa.Column("channels", pg.ARRAY(sa.Text), nullable=False, comment="where its vouchers can be used"),
    sa.Column("voucher_valid_days", sa.Integer, comment="an issued voucher expires this many days later; NULL: never"),
    sa.Column("cancel_window_hours", sa.Integer,
              comment="a redeem key may cancel a voucher this long after its issue (admin keys: any time)"),
    sa.Column("refund_on_expiry", sa.Boolean, nullable=False, server_default=sa.false(),
              comment="an expired voucher gives its points back"),
    sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("archived_at", sa.DateTime(timezone=True), comment="archived rewards cannot be exchanged; never deleted"),
    sa.CheckConstraint(_in("kind", REWARD_KINDS), name="kind"),
    sa.CheckConstraint("cost_points > 0", name="cost_positive"),
    sa.CheckConstraint("stock >= 0", name="stock_not_negative"),
    sa.CheckConstraint("kind <> 'partner_code' OR stock IS NOT NULL", name="partner_code_stock"),
    sa.CheckConstraint("(limit_count IS NULL) = (limit_period IS NULL) AND limit_count > 0 AND "
                       + _in("limit_period", LIMIT_PERIODS), name="limit"),
    sa.CheckConstraint("available_until > available_from", name="window"),
    sa.CheckConstraint("kind = 'voucher' OR (amount_off IS NULL AND percent_off IS NULL AND min_spend IS NULL)",
                       name="voucher_terms"),
    sa.CheckConstraint("kind <> 'voucher' OR (amount_off IS NULL) <> (percent_off IS NULL)", name="one_discount"),
    sa.CheckConstraint("(kind = 'product') = (sku IS NOT NULL)", name="product_sku"),
    sa.Index(None, "program_id", "id"),
)

vouchers = sa.Table(
    "vouchers",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, comment="opaque to clients (vch_...)"),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, nullable=False),
    sa.Column("reward_id", sa.BigInteger, nullable=False),
    sa.Column("code", sa.Text, nullable=False,
              comment="12 characters of a 32-letter alphabet (60 random bits), shown grouped: K7QM-3XDP-W9TF"),
    sa.Column("status", sa.Text, nullable=False, server_default="issued"),
    # The reward's terms as they were at the exchange: changing or archiving the reward never changes a voucher.
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False, comment="points the exchange cost"),
    sa.Column("currency", sa.Text),
    sa.Column("amount_off", sa.Numeric),
    sa.Column("percent_off", sa.Numeric),
    sa.Column("min_spend", sa.Numeric),
    sa.Column("sku", sa.Text),
    sa.Column("channels", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("refund_on_expiry", sa.Boolean, nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), comment="exclusive; NULL: never"),
    sa.Column("cancellable_until", sa.DateTime(timezone=True), comment="until then a redeem key may cancel it"),
    sa.Column("resolved_at", sa.DateTime(timezone=True), comment="redeemed, cancelled or expired (by the job) then"),
    sa.Column("reference", sa.Text, comment="redeemed: the order it was used on"),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id"), nullable=False, comment="the exchange entry"),
    sa.Column("refund_entry_id", sa.BigInteger, sa.ForeignKey("entries.id"),
              comment="cancelled (or expired with refund_on_expiry): the entry that gave the points back"),
    sa.Column("returned_points", sa.BigInteger, nullable=False, server_default="0",
              comment="points the refund gave back spendable, into the lots they came from"),
    sa.Column("returned_expired_points", sa.BigInteger, nullable=False, server_default="0",
              comment="points the refund gave back expired (their lots expired meanwhile)"),
    sa.Column("delivery", pg.JSONB, comment="personal data (a gift's shipping details): erased with the member's"),
    sa.CheckConstraint(_in("status", VOUCHER_STATUSES), name="status"),
    sa.CheckConstraint("points > 0", name="points_positive"),
    sa.CheckConstraint("returned_points >= 0 AND returned_expired_points >= 0 AND "
                       "returned_points + returned_expired_points IN (0, points)", name="returned"),
    sa.UniqueConstraint("program_id", "code"),
    sa.UniqueConstraint("entry_id"),
    # the wallet (newest first) and the per-member limits
    sa.Index(None, "member_id", "reward_id", "issued_at"),
    sa.Index(None, "member_id", "id"),
    # the expiry job and the outstanding report
    sa.Index("ix_vouchers_issued_expiry", "expires_at",
             postgresql_where=sa.text("status = 'issued' AND expires_at IS NOT NULL")),
    sa.Index("ix_vouchers_issued_program", "program_id", "reward_id", postgresql_where=sa.text("status = 'issued'")),
    # issue 17: the dashboard's top rewards of a period (migration 1702)
    sa.Index(None, "program_id", "issued_at"),
)

partner_codes = sa.Table(
    "partner_codes",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("reward_id", sa.BigInteger, sa.ForeignKey("rewards.id"), nullable=False),
    sa.Column("code", sa.Text, nullable=False, comment="as uploaded; shown only to the member it is handed to"),
    sa.Column("voucher_id", sa.BigInteger, sa.ForeignKey("vouchers.id"), comment="NULL: not handed out yet"),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.UniqueConstraint("reward_id", "code"),
    sa.UniqueConstraint("voucher_id"),
    sa.Index("ix_partner_codes_unused", "reward_id", "id", postgresql_where=sa.text("voucher_id IS NULL")),
)


# Insight (issue 17): derived from member_purchase_days and members by the refresh (migrations/functions/97_insight.sql,
# app/insight/); not part of the ledger. member_insights holds the programme's last refresh: each refresh rewrites only
# the rows that changed (recency is derived from last_purchase_on and the refresh's as_of, so it never does by itself).
insight_refreshes = sa.Table(
    "insight_refreshes",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False,
              comment="the instant the refresh computed for (its UTC day is the day D of the rules)"),
    sa.Column("window_days", sa.Integer, nullable=False, comment="frequency and monetary: the last N days"),
    sa.Column("median_interval_days", sa.Numeric,
              comment="the programme's median inter-purchase interval (NULL: no member with two purchase days)"),
    sa.Column("thresholds", pg.JSONB, nullable=False, comment="new_days, at_risk_days, lapsed_days in force"),
    sa.Column("members", sa.BigInteger, nullable=False),
    sa.Column("summary", pg.JSONB, nullable=False,
              comment="per segment and stage: members, spend, moved_in, moved_out"),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Index(None, "program_id", "id"),
    comment="one row per insight refresh of a programme",
)

member_insights = sa.Table(
    "member_insights",
    metadata,
    sa.Column("member_id", sa.BigInteger, primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("first_purchase_on", sa.Date),
    sa.Column("last_purchase_on", sa.Date),
    sa.Column("frequency", sa.Integer, nullable=False, comment="purchases in the window"),
    sa.Column("monetary", sa.Numeric, nullable=False, comment="eligible spend in the window"),
    sa.Column("r_score", sa.SmallInteger),
    sa.Column("f_score", sa.SmallInteger),
    sa.Column("m_score", sa.SmallInteger),
    sa.Column("segment", sa.Text, comment="NULL: never purchased"),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Index(None, "program_id", "segment", "member_id"),
    comment="derived, as of the programme's last refresh (rows it left unchanged are not rewritten); not part of "
            "the ledger",
)

audiences = sa.Table(
    "audiences",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, comment="opaque to clients (aud_...)"),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("filter", pg.JSONB, nullable=False, comment="app/insight/schemas.py AudienceFilter"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.UniqueConstraint("program_id", "name"),
    comment="saved member filters (issue 17)",
)

# issue 17: the dashboard's sign-in sessions (app/dashboard/sessions.py).
dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("token_hash", sa.LargeBinary, nullable=False,
              comment="SHA-256 of the session token; the token is only in the browser's cookie"),
    sa.Column("program_id", pg.UUID(as_uuid=True), sa.ForeignKey("programs.id"), nullable=False),
    sa.Column("key_id", pg.UUID(as_uuid=True), sa.ForeignKey("api_keys.id"), nullable=False,
              comment="the admin key signed in with; revoked, the session ends"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("token_hash"),
    sa.Index(None, "key_id"),
    sa.Index(None, "expires_at"),
)

# --- Transfers and merges (issue 15) ------------------------------------------------------------------------------
# An entry of kind `transfer` or `merge` moves points of two members: entries.member_id is the one whose points leave
# (the sender, the merged-away member), and the other (the receiver, the survivor) is its counterparty here, so its
# activity lists the entry and verify accepts its postings on it. Written by migrations/functions/87_transfers.sql and
# 88_merges.sql only, under both members' locks (ledger.lock_members).
entry_counterparties = sa.Table(
    "entry_counterparties",
    metadata,
    sa.Column("member_id", sa.BigInteger, primary_key=True),
    sa.Column("entry_id", sa.BigInteger, primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Index(None, "entry_id"),
    comment="the other member an entry moves points of (a transfer's receiver, a merge's survivor)",
)

transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, comment="opaque to clients (trf_...)"),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("from_member_id", sa.BigInteger, nullable=False),
    sa.Column("to_member_id", sa.BigInteger, nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("reference", sa.Text, comment="the client's reference"),
    sa.Column("description", sa.Text),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.CheckConstraint("points > 0", name="points_positive"),
    sa.CheckConstraint("from_member_id <> to_member_id", name="two_members"),
    sa.UniqueConstraint("entry_id"),
    sa.Index(None, "from_member_id", "created_at"),  # the sender's daily limit
)

member_merges = sa.Table(
    "member_merges",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("program_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("member_id", sa.BigInteger, nullable=False, comment="the surviving member"),
    sa.Column("merged_member_id", sa.BigInteger, nullable=False, comment="the member merged into it"),
    sa.Column("entry_id", sa.BigInteger, sa.ForeignKey("entries.id"),
              comment="the merge entry (NULL: nothing to move)"),
    sa.Column("tier_before", sa.Text),
    sa.Column("merged_tier", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    sa.UniqueConstraint("merged_member_id"),
)
