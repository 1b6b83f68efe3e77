"""Versioned program configuration: earn rules, expiration policies and tier ladders share one mechanism.

A new version is appended with an ``effective_from``; the version in force at a time ``t`` is the one with
the latest ``effective_from <= t`` (then the highest number). Versions are never changed, so each is
validated once per process (``parse``). Concurrent PUTs of one program's configuration are serialised by a
transaction-level advisory lock, so versions are numbered without gaps or clashes.
"""

from __future__ import annotations

import json
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
                   at: datetime) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(vt.current, program_id, at)
    return row


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
