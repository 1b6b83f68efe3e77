"""The write path: every write of the ledger is ONE call of one SQL function (migrations/functions/), made here.

A write function takes its arguments by name, looks its Idempotency-Key up, changes the ledger through the posting
primitive ``ledger.post``, renders its answer (JSON text), stores it under the key, and returns a ``ledger.answer``
— all in one statement, which is its own transaction: one round trip, and the member's lock is held for that one
statement. Refusals write nothing (or only what a read already showed, such as releasing lapsed holds) and come
back as a status: ``raise_for_status`` is the one place where a status becomes an API error.

``Writer.execute`` runs one write, alone or, with group commit on, together with the other writes that reach this
process at the same moment (app/ledger/batch.py): the caller cannot tell the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.errors import DomainError

log = logging.getLogger(__name__)

# Statuses that never reach a client: 'stale' makes the service evaluate again (app/earning).
INTERNAL_STATUSES = frozenset({"ok", "stale"})


class RawJSON(str):
    """JSON text already serialised (pydantic's ``model_dump_json``): sent to a json/jsonb parameter as is."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """A ``ledger.answer``: ``status`` 'ok' with the HTTP status and the JSON body as stored under the key, or a
    refusal's status (an error-catalogue code) with ``detail``, the extra fields of its problem body."""

    status: str
    http_status: int | None = None
    body: str | None = None
    replayed: bool = False
    detail: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Answer:
        return cls(row["status"], row["http_status"], row["body"], bool(row["replayed"]), row["detail"])

    def raise_for_status(self) -> None:
        raise_for_status(self.status, self.detail)


def raise_for_status(status: str, detail: Mapping[str, Any] | None = None) -> None:
    """THE mapping of a ledger status to an API error: the status is the error code (tests/test_sql_home.py checks
    every status the SQL can answer against the catalogue)."""
    if status == "ok":
        return
    if status in INTERNAL_STATUSES:
        raise RuntimeError(f"internal ledger status {status!r} reached the API")
    extra = dict(detail or {})
    message = extra.pop("detail", None)
    raise DomainError(status, message, **extra)


@dataclass(frozen=True, slots=True)
class Write:
    """One call of a write function of the schema ``ledger``, with its arguments by name (the typed contract: the
    SQL function's parameter names, ``p_...``)."""

    function: str
    args: Mapping[str, Any]

    def sql(self) -> str:
        return call_sql(self.function, tuple(self.args))

    def values(self) -> list[Any]:
        return list(self.args.values())


_SQL: dict[tuple[str, tuple[str, ...]], str] = {}


def call_sql(function: str, names: Sequence[str]) -> str:
    """``SELECT * FROM ledger.<function>(p_a => $1, p_b => $2, ...)``, built once per function and argument list."""
    key = (function, tuple(names))
    sql = _SQL.get(key)
    if sql is None:
        assert function.isidentifier() and all(n.isidentifier() for n in names)
        params = ", ".join(f"{name} => ${i}" for i, name in enumerate(names, 1))
        sql = _SQL[key] = f"SELECT * FROM ledger.{function}({params})"
    return sql


def busy_error(exc: asyncpg.LockNotAvailableError) -> DomainError:
    """A lock wait past lock_timeout: on the Idempotency-Key (a duplicate of a request still running) or on the
    member (busy with other writes)."""
    where = f"{getattr(exc, 'context', '') or ''} {getattr(exc, 'where', '') or ''}"
    if "idempotency_keys" in where or "ledger.respond(" in where or "ledger.remember(" in where:
        return DomainError("request_in_progress")
    return DomainError("member_busy")


@dataclass
class Writer:
    """Runs writes on the pool; with a ``batcher``, through group commit."""

    pool: asyncpg.Pool
    batcher: Any = field(default=None)

    async def execute(self, write: Write) -> Answer:
        if self.batcher is not None:
            return await self.batcher.submit(write)  # type: ignore[no-any-return]
        return await execute_alone(self.pool, write)


async def execute_in(conn: asyncpg.Connection, write: Write) -> Answer:
    """A write inside the caller's transaction (which owns the retry of a unique violation)."""
    try:
        row = await conn.fetchrow(write.sql(), *write.values())
    except asyncpg.LockNotAvailableError as exc:
        raise busy_error(exc) from None
    assert row is not None
    return Answer.of(row)


async def execute_alone(pool: asyncpg.Pool | asyncpg.Connection, write: Write) -> Answer:
    """One write, one statement. A unique violation means a concurrent request committed the same key (or the same
    natural key) first: the whole statement rolled back, and running it again answers as the winner did (a replay,
    or the refusal its own checks now see). A deadlock (issue 15: a group-commit batch sorts its writes by the
    reference they name, and an alias of a merged member names another member than it locks) rolled the statement
    back too: it runs again; so does a write whose member was merged into another while it waited for its lock
    (a serialization failure raised by ``ledger.post``): run again, it finds the survivor."""
    for attempt in range(3):
        try:
            row = await pool.fetchrow(write.sql(), *write.values())
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if attempt == 2:
                raise
            continue
        except asyncpg.LockNotAvailableError as exc:
            raise busy_error(exc) from None
        assert row is not None
        return Answer.of(row)
    raise AssertionError("unreachable")
