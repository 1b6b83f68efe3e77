"""Run a file of SQL (functions, triggers) in the migration's transaction.

asyncpg prepares every statement, and a prepared statement holds one command; a file with many
commands (and dollar-quoted function bodies) goes through the driver's simple-query protocol instead.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op


def run_sql_file(path: Path) -> None:
    run_sql(path.read_text())


def run_sql(sql: str) -> None:
    dbapi_connection = op.get_bind().connection.dbapi_connection
    assert dbapi_connection is not None
    dbapi_connection.run_async(lambda driver: driver.execute(sql))  # type: ignore[attr-defined]
