"""The ``points-ledger`` command line (typer; rich for help, errors and progress).

One function per command. A command that needs the database gets it from ``_database`` (DATABASE_URL, or the
embedded Postgres of the project's .data/pg wherever the command is run from), refuses a database that is not
migrated with one line saying what to run, and turns the operator's mistakes (an unknown program, a bad
currency, an unset DATABASE_URL) into one line of text and exit status 2, never a traceback. Long commands show
a progress bar on stderr when it is a terminal (or with ``--progress``); their summary goes to stdout.

Exit status: 0 done, 1 ``verify`` found discrepancies (or ``openapi --check`` found drift), 2 the command
could not run as asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table

from app.config import PROJECT_ROOT, Settings, get_settings

ROOT = PROJECT_ROOT
OPENAPI_PATH = ROOT / "openapi" / "openapi.json"
T = TypeVar("T")

err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

cli = typer.Typer(
    name="points-ledger", help="Loyalty points on an append-only, double-entry ledger in Postgres.",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="markdown",
)
programs_cli = typer.Typer(help="The programs (tenants) of the database.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys of a program: create one to recover admin access, list, revoke.",
                       no_args_is_help=True)
changes_cli = typer.Typer(help="The change feed (the events the webhooks deliver).", no_args_is_help=True)
cli.add_typer(programs_cli, name="programs")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(changes_cli, name="changes")
export_cli = typer.Typer(help="Export a program's books, streamed: balances as of an instant (CSV), the ledger's "
                              "entries (JSONL), members (CSV). See README, Exports.", no_args_is_help=True)
cli.add_typer(export_cli, name="export")

# Options shared by several commands.
ProgramOpt = Annotated[str | None, typer.Option("--program", help="Only this program (its id, a UUID).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Count what would change; change nothing.")]
ProgressOpt = Annotated[bool, typer.Option("--progress", help="Show progress even when stderr is not a terminal.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="ISO timestamp with a zone, e.g. 2027-01-01T00:00:00Z (default now). It really applies "
    "what is due then.")]
BatchOpt = Annotated[int, typer.Option("--batch", min=1, max=100_000, help="Members per transaction.")]


# --- plumbing ------------------------------------------------------------------------------------------------


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def validation_text(exc: Any) -> str:
    """A pydantic ValidationError as one line per field, without pydantic's "For further information" links."""
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors(include_url=False)
    )


def _database_url(settings: Settings) -> str:
    from app.db.bootstrap import DatabaseNotConfigured, resolve_database_url

    try:
        with _status("starting the embedded Postgres" if not settings.database_url else "connecting"):
            return resolve_database_url(settings)
    except DatabaseNotConfigured as exc:
        fail(str(exc))


@contextmanager
def _status(message: str) -> Iterator[None]:
    if err.is_terminal:
        with err.status(message):
            yield
    else:
        yield


async def _open_pool(url: str, max_size: int) -> Any:
    from app.db.pool import create_pool

    return await create_pool(url, min_size=1, max_size=max_size)


async def _check_schema(pool: Any) -> str | None:
    """None when the database is at the code's head revision, else what to tell the operator."""
    from app.db.migrate import head_revision

    current = None
    if await pool.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
        current = await pool.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
    head = head_revision()
    if current is None:
        return "Database not migrated: run `points-ledger migrate`"
    if current != head:
        return f"Database at revision {current}, this version needs {head}: run `points-ledger migrate`"
    return None


def with_database(work: Callable[[Any], Awaitable[T]], *, max_size: int = 2) -> T:
    """Run ``work(pool)`` against the migrated database; an operator's error becomes one line and exit 2."""
    import asyncpg

    url = _database_url(get_settings())

    async def run() -> T:
        pool = await _open_pool(url, max_size)
        try:
            problem = await _check_schema(pool)
            if problem:
                fail(problem)
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InvalidCatalogNameError,
            asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError) as exc:
        fail(f"cannot reach the database ({_redacted(url)}): {exc}")


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _program_id(value: str | None) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        fail(f"--program must be a program id (a UUID; see `points-ledger programs list`), not {value!r}")


async def _require_program(pool: Any, program: UUID | None) -> None:
    if program is not None and not await pool.fetchval("SELECT 1 FROM programs WHERE id = $1", program):
        fail(f"no program {program} (see `points-ledger programs list`)")


