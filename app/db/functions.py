"""The repeatable step of the migrations: the service's SQL functions, triggers and types, from their one home.

Every function, trigger and type of the service is defined in ``migrations/functions/*.sql`` (one file per
aggregate, applied in file-name order) inside the schema ``ledger``, never in a numbered migration. After the
numbered migrations reach head, in the same transaction, this step compares the checksum of those files with
the one it applied last (table ``schema_functions``); when they differ it drops the schema ``ledger`` (its
triggers on the tables go with it) and runs the files again. So a function has exactly one current definition,
a change to it is a change to its file, and a database can never keep a function no file defines any more.
Flyway calls this a repeatable migration. ``tests/test_sql_home.py`` proves the functions of a migrated database
are exactly those of the files.

``ledger.id_secret()`` is generated here, before the files, from ``public_id_keys`` (the secret of the opaque
public ids, created once per database by migration 0010): a constant folded into every id the API shows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "migrations" / "functions"


def function_files() -> list[Path]:
    return sorted(FUNCTIONS_DIR.glob("*.sql"))


def checksum() -> str:
    digest = hashlib.sha256()
    for path in function_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def secret_function(secret: int) -> str:
    return (f"CREATE FUNCTION ledger.id_secret() RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE "
            f"AS $$ SELECT {int(secret)}::bigint $$;")


def run_sql(connection: sa.Connection, sql: str) -> None:
    """Run a script of many commands (dollar-quoted bodies included) through the driver's simple-query protocol:
    asyncpg prepares statements, and a prepared statement holds one command."""
    dbapi_connection: Any = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    dbapi_connection.run_async(lambda driver: driver.execute(sql))


def apply(connection: sa.Connection, force: bool = False) -> bool:
    """Apply the files when they changed since the last run (or ``force``). Runs in the caller's transaction.
    Returns whether it applied them."""
    digest = checksum()
    current = connection.execute(sa.text("SELECT checksum FROM schema_functions WHERE id = 1")).scalar()
    if current == digest and not force:
        return False
    secret = connection.execute(sa.text("SELECT secret FROM public_id_keys WHERE id = 1")).scalar_one()
    run_sql(connection, "DROP SCHEMA IF EXISTS ledger CASCADE; CREATE SCHEMA ledger;\n" + secret_function(secret))
    for path in function_files():
        run_sql(connection, path.read_text())
    connection.execute(sa.text(
        "INSERT INTO schema_functions (id, checksum) VALUES (1, :c) "
        "ON CONFLICT (id) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()"), {"c": digest})
    return True
