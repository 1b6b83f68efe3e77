"""Bulk import of a legacy system's members: read rows (JSONL or CSV, streamed), validate each, send them in chunks
to ``ledger.import_members`` (migrations/functions/88_imports.sql), one transaction per chunk.

Constant memory: a file is read line by line and at most ``parallel`` chunks are in flight; rejected rows go to a
callback (the command writes them to the report file as they come). Resumable and idempotent: every chunk commits
on its own, and a rerun of the same file answers the rows imported before as replayed (``member_imports`` keeps
each row's hash), so an interrupted import is finished by running it again.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from uuid import UUID

import asyncpg
from pydantic import ValidationError
from pydantic_core import to_json

from app.errors import CATALOG
from app.imports.schemas import ImportRejection, ImportRow

CHUNK = 2000
IMPORT = "SELECT line, status::text, replayed FROM ledger.import_members($1, $2::text::jsonb)"
CSV_COLUMNS = ("member_id", "name", "email", "phone", "birthday", "status", "attributes", "lots", "tier",
               "tier_valid_until")
_JSON_COLUMNS = ("attributes", "lots")
CSV_FIELD_LIMIT = 16 * 1024 * 1024  # a cell: 1,000 lots fit easily

Parsed = tuple[int, dict[str, Any] | ImportRow | ImportRejection]


def rejection(line: int, member_id: Any, code: str, detail: str | None = None,
               errors: list[dict[str, Any]] | None = None) -> ImportRejection:
    return ImportRejection(line=line, member_id=member_id if isinstance(member_id, str) else None, code=code,
                           detail=detail or CATALOG[code][1], errors=errors)


def read_jsonl(lines: Iterable[str | bytes], first_line: int = 1) -> Iterator[Parsed]:
    """One JSON object per line; blank lines are skipped (but counted)."""
    for number, text in enumerate(lines, start=first_line):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            yield number, rejection(number, None, "malformed_request", f"not a JSON object: {exc}")
            continue
        if not isinstance(value, dict):
            yield number, rejection(number, None, "malformed_request", "not a JSON object")
            continue
        yield number, value


def read_csv(stream: TextIO) -> Iterator[Parsed]:
    """A header line naming the columns (CSV_COLUMNS, any order; member_id required), then one member per line.
    Empty cells are absent values; ``attributes`` and ``lots`` hold JSON."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        return
    names = [h.strip() for h in header]
    unknown = [n for n in names if n not in CSV_COLUMNS]
    if unknown or "member_id" not in names:
        detail = f"unknown columns {unknown}" if unknown else "no member_id column"
        yield 1, rejection(1, None, "malformed_request", f"CSV header: {detail}; the columns are {CSV_COLUMNS}")
        return
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a cell beyond the limit, a stray quote: this row only
            yield reader.line_num, rejection(reader.line_num, None, "malformed_request", f"CSV: {exc}")
            continue
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            yield number, rejection(number, None, "malformed_request",
                                     f"{len(cells)} cells, the header names {len(names)}")
            continue
        row: dict[str, Any] = {}
        bad = None
        for name, cell in zip(names, cells, strict=True):
            if cell == "":
                continue
            if name in _JSON_COLUMNS:
                try:
                    row[name] = json.loads(cell)
                except ValueError:
                    bad = name
                    break
            else:
                row[name] = cell
        if bad:
            yield number, rejection(number, row.get("member_id"), "malformed_request", f"{bad}: not valid JSON")
            continue
        yield number, row


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _unstorable_text(value: Any, loc: list[Any] | None = None) -> list[Any] | None:
    """Where the raw row holds a string Postgres cannot store (NUL, a lone surrogate), or None. Checked per row, so
    one such row is refused alone instead of failing its chunk."""
    loc = loc or []
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return loc
        return loc if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _unstorable_text(key, loc) if isinstance(key, str) else None
        found = found if found is not None else _unstorable_text(item, [*loc, key])
        if found is not None:
            return found
    return None


