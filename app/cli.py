"""points-ledger command line: serve, migrate, create-program, verify, openapi, release-holds,
purge-idempotency-keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from app.config import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]
OPENAPI_PATH = ROOT / "openapi" / "openapi.json"


def _database_url(settings: Settings) -> str:
    from app.db.bootstrap import resolve_database_url

    started = time.perf_counter()
    url = resolve_database_url(settings)
    if not settings.database_url:
        print(f"embedded postgres ready in {time.perf_counter() - started:.2f}s ({settings.data_dir})",
              file=sys.stderr)
    return url


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from app import serve
    from app.db.migrate import upgrade
    from app.observability import configure_logging

    # issue-12 F6: read deadlines. Through the environment, so every worker process (and app.http_protocol,
    # which reads them from the settings) sees the same values.
    for flag, variable in ((args.header_timeout, "PL_HEADER_TIMEOUT_SECONDS"),
                           (args.body_timeout, "PL_BODY_TIMEOUT_SECONDS")):
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
    if settings.migrate_on_start and not args.no_migrate:
        upgrade(url)
    # Workers inherit the resolved URL, so only this process owns the embedded server.
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    # Several workers: each on its own SO_REUSEPORT socket, so keep-alive connections spread over all of
    # them (app/serve.py says why uvicorn's shared socket does not).
    serve.run(
        "app.main:create_app", factory=True, host=args.host or settings.host, port=args.port or settings.port,
        workers=args.workers or settings.workers, json_log_level=settings.log_level, log_config=None,
        access_log=False, timeout_graceful_shutdown=20, proxy_headers=False,
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from app.db.migrate import upgrade

    upgrade(_database_url(settings), args.revision)
    print(f"migrated to {args.revision}")
    return 0


def cmd_create_program(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from app.programs.schemas import ProgramCreate

    try:
        data = ProgramCreate(name=args.name, currency=args.currency, timezone=args.timezone)
    except ValidationError as exc:
        print(f"invalid program: {exc}", file=sys.stderr)
        return 2
    url = _database_url(settings)

    async def run() -> dict[str, Any]:
        from app.db.pool import create_pool
        from app.programs.service import create_program

        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn, conn.transaction():
                program, key = await create_program(conn, data)
        finally:
            await pool.close()
        return {"program": program.model_dump(mode="json"), "api_key": key.model_dump(mode="json")}

    out = asyncio.run(run())
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"program id:    {out['program']['id']}")
        print(f"admin API key: {out['api_key']['key']}")
        print("(the key is shown once; store it now)")
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from uuid import UUID

    try:
        program = UUID(args.program) if args.program else None
    except ValueError:
        print(f"--program must be a program id (a UUID), not {args.program!r}", file=sys.stderr)
        return 2
    url = _database_url(settings)

    async def run() -> Any:
        from app.db.pool import create_pool
        from app.ledger.verify import verify

        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                if program and not await conn.fetchval("SELECT 1 FROM programs WHERE id = $1", program):
                    return None
                return await verify(conn, program)
        finally:
            await pool.close()

    started = time.perf_counter()
    report = asyncio.run(run())
    if report is None:
        print(f"no program {program}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        counts = ", ".join(f"{v} {k}" for k, v in report.checked.items())
        print(f"verify: checked {counts} in {elapsed:.2f}s")
        for d in report.discrepancies:
            print(f"  DISCREPANCY {d.check}: {json.dumps(d.detail, default=str)}")
        print("verify: OK" if report.ok else f"verify: {len(report.discrepancies)} discrepancies")
    return 0 if report.ok else 1


def openapi_document() -> str:
    from app.main import create_app

    return json.dumps(create_app(Settings(database_url="postgresql://unused")).openapi(), indent=2,
                      sort_keys=True) + "\n"


def cmd_openapi(args: argparse.Namespace, settings: Settings) -> int:
    doc = openapi_document()
    path = Path(args.output)
    if args.check:
        if not path.exists() or path.read_text() != doc:
            print(f"{path} is out of date: run `points-ledger openapi`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    print(f"wrote {path}")
    return 0


def cmd_release_holds(args: argparse.Namespace, settings: Settings) -> int:
    url = _database_url(settings)

    async def run() -> int:
        from app.db.pool import create_pool
        from app.redemption.service import release_expired_holds

        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            return await release_expired_holds(pool)
        finally:
            await pool.close()

    print(f"released {asyncio.run(run())} expired holds")
    return 0


def cmd_release_pending(args: argparse.Namespace, settings: Settings) -> int:
    url = _database_url(settings)

    async def run() -> int:
        from app.db.pool import create_pool
        from app.earning.service import activate_due_pending

        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            return await activate_due_pending(pool)
        finally:
            await pool.close()

    print(f"activated {asyncio.run(run())} pending points whose return window has passed")
    return 0


def _as_of(value: str | None) -> Any:
    from datetime import datetime

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"--as-of must be an ISO timestamp with a zone (2027-01-01T00:00Z), not {value!r}") from None
    if moment.tzinfo is None:
        raise SystemExit("--as-of needs a time zone, e.g. 2027-01-01T00:00:00Z")
    return moment


def cmd_expire(args: argparse.Namespace, settings: Settings) -> int:
    as_of = _as_of(args.as_of)
    url = _database_url(settings)
    show = sys.stderr.isatty() or args.progress

    def progress(r: Any) -> None:
        rate = r.lots / r.seconds if r.seconds else 0.0
        print(f"\rexpire: {r.members} members, {r.lots} lots, {r.points} points, {r.batches} batches "
              f"({rate:,.0f} lots/s)", end="", file=sys.stderr, flush=True)

    async def run() -> Any:
        from app.db.pool import create_pool
        from app.expiry.service import expire_due

        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            return await expire_due(pool, as_of, args.batch, progress if show else None)
        finally:
            await pool.close()

    r = asyncio.run(run())
    if show and r.batches:
        print(file=sys.stderr)
    print(f"expired {r.points} points in {r.lots} lots of {r.members} members in {r.seconds:.2f}s")
    return 0


def cmd_evaluate_tiers(args: argparse.Namespace, settings: Settings) -> int:
    as_of = _as_of(args.as_of)
    url = _database_url(settings)
    show = sys.stderr.isatty() or args.progress

    def progress(r: Any) -> None:
        print(f"\revaluate-tiers: {r.members} members, {r.changed} changed ({r.upgraded} up, {r.downgraded} down)",
              end="", file=sys.stderr, flush=True)

    async def run() -> Any:
        from app.db.pool import create_pool
        from app.tiers.service import evaluate_all

        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            return await evaluate_all(pool, as_of, args.batch, progress if show else None)
        finally:
            await pool.close()

    r = asyncio.run(run())
    if show and r.members:
        print(file=sys.stderr)
    print(f"evaluated {r.members} members: {r.changed} changed ({r.upgraded} up, {r.downgraded} down) "
          f"in {r.seconds:.2f}s")
    return 0


def cmd_purge_idempotency_keys(args: argparse.Namespace, settings: Settings) -> int:
    url = _database_url(settings)
    days = args.days if args.days is not None else settings.idempotency_retention_days

    async def run() -> int:
        from app.api.idempotency import purge_expired
        from app.db.pool import create_pool

        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            return await purge_expired(pool, days)
        finally:
            await pool.close()

    print(f"purged {asyncio.run(run())} idempotency keys older than {days} days")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="points-ledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP service (migrates first unless --no-migrate)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--no-migrate", action="store_true")
    p.add_argument("--header-timeout", type=float, metavar="SECONDS",
                   help="a request head must arrive within this (default PL_HEADER_TIMEOUT_SECONDS, 10; 0: off)")
    p.add_argument("--body-timeout", type=float, metavar="SECONDS",
                   help="a request body must arrive within this after its head (default PL_BODY_TIMEOUT_SECONDS, "
                   "30; 0: off)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="upgrade the database schema")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("create-program", help="create a program and print its first admin API key")
    p.add_argument("--name", required=True)
    p.add_argument("--currency", required=True, help="ISO 4217, e.g. EUR")
    p.add_argument("--timezone", default="UTC", help="IANA zone, e.g. Europe/Berlin")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_create_program)

    p = sub.add_parser("verify", help="recompute balances and lots from postings; exit 1 on discrepancy")
    p.add_argument("--program", help="limit to one program id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("openapi", help="write the OpenAPI document to openapi/openapi.json")
    p.add_argument("--output", default=str(OPENAPI_PATH))
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the app")
    p.set_defaults(func=cmd_openapi)

    p = sub.add_parser("release-holds", help="release every open hold past its expiry (points back to available)")
    p.set_defaults(func=cmd_release_holds)

    p = sub.add_parser("release-pending", help="make pending points past their return window available")
    p.set_defaults(func=cmd_release_pending)

    p = sub.add_parser("expire", help="expire every lot due by --as-of (default now), in batches of members")
    p.add_argument("--as-of", help="ISO timestamp with zone, e.g. 2027-01-01T00:00:00Z")
    p.add_argument("--batch", type=int, default=500, help="members per transaction")
    p.add_argument("--progress", action="store_true", help="show progress even when not on a terminal")
    p.set_defaults(func=cmd_expire)

    p = sub.add_parser("evaluate-tiers", help="re-qualify every member's tier as of --as-of (default now)")
    p.add_argument("--as-of", help="ISO timestamp with zone")
    p.add_argument("--batch", type=int, default=500, help="members per transaction")
    p.add_argument("--progress", action="store_true", help="show progress even when not on a terminal")
    p.set_defaults(func=cmd_evaluate_tiers)

    p = sub.add_parser("purge-idempotency-keys", help="delete idempotency keys past retention")
    p.add_argument("--days", type=int)
    p.set_defaults(func=cmd_purge_idempotency_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args, get_settings()))


if __name__ == "__main__":
    sys.exit(main())
