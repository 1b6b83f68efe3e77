"""Run alembic migrations from code (``points-ledger migrate``, ``serve`` on start, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parents[2]

# The oldest Postgres this service supports: the suite runs against it (see the README, "Postgres versions").
MIN_POSTGRES_VERSION = 15
# Key of the advisory lock `migrate` holds while it migrates (any bigint unique to this purpose).
MIGRATE_LOCK_ID = 0x706C_6D69_6772  # "plmigr"


class UnsupportedPostgres(RuntimeError):
    pass


def check_server_version(version_num: int) -> None:
    """Refuse a server older than MIN_POSTGRES_VERSION (``version_num``: ``SHOW server_version_num``)."""
    if version_num < MIN_POSTGRES_VERSION * 10000:
        raise UnsupportedPostgres(
            f"Postgres {MIN_POSTGRES_VERSION} or newer is required; this server is {version_num // 10000}."
        )


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(database_url: str, revision: str = "head") -> str | None:
    """Upgrade to ``revision`` under the migration lock; return the revision found before (None: empty)."""
    cfg = alembic_config(database_url)
    command.upgrade(cfg, revision)
    before: str | None = cfg.attributes.get("revision_before")
    return before


def head_revision() -> str | None:
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    return script.get_current_head()