def _instants(row: ImportRow) -> Iterator[tuple[list[Any], datetime]]:
    if row.tier_valid_until is not None:
        yield ["tier_valid_until"], row.tier_valid_until
    for i, lot in enumerate(row.lots):
        for name in ("earned_at", "expires_at", "available_at"):
            at = getattr(lot, name)
            if at is not None:
                yield ["lots", i, name], at


def validate(line: int, raw: dict[str, Any], now: datetime, tiers: set[str] | None) -> ImportRow | ImportRejection:
    """The row as a model, or why not. Besides its shape: no lot earned in the future or already expired, and a
    tier the program's tier configuration in force has."""
    try:
        row = ImportRow.model_validate(raw)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return rejection(line, raw.get("member_id"), "validation_error",
                          "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in errors), errors)
    problems = []
    bad_text = _unstorable_text(raw)
    if bad_text is not None:
        problems.append({"loc": bad_text, "msg": "text Postgres cannot store (a NUL character or a lone surrogate)",
                         "type": "unstorable_text"})
    for loc, at in _instants(row):
        if not EARLIEST <= at <= LATEST:
            problems.append({"loc": loc, "msg": f"out of range ({EARLIEST.year} to {LATEST.year})",
                             "type": "out_of_range"})
    for i, lot in enumerate(row.lots):
        if lot.earned_at > now:
            problems.append({"loc": ["lots", i, "earned_at"], "msg": "earned_at is in the future",
                             "type": "earned_in_future"})
        if lot.expires_at is not None and lot.expires_at <= now:
            problems.append({"loc": ["lots", i, "expires_at"], "msg": "the lot has expired already: leave it out",
                             "type": "lot_expired"})
    if row.tier is not None and (tiers is None or row.tier not in tiers):
        known = "the program has no tiers" if tiers is None else f"the tiers are {sorted(tiers)}"
        problems.append({"loc": ["tier"], "msg": f"unknown tier {row.tier!r} ({known})", "type": "unknown_tier"})
    if problems:
        return rejection(line, row.member_id, "validation_error",
                          "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems), problems)
    return row


def _ts(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


def shape(line: int, row: ImportRow, now: datetime) -> dict[str, Any]:
    """The row as ledger.import_members reads it: the hash of the validated row, the lots with their pending flag,
    the totals of the postings."""
    lots = []
    available = pending = 0
    for lot in row.lots:
        is_pending = lot.available_at is not None and lot.available_at > now
        if is_pending:
            pending += lot.points
        else:
            available += lot.points
        lots.append({"points": lot.points, "available_at": _ts(lot.available_at if is_pending else lot.earned_at),
                     "expires_at": _ts(lot.expires_at), "pending": is_pending})
    return {
        "line": line, "member_id": row.member_id, "name": row.name, "email": row.email, "phone": row.phone,
        "birthday": row.birthday.isoformat() if row.birthday else None, "status": row.status,
        "attributes": row.attributes, "hash": hashlib.sha256(row.model_dump_json().encode()).hexdigest(),
        "available": available, "pending": pending,
        "occurred_at": _ts(max((lot.earned_at for lot in row.lots), default=now)), "lots": lots,
        "tier": row.tier, "tier_valid_until": _ts(row.tier_valid_until),
    }


async def validate_all(pool: asyncpg.Pool, program_id: UUID, rows: list[Parsed]
                       ) -> tuple[list[Parsed], list[ImportRejection]]:
    """Every row validated (an upload is refused whole when any row is not valid: POST /v1/imports)."""
    now = datetime.now(UTC)
    tiers = await program_tiers(pool, program_id, now)
    valid: list[Parsed] = []
    refused: list[ImportRejection] = []
    for line, raw in rows:
        row = raw if isinstance(raw, ImportRejection | ImportRow) else validate(line, raw, now, tiers)
        if isinstance(row, ImportRejection):
            refused.append(row)
        else:
            valid.append((line, row))
    return valid, refused


async def program_tiers(conn: asyncpg.Pool | asyncpg.Connection, program_id: UUID, at: datetime) -> set[str] | None:
    from app.tiers.service import current_config

    _, _, config = await current_config(conn, program_id, at)
    return None if config is None else {t.name for t in config.tiers}


@dataclass
class Tally:
    rows: int = 0
    created: int = 0
    replayed: int = 0
    rejected: int = 0
    points: int = 0
    rejections: list[ImportRejection] = field(default_factory=list)


async def import_chunk(pool: asyncpg.Pool, program_id: UUID, chunk: list[dict[str, Any]]
                       ) -> list[tuple[int, str, bool]]:
    """One transaction: the chunk's rows, each answered ok (created or replayed) or refused. A deadlock with a
    concurrent import of the same members (one chunk waits for the other's commit) is retried."""
    payload = to_json(chunk).decode()
    for attempt in range(3):
        try:
            async with pool.acquire() as conn:
                await conn.execute("SET statement_timeout = 0")
                try:
                    rows = await conn.fetch(IMPORT, program_id, payload)
                finally:
                    await conn.execute("RESET statement_timeout")
            return [(r["line"], r["status"], r["replayed"]) for r in rows]
        except asyncpg.DeadlockDetectedError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def import_rows(pool: asyncpg.Pool, program_id: UUID, rows: Iterable[Parsed] | AsyncIterator[Parsed], *,
                      chunk_size: int = CHUNK, parallel: int = 2, keep_rejections: bool = True,
                      on_rejected: Callable[[ImportRejection], None] | None = None,
                      on_progress: Callable[[Tally], None] | None = None) -> Tally:
    """Import ``rows`` (line, raw row or rejection) in chunks, up to ``parallel`` chunks in flight. A member_id seen
    twice in one chunk starts a new chunk, so each chunk names a member once."""
    now = datetime.now(UTC)
    tiers = await program_tiers(pool, program_id, now)
    tally = Tally()
    slots = asyncio.Semaphore(parallel)
    pending: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    def reject(r: ImportRejection) -> None:
        tally.rejected += 1
        if keep_rejections:
            tally.rejections.append(r)
        if on_rejected is not None:
            on_rejected(r)

    async def run(chunk: list[dict[str, Any]]) -> None:
        try:
            answers = await import_chunk(pool, program_id, chunk)
            by_line = {c["line"]: c for c in chunk}
            for line, status, replayed in answers:
                if status == "ok" and replayed:
                    tally.replayed += 1
                elif status == "ok":
                    tally.created += 1
                    tally.points += by_line[line]["available"] + by_line[line]["pending"]
                else:
                    reject(rejection(line, by_line[line]["member_id"], status))
            if on_progress is not None:
                on_progress(tally)
        except BaseException as exc:
            failures.append(exc)
            raise
        finally:
            slots.release()

    async def flush(chunk: list[dict[str, Any]]) -> None:
        await slots.acquire()
        if failures:  # a chunk failed (the database went away): stop; a rerun resumes
            slots.release()
            raise failures[0]
        task = asyncio.create_task(run(chunk))
        pending.add(task)
        task.add_done_callback(pending.discard)

    chunk: list[dict[str, Any]] = []
    seen: set[str] = set()

    async def each(item: Parsed) -> None:
        nonlocal chunk, seen
        line, raw = item
        tally.rows += 1
        if isinstance(raw, ImportRejection):
            reject(raw)
            return
        row = raw if isinstance(raw, ImportRow) else validate(line, raw, now, tiers)
        if isinstance(row, ImportRejection):
            reject(row)
            return
        if row.member_id in seen or len(chunk) >= chunk_size:
            await flush(chunk)
            chunk, seen = [], set()
        chunk.append(shape(line, row, now))
        seen.add(row.member_id)

    try:
        if isinstance(rows, AsyncIterator):
            async for item in rows:
                await each(item)
        else:
            for item in rows:
                await each(item)
                if tally.rows % 256 == 0:
                    await asyncio.sleep(0)  # let the chunks in flight collect their answers
        if chunk:
            await flush(chunk)
        await asyncio.gather(*pending)
    finally:
        for task in list(pending):
            task.cancel()
    if on_progress is not None:
        on_progress(tally)
    return tally