def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--as-of must be an ISO timestamp with a zone (2027-01-01T00:00:00Z), not {value!r}")
    if moment.tzinfo is None:
        fail("--as-of needs a time zone, e.g. 2027-01-01T00:00:00Z")
    return moment


def _progress(show: bool) -> Progress:
    """A progress bar on stderr; disabled (prints nothing) unless ``show``."""
    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
        console=err, disable=not show, transient=False,
    )


def _show(progress: bool) -> bool:
    return progress or err.is_terminal


# --- serving and schema --------------------------------------------------------------------------------------


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default PL_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default PL_PORT, 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default PL_WORKERS, 1).")] = None,
    no_migrate: Annotated[bool, typer.Option("--no-migrate", help="Do not migrate first.")] = False,
    header_timeout: Annotated[float | None, typer.Option(
        help="A request head must arrive within this many seconds (default PL_HEADER_TIMEOUT_SECONDS, 10; 0: off)."
    )] = None,
    body_timeout: Annotated[float | None, typer.Option(
        help="A request body must arrive within this many seconds after its head (default PL_BODY_TIMEOUT_SECONDS, "
        "30; 0: off)."
    )] = None,
) -> None:
    """Run the HTTP service (migrates first, under the migration lock, unless --no-migrate)."""
    from app import serve as server
    from app.db.migrate import upgrade
    from app.observability import configure_logging

    # Read deadlines (slow clients): through the environment, so every worker process (and app.http_protocol,
    # which reads them from the settings) sees the same values.
    for flag, variable in ((header_timeout, "PL_HEADER_TIMEOUT_SECONDS"), (body_timeout, "PL_BODY_TIMEOUT_SECONDS")):
        if flag is not None:
            os.environ[variable] = str(flag)
    get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings.log_level)
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler that kills the
    # process before exit hooks run, and the embedded Postgres (stopped by such a hook) would be left
    # running. Turn it into a normal exit instead.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    url = _database_url(settings)
    if settings.migrate_on_start and not no_migrate:
        _upgrade(upgrade, url, "head")
    # Workers inherit the resolved URL, so only this process owns the embedded server.
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    # Several workers: each on its own SO_REUSEPORT socket, so keep-alive connections spread over all of
    # them (app/serve.py says why uvicorn's shared socket does not).
    server.run(
        "app.main:create_app", factory=True, host=host or settings.host, port=port or settings.port,
        workers=workers or settings.workers, json_log_level=settings.log_level, log_config=None,
        access_log=False, timeout_graceful_shutdown=20, proxy_headers=False,
        timeout_keep_alive=settings.keep_alive_seconds,
    )


def _upgrade(upgrade: Callable[[str, str], str | None], url: str, revision: str) -> str | None:
    import sqlalchemy.exc

    from app.db.migrate import UnsupportedPostgres

    try:
        with _status("migrating"):
            return upgrade(url, revision)
    except UnsupportedPostgres as exc:
        fail(str(exc))
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        fail(f"cannot reach the database ({_redacted(url)}): {exc}")


