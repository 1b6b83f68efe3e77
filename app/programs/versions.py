"""Versioned program configuration: earn rules, expiration policies and tier ladders share one mechanism.

A new version is appended with an ``effective_from``; the version in force at a time ``t`` is the one with
the latest ``effective_from <= t`` (then the highest number). Versions are never changed, so each is
validated once per process (``parse``). Concurrent PUTs of one program's configuration are serialised by a
transaction-level advisory lock, so versions are numbered without gaps or clashes.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from pydantic import BaseModel

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class VersionedTable:
    """``table`` holds (id, program_id, version, effective_from, <document>, created_at). Both names are
    constants of this code base, never input, so they may be formatted into SQL."""

    table: str
    document: str

    @property
    def insert(self) -> str:
        return f"""
INSERT INTO {self.table} (program_id, version, effective_from, {self.document})
SELECT $1, coalesce(max(version), 0) + 1, coalesce($2, now()), $3 FROM {self.table} WHERE program_id = $1
RETURNING id, version, effective_from, created_at, {self.document} AS document
"""

    @property
    def lock(self) -> str:
        return f"SELECT pg_advisory_xact_lock(hashtextextended('{self.table}:' || $1::uuid::text, 0))"

    @property
    def current(self) -> str:
        return f"""
SELECT id, version, effective_from, created_at, {self.document} AS document FROM {self.table}
WHERE program_id = $1 AND effective_from <= $2 ORDER BY effective_from DESC, version DESC LIMIT 1
"""

    @property
    def all_text(self) -> str:
        """Every version, the document as JSON text (parsed once per process by ``parse``)."""
        return f"""
SELECT id, version, effective_from, created_at, {self.document}::text AS document FROM {self.table}
WHERE program_id = $1 ORDER BY effective_from, version
"""

    @property
    def all(self) -> str:
        return f"""
SELECT id, version, effective_from, created_at, {self.document} AS document FROM {self.table}
WHERE program_id = $1 ORDER BY version
"""


EARN_RULES = VersionedTable("earn_rule_versions", "rules")
EXPIRATION_POLICY = VersionedTable("expiration_policy_versions", "policy")
TIERS = VersionedTable("tier_config_versions", "config")


async def append(conn: asyncpg.Connection, vt: VersionedTable, program_id: UUID, effective_from: datetime | None,
                 document: dict[str, Any]) -> asyncpg.Record:
    await conn.execute(vt.lock, program_id)
    row: asyncpg.Record = await conn.fetchrow(vt.insert, program_id, effective_from, document)
    return row


async def in_force(conn: asyncpg.Connection | asyncpg.Pool, vt: VersionedTable, program_id: UUID,
                   at: datetime, cache: VersionCache | None = None) -> Any:
    """The version in force at ``at`` (a record with id, version, effective_from, created_at, document), or None.
    With ``cache``, from the program's versions cached in this process (no round trip)."""
    if cache is not None and cache.active:
        return version_at(await cache.versions(conn, vt, program_id), at)
    return await conn.fetchrow(vt.current, program_id, at)


async def all_versions(conn: asyncpg.Connection | asyncpg.Pool, vt: VersionedTable, program_id: UUID,
                       cache: VersionCache | None = None) -> list[Any]:
    """Every version of a program's configuration, oldest first (cached per process when ``cache`` is given)."""
    if cache is not None and cache.active:
        return await cache.versions(conn, vt, program_id)
    return list(await conn.fetch(vt.all_text, program_id))


def version_at(rows: Sequence[Any], at: datetime) -> Any:
    """The version in force at ``at`` among ``rows`` (sorted by effective_from, then version): the latest
    effective_from at or before ``at``, then the highest version."""
    index = bisect.bisect_right([r["effective_from"] for r in rows], at)
    return rows[index - 1] if index else None


class VersionCache:
    """Per process: each program's versions of each configuration, so the hot paths know the rules, policy and
    tiers in force at any time without a round trip. Versions never change; a new one is announced by the
    NOTIFY ``program:<id>`` of the PUT that appended it (the key cache's listener evicts this cache too), and the
    cache is bypassed while that listener is down (``active``)."""

    def __init__(self, ttl: float, active: Callable[[], bool]) -> None:
        self.ttl = ttl
        self._active = active
        self._items: dict[tuple[str, UUID], tuple[float, list[Any]]] = {}

    @property
    def active(self) -> bool:
        return self.ttl > 0 and self._active()

    async def versions(self, conn: asyncpg.Connection | asyncpg.Pool, vt: VersionedTable,
                       program_id: UUID) -> list[Any]:
        key = (vt.table, program_id)
        item = self._items.get(key)
        if item is not None and item[0] >= time.monotonic():
            return item[1]
        rows = list(await conn.fetch(vt.all_text, program_id))
        if self.active:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (time.monotonic() + self.ttl, rows)
        return rows

    def evict(self, message: str) -> None:
        """``program:<id>`` evicts that program; ``key:...`` nothing; anything else everything."""
        kind, _, ident = message.partition(":")
        if kind == "program":
            for key in [k for k in self._items if str(k[1]) == ident]:
                self._items.pop(key, None)
        elif kind != "key":
            self._items.clear()

    def clear(self) -> None:
        self._items.clear()


async def history(conn: asyncpg.Connection | asyncpg.Pool, vt: VersionedTable,
                  program_id: UUID) -> list[asyncpg.Record]:
    return list(await conn.fetch(vt.all, program_id))


def parse(model: type[Model], version_id: int, raw: Any) -> Model:
    """The validated document of version ``version_id`` (cached: versions are immutable). ``raw``: the
    document as JSON text (``jsonb::text``, the hot paths' form: nothing is decoded on a cache hit) or as
    decoded JSON. The text is part of the key, so a process talking to two databases never mixes them."""
    text = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)
    return _parse(model, version_id, text)  # type: ignore[return-value]


@lru_cache(maxsize=1024)
def _parse(model: type[BaseModel], version_id: int, raw: str) -> BaseModel:
    return model.model_validate_json(raw)
