"""What a use case needs of the database: the pool (reads), the writer (writes, alone or by group commit) and
the per-process cache of the programs' configuration versions."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app.ledger.writes import Writer
from app.programs.versions import VersionCache


@dataclass(frozen=True, slots=True)
class Db:
    pool: asyncpg.Pool
    writer: Writer
    versions: VersionCache | None = None

    @classmethod
    def plain(cls, pool: asyncpg.Pool) -> Db:
        """Without group commit or cached versions: for commands and jobs."""
        return cls(pool, Writer(pool), None)