@cli.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Upgrade the database schema. Replicas may all run it at once: one migrates, the others wait and find
    nothing to do (a Postgres advisory lock)."""
    from app.db.migrate import upgrade

    url = _database_url(get_settings())
    before = _upgrade(upgrade, url, revision)
    from app.db.migrate import head_revision

    target = head_revision() if revision == "head" else revision
    if before == target:
        out.print(f"already at {target}: nothing to migrate")
    else:
        out.print(f"migrated from {before or 'an empty database'} to {target}")


@cli.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write it.")] = OPENAPI_PATH,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if the file differs from the app.")] = False,
) -> None:
    """Write the OpenAPI document (openapi/openapi.json): the contract clients are generated from."""
    doc = openapi_document()
    if check:
        if not output.exists() or output.read_text() != doc:
            fail(f"{output} is out of date: run `points-ledger openapi`", 1)
        out.print(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(doc)
    out.print(f"wrote {output}")


def openapi_document() -> str:
    from app.main import create_app

    return json.dumps(create_app(Settings(database_url="postgresql://unused")).openapi(), indent=2,
                      sort_keys=True) + "\n"


# --- programs and keys ---------------------------------------------------------------------------------------


@cli.command("create-program")
def create_program(
    name: Annotated[str, typer.Option(help="Display name.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, any case (eur is EUR).")],
    timezone: Annotated[str, typer.Option(help="IANA zone, e.g. Europe/Berlin.")] = "UTC",
    as_json: JsonOpt = False,
) -> None:
    """Create a program and print its first admin API key (shown once)."""
    from pydantic import ValidationError

    from app.programs.schemas import ProgramCreate

    try:
        data = ProgramCreate(name=name, currency=currency, timezone=timezone)
    except ValidationError as exc:
        fail(f"invalid program: {validation_text(exc)}")

    async def run(pool: Any) -> dict[str, Any]:
        from app.programs.service import create_program

        async with pool.acquire() as conn, conn.transaction():
            program, key = await create_program(conn, data)
        return {"program": program.model_dump(mode="json"), "api_key": key.model_dump(mode="json")}

    result = with_database(run, max_size=1)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        out.print(f"program id:    {result['program']['id']}")
        out.print(f"admin API key: {result['api_key']['key']}")
        out.print("(the key is shown once; store it now)")


@programs_cli.command("list")
def programs_list(as_json: JsonOpt = False) -> None:
    """Every program: id, name, currency, time zone and its active keys."""

    async def run(pool: Any) -> list[Any]:
        from app.programs.service import list_programs

        async with pool.acquire() as conn:
            return await list_programs(conn)

    programs = with_database(run, max_size=1)
    if as_json:
        print(json.dumps([p.model_dump(mode="json") for p in programs], indent=2))
        return
    table = Table(Column("id", no_wrap=True, min_width=36), "name", "currency", "timezone", "created",
                  "active keys (admin)")
    for p in programs:
        table.add_row(str(p.id), p.name, p.currency, p.timezone, p.created_at.strftime("%Y-%m-%d %H:%M"),
                      f"{p.active_keys} ({p.active_admin_keys})")
    out.print(table if programs else "no programs yet: `points-ledger create-program --name ... --currency ...`")


def _scopes(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


@keys_cli.command("create")
def keys_create(
    program: Annotated[str, typer.Option(help="The program's id (see `points-ledger programs list`).")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: earn, redeem, read, admin (admin implies all).")],
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "created by points-ledger keys",
    as_json: JsonOpt = False,
) -> None:
    """Create an API key for an existing program (an operator who lost the admin key gets a new one here)."""
    from pydantic import ValidationError

    from app.programs.schemas import ApiKeyCreate

    program_id = _program_id(program)
    try:
        data = ApiKeyCreate(name=name, scopes=_scopes(scopes))
    except ValidationError as exc:
        fail(f"invalid key: {validation_text(exc)}")

    async def run(pool: Any) -> Any:
        from app.programs.service import create_api_key

        await _require_program(pool, program_id)
        assert program_id is not None
        async with pool.acquire() as conn, conn.transaction():
            return await create_api_key(conn, program_id, data)

    key = with_database(run, max_size=1)
    if as_json:
        print(key.model_dump_json(indent=2))
    else:
        out.print(f"API key ({', '.join(key.scopes)}): {key.key}")
        out.print(f"key id: {key.id} (the key is shown once; store it now)")


@keys_cli.command("list")
def keys_list(
    program: Annotated[str, typer.Option(help="The program's id.")],
    as_json: JsonOpt = False,
) -> None:
    """The program's keys (never their secrets)."""
    program_id = _program_id(program)

    async def run(pool: Any) -> list[Any]:
        from app.programs.service import list_api_keys

        await _require_program(pool, program_id)
        async with pool.acquire() as conn:
            return await list_api_keys(conn, program_id)  # type: ignore[arg-type]

    keys = with_database(run, max_size=1)
    if as_json:
        print(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return
    table = Table(Column("id", no_wrap=True, min_width=36), "name", "prefix", "scopes", "created", "revoked")
    for k in keys:
        table.add_row(str(k.id), k.name, k.prefix, ",".join(k.scopes), k.created_at.strftime("%Y-%m-%d %H:%M"),
                      k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "")
    out.print(table)


@keys_cli.command("revoke")
def keys_revoke(
    program: Annotated[str, typer.Option(help="The program's id.")],
    key_id: Annotated[str, typer.Option("--key-id", help="The key's id (see `points-ledger keys list`).")],
) -> None:
    """Revoke a key at once in every process. The program's last admin key is refused (last_admin_key)."""
    from app.api.auth import NOTIFY
    from app.errors import DomainError

    program_id = _program_id(program)
    try:
        key_uuid = UUID(key_id)
    except ValueError:
        fail(f"--key-id must be a key id (a UUID), not {key_id!r}")

    async def run(pool: Any) -> Any:
        from app.programs.service import revoke_api_key

        await _require_program(pool, program_id)
        async with pool.acquire() as conn, conn.transaction():
            key = await revoke_api_key(conn, program_id, key_uuid)  # type: ignore[arg-type]
            await conn.execute(NOTIFY, f"key:{key.id}")  # every serving process evicts it on commit
            return key

    try:
        key = with_database(run, max_size=1)
    except DomainError as exc:
        fail(f"{exc.code}: {exc.detail}")
    out.print(f"revoked key {key.id} ({key.name})")


# --- books and jobs ------------------------------------------------------------------------------------------


@cli.command()
def verify(program: ProgramOpt = None, as_json: JsonOpt = False, progress: ProgressOpt = False) -> None:
    """Recompute balances, lots and totals from the postings; exit 1 on any discrepancy."""
    from app.ledger.verify import CHECKS

    program_id = _program_id(program)

    async def run(pool: Any) -> Any:
        from app.ledger.verify import verify as verify_books

        await _require_program(pool, program_id)
        with _progress(_show(progress)) as bar:
            task = bar.add_task("verify", total=len(CHECKS) + 1, detail="")
            async with pool.acquire() as conn:
                return await verify_books(conn, program_id, lambda name: bar.update(task, advance=1, detail=name))

    started = datetime.now()
    report = with_database(run, max_size=1)
    elapsed = (datetime.now() - started).total_seconds()
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        counts = ", ".join(f"{v} {k}" for k, v in report.checked.items())
        out.print(f"verify: checked {counts} in {elapsed:.2f}s")
        for d in report.discrepancies:
            out.print(f"  DISCREPANCY {d.check}: {json.dumps(d.detail, default=str)}")
        out.print("verify: OK" if report.ok else f"verify: {len(report.discrepancies)} discrepancies")
    if not report.ok:
        raise typer.Exit(1)


def _scope_text(program: UUID | None) -> str:
    return f"program {program}" if program else "every program"


@cli.command()
def expire(as_of: AsOfOpt = None, batch: BatchOpt = 500, program: ProgramOpt = None, dry_run: DryRunOpt = False,
           progress: ProgressOpt = False) -> None:
    """Expire every lot due by --as-of, in batches of members (see README, Expiration)."""
    from app.expiry.service import SweepResult, expire_due

    moment, program_id = _as_of(as_of), _program_id(program)

    async def run(pool: Any) -> SweepResult:
        await _require_program(pool, program_id)
        due = await expire_due(pool, moment, batch, program_id=program_id, dry_run=True)
        if dry_run:
            return due
        with _progress(_show(progress) and due.lots > 0) as bar:
            task = bar.add_task("expire", total=due.lots, detail="")
            return await expire_due(pool, moment, batch, lambda r: bar.update(
                task, completed=r.lots, detail=f"{r.points} points, {r.members} members"), program_id=program_id)

    r = with_database(run)
    if dry_run:
        out.print(f"would expire {r.points} points in {r.lots} lots of {r.members} members "
                  f"({_scope_text(program_id)}; dry run, nothing changed)")
    else:
        out.print(f"expired {r.points} points in {r.lots} lots of {r.members} members in {r.seconds:.2f}s")


@cli.command("evaluate-tiers")
def evaluate_tiers(as_of: AsOfOpt = None, batch: BatchOpt = 500, program: ProgramOpt = None,
                   dry_run: DryRunOpt = False, progress: ProgressOpt = False) -> None:
    """Re-qualify every member's tier as of --as-of (see README, Tiers)."""
    from app.tiers.service import EvaluationResult, evaluate_all, members_to_evaluate

    moment, program_id = _as_of(as_of), _program_id(program)

    async def run(pool: Any) -> EvaluationResult:
        await _require_program(pool, program_id)
        total = await members_to_evaluate(pool, moment or datetime.now().astimezone(), program_id)
        with _progress(_show(progress) and total > 0) as bar:
            task = bar.add_task("evaluate-tiers" + (" (dry run)" if dry_run else ""), total=total, detail="")
            return await evaluate_all(pool, moment, batch, lambda r: bar.update(
                task, completed=r.members, detail=f"{r.changed} changed"), program_id=program_id, dry_run=dry_run)

    r = with_database(run)
    verb = "would change" if dry_run else "changed"
    out.print(f"evaluated {r.members} members: {r.changed} {verb} ({r.upgraded} up, {r.downgraded} down) "
              f"in {r.seconds:.2f}s" + (f" ({_scope_text(program_id)}; dry run, nothing changed)" if dry_run else ""))


insight_cli = typer.Typer(help="Insight: RFM segments and lifecycle stages (see README, Insight).",
                          no_args_is_help=True)
cli.add_typer(insight_cli, name="insight")


@insight_cli.command("refresh")
def insight_refresh(as_of: AsOfOpt = None, program: ProgramOpt = None, progress: ProgressOpt = False,
                    as_json: JsonOpt = False) -> None:
    """Recompute every member's RFM scores, segment and stage as of --as-of, one transaction per programme;
    members whose segment changed are announced (member.segment_changed)."""
    from app.insight.service import STEPS, RefreshResult, programs_to_refresh, refresh

    moment, program_id = _as_of(as_of), _program_id(program)

    async def run(pool: Any) -> RefreshResult:
        await _require_program(pool, program_id)
        total = len(await programs_to_refresh(pool, program_id)) * len(STEPS)
        with _progress(_show(progress) and total > 0) as bar:
            task = bar.add_task("insight refresh", total=total, detail="")
            return await refresh(pool, moment, program_id, lambda r, step: bar.update(
                task, completed=r.steps, detail=f"{r.programs} programmes, {r.members} members; {step} done"))

    r = with_database(run)
    if as_json:
        out.print(json.dumps({"programs": r.programs, "members": r.members, "segment_changes": r.segment_changes,
                              "seconds": round(r.seconds, 3), "per_program": r.per_program}))
    else:
        out.print(f"refreshed {r.programs} programmes, {r.members} members: {r.segment_changes} changed segment "
                  f"in {r.seconds:.2f}s")


@cli.command("release-holds")
def release_holds(program: ProgramOpt = None, dry_run: DryRunOpt = False, progress: ProgressOpt = False) -> None:
    """Release every open hold past its expiry now (points back to available, to their own lots)."""
    from app.redemption.service import release_expired_holds

    program_id = _program_id(program)

    async def run(pool: Any) -> int:
        await _require_program(pool, program_id)
        due = await release_expired_holds(pool, program_id=program_id, dry_run=True)
        if dry_run:
            return due
        with _progress(_show(progress) and due > 0) as bar:
            task = bar.add_task("release-holds", total=due, detail="")
            return await release_expired_holds(pool, program_id=program_id,
                                               progress=lambda n: bar.update(task, completed=n))

    n = with_database(run)
    if dry_run:
        out.print(f"would release {n} expired holds ({_scope_text(program_id)}; dry run, nothing changed)")
    else:
        out.print(f"released {n} expired holds")


@cli.command("release-pending")
def release_pending(program: ProgramOpt = None, dry_run: DryRunOpt = False, progress: ProgressOpt = False) -> None:
    """Post the activation of every pending lot past its return window now."""
    from app.earning.service import activate_due_pending

    program_id = _program_id(program)

    async def run(pool: Any) -> int:
        await _require_program(pool, program_id)
        due = await activate_due_pending(pool, program_id=program_id, dry_run=True)
        if dry_run:
            return due
        with _progress(_show(progress) and due > 0) as bar:
            task = bar.add_task("release-pending (points)", total=due, detail="")
            return await activate_due_pending(pool, program_id=program_id,
                                              progress=lambda n: bar.update(task, completed=n))

    n = with_database(run)
    if dry_run:
        out.print(f"would activate {n} pending points whose return window has passed "
                  f"({_scope_text(program_id)}; dry run, nothing changed)")
    else:
        out.print(f"activated {n} pending points whose return window has passed")


@cli.command("expire-vouchers")
def expire_vouchers(program: ProgramOpt = None, dry_run: DryRunOpt = False, progress: ProgressOpt = False) -> None:
    """Expire every issued voucher past its validity now (rewards with refund_on_expiry give the points back)."""
    from app.rewards.service import expire_vouchers as expire_due_vouchers

    program_id = _program_id(program)

    async def run(pool: Any) -> int:
        await _require_program(pool, program_id)
        due = await expire_due_vouchers(pool, program_id=program_id, dry_run=True)
        if dry_run:
            return due
        with _progress(_show(progress) and due > 0) as bar:
            task = bar.add_task("expire-vouchers", total=due, detail="")
            return await expire_due_vouchers(pool, program_id=program_id,
                                             progress=lambda n: bar.update(task, completed=n))

    n = with_database(run)
    if dry_run:
        out.print(f"would expire {n} vouchers ({_scope_text(program_id)}; dry run, nothing changed)")
    else:
        out.print(f"expired {n} vouchers")


@cli.command("purge-idempotency-keys")
def purge_idempotency_keys(
    days: Annotated[int | None, typer.Option(min=0, help="Retention (default PL_IDEMPOTENCY_RETENTION_DAYS).")] = None,
) -> None:
    """Delete idempotency keys older than the retention."""
    retention = days if days is not None else get_settings().idempotency_retention_days

    async def run(pool: Any) -> int:
        from app.api.idempotency import purge_expired

        return await purge_expired(pool, retention)

    out.print(f"purged {with_database(run, max_size=1)} idempotency keys older than {retention} days")


@changes_cli.command("tail")
def changes_tail(
    program: Annotated[str, typer.Option("--program", help="The program (its id, a UUID).")],
    after: Annotated[str | None, typer.Option("--after", help="Start after this event id (default: the oldest "
                                              "kept).")] = None,
    types: Annotated[str | None, typer.Option("--types", help="Comma-separated event types (default: all).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for new events.")] = False,
    seconds: Annotated[float | None, typer.Option("--seconds", min=0, help="With --follow: stop after this "
                                                  "long (default: until interrupted).")] = None,
) -> None:
    """Print the program's events as JSON lines, in the feed's order (as GET /v1/changes pages them)."""
    from app.events.schemas import EventType
    from app.events.service import feed_json

    program_id = _program_id(program)
    assert program_id is not None
    try:
        chosen = [EventType(t.strip()) for t in types.split(",")] if types else None
    except ValueError as exc:
        fail(f"--types: {exc}")

    async def run(pool: Any) -> None:
        from app.errors import DomainError

        await _require_program(pool, program_id)
        cursor = after
        deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
        while True:
            try:
                page = json.loads(await feed_json(pool, program_id, cursor, chosen, 500))
            except DomainError as exc:
                fail(f"--after: {exc.detail}")
            for event in page["data"]:
                print(json.dumps(event), flush=True)
            cursor = page["next_cursor"]
            if page["has_more"]:
                continue
            if not follow or (deadline is not None and asyncio.get_running_loop().time() >= deadline):
                return
            await asyncio.sleep(1.0)

    with contextlib.suppress(KeyboardInterrupt):
        with_database(run, max_size=1)


@cli.command("announce-expiring")
def announce_expiring_cmd(as_of: AsOfOpt = None) -> None:
    """Announce the points.expiring notices due as of --as-of (the scheduler does it hourly)."""
    from app.expiry.service import announce_expiring

    moment = _as_of(as_of)

    async def run(pool: Any) -> int:
        return await announce_expiring(pool, moment)

    out.print(f"announced {with_database(run)} points.expiring notices")


# --- bulk: import a legacy system's members, export the books (issue 15) ---------------------------------------


@cli.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="JSONL (one member per line) or CSV (a header line, then one member "
                                              "per line); see README, Migrating from a legacy system.")],
    program: Annotated[str, typer.Option("--program", help="The program to import into (its id, a UUID).")],
    file_format: Annotated[str | None, typer.Option(
        "--format", help="jsonl or csv (default: by the file's extension, .csv is CSV, anything else JSONL)")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Where to write the rejected rows, one JSON object per line (default FILE.rejected.jsonl)")
    ] = None,
    chunk: Annotated[int, typer.Option("--chunk", min=1, max=10_000, help="Members per transaction.")] = 1000,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=16, help="Transactions in flight.")] = 4,
    progress: ProgressOpt = False,
) -> None:
    """Import a legacy system's members with their opening balances (lots) and tiers. Streams the file; each chunk
    commits on its own and a rerun imports nothing twice, so an interrupted import is finished by running it again.
    Rejected rows go to the report with their reasons; exit status 1 when there are any."""
    import io

    from app.imports.service import Tally, import_rows, read_csv, read_jsonl

    program_id = _program_id(program)
    kind = (file_format or ("csv" if file.suffix.lower() == ".csv" else "jsonl")).lower()
    if kind not in ("jsonl", "csv"):
        fail(f"--format must be jsonl or csv, not {file_format!r}")
    if not file.is_file():
        fail(f"no such file: {file}")
    report_path = report or file.with_name(file.name + ".rejected.jsonl")
    size = file.stat().st_size

    async def run(pool: Any) -> Tally:
        await _require_program(pool, program_id)
        assert program_id is not None
        # A command, not a server: reading the file blocks between chunks, which is what should happen.
        with open(file, "rb") as raw, open(report_path, "w", encoding="utf-8") as rejected, \
                _progress(_show(progress)) as bar:  # noqa: ASYNC230
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            rows = read_csv(text) if kind == "csv" else read_jsonl(text)
            task = bar.add_task("import", total=size, detail="")

            def advance(t: Tally) -> None:
                bar.update(task, completed=raw.tell(),
                           detail=f"{t.created} imported, {t.replayed} replayed, {t.rejected} rejected")

            def write_rejection(r: Any) -> None:
                rejected.write(r.model_dump_json(exclude_none=True) + "\n")

            tally = await import_rows(pool, program_id, rows, chunk_size=chunk, parallel=parallel,
                                      keep_rejections=False, on_rejected=write_rejection, on_progress=advance)
            bar.update(task, completed=size)
            return tally

    started = datetime.now()
    t = with_database(run, max_size=parallel + 1)
    seconds = (datetime.now() - started).total_seconds()
    out.print(f"read {t.rows} rows: imported {t.created} members ({t.points} points), {t.replayed} imported before, "
              f"{t.rejected} rejected in {seconds:.1f}s" + (f" (reasons in {report_path})" if t.rejected else ""))
    if t.rejected:
        raise typer.Exit(1)


OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")]
RequiredProgramOpt = Annotated[str, typer.Option("--program", help="The program (its id, a UUID).")]


def _export(program: str, output: Path | None, make: Callable[[Any, UUID], Any]) -> None:
    """Stream an export (an async iterator of text) to ``output`` or stdout, batch by batch."""
    program_id = _program_id(program)

    async def run(pool: Any) -> int:
        await _require_program(pool, program_id)
        assert program_id is not None
        written = 0
        # A command, not a server: writing blocks between batches, which is what should happen.
        target = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout  # noqa: ASYNC230, SIM115
        try:
            async for text in make(pool, program_id):
                target.write(text)
                written += len(text)
        finally:
            if output:
                target.close()
            else:
                target.flush()
        return written

    written = with_database(run, max_size=1)
    if output:
        err.print(f"wrote {written} characters to {output}")


@export_cli.command("balances")
def export_balances_cmd(program: RequiredProgramOpt, as_of: AsOfOpt = None, output: OutputOpt = None) -> None:
    """Every member's balances as recorded by --as-of (default now), as CSV."""
    from app.exports.service import balances_csv

    moment = _as_of(as_of) or datetime.now(UTC)
    _export(program, output, lambda pool, pid: balances_csv(pool, pid, moment))


@export_cli.command("entries")
def export_entries_cmd(
    program: RequiredProgramOpt,
    since: Annotated[str | None, typer.Option("--since", help="Only entries recorded after this ISO instant.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Only entries recorded by this ISO instant (default "
                                                              "now).")] = None,
    output: OutputOpt = None,
) -> None:
    """The ledger's entries with their postings, in recorded time, as JSON lines."""
    from app.exports.service import entries_jsonl

    start, end = _as_of(since), _as_of(until) or datetime.now(UTC)
    _export(program, output, lambda pool, pid: entries_jsonl(pool, pid, start, end))


@export_cli.command("members")
def export_members_cmd(program: RequiredProgramOpt, output: OutputOpt = None) -> None:
    """The program's members as CSV (erased members without their personal data)."""
    from app.exports.service import members_csv

    _export(program, output, members_csv)


def main(argv: list[str] | None = None) -> None:
    cli(args=argv, prog_name="points-ledger")


if __name__ == "__main__":
    main()
