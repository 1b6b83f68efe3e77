"""Who is calling: the program an API key belongs to, with its scopes and settings. Domain services take
this instead of anything HTTP-shaped."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from app.programs.schemas import ProgramSettings


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: UUID
    program_id: UUID
    scopes: frozenset[str]
    currency: str
    timezone: str
    settings: ProgramSettings

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes
