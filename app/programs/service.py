"""Program and API key use cases. Callers own the transaction."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from pydantic import ValidationError

from app.errors import DomainError
from app.programs import queries as q
from app.programs.keys import generate_key
from app.programs.schemas import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    Program,
    ProgramCreate,
    ProgramSettings,
    ProgramSummary,
    ProgramUpdate,
)


async def create_program(conn: asyncpg.Connection, data: ProgramCreate) -> tuple[Program, ApiKeyCreated]:
    """Create a program and its first admin key."""
    settings = ProgramSettings.model_validate(data.settings)
    row = await conn.fetchrow(q.INSERT_PROGRAM, data.name, data.currency, data.timezone,
                              settings.model_dump(mode="json", exclude_unset=True))
    program = Program(**dict(row))
    key = await create_api_key(conn, program.id, ApiKeyCreate(name="initial admin key", scopes=["admin"]))
    return program, key


async def get_program(conn: asyncpg.Connection, program_id: UUID) -> Program:
    row = await conn.fetchrow(q.GET_PROGRAM, program_id)
    if row is None:
        raise DomainError("not_found", "Program not found.")
    return Program(**dict(row))


async def update_program(conn: asyncpg.Connection, program_id: UUID, data: ProgramUpdate) -> Program:
    """Change the name and/or some settings; the merged settings are validated as a whole."""
    current = await get_program(conn, program_id)
    merged = current.settings.model_dump(mode="json", exclude_unset=True) | (data.settings or {})
    try:
        settings = ProgramSettings.model_validate(merged)
    except ValidationError as exc:
        raise DomainError("validation_error", "Invalid program settings.", errors=[
            {"loc": ["body", "settings", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]) from None
    row = await conn.fetchrow(q.UPDATE_PROGRAM, program_id, data.name,
                              settings.model_dump(mode="json", exclude_unset=True))
    return Program(**dict(row))


async def create_api_key(conn: asyncpg.Connection, program_id: UUID, data: ApiKeyCreate) -> ApiKeyCreated:
    key, prefix, key_hash = generate_key()
    scopes = sorted(set(data.scopes))
    row = await conn.fetchrow(q.INSERT_API_KEY, program_id, data.name, prefix, key_hash, scopes)
    return ApiKeyCreated(**dict(row), key=key)


async def list_api_keys(conn: asyncpg.Connection, program_id: UUID) -> list[ApiKey]:
    return [ApiKey(**dict(r)) for r in await conn.fetch(q.LIST_API_KEYS, program_id)]


async def list_programs(conn: asyncpg.Connection) -> list[ProgramSummary]:
    """Every program of the database (an operator's view: the CLI, never the API)."""
    return [ProgramSummary(**dict(r)) for r in await conn.fetch(q.LIST_PROGRAMS)]


async def revoke_api_key(conn: asyncpg.Connection, program_id: UUID, key_id: UUID) -> ApiKey:
    """Revoke a key (again: harmless). The program's last active admin key is refused (409 last_admin_key):
    nobody could then manage the program through the API. Needs the caller's transaction (it locks)."""
    admins = [r["id"] for r in await conn.fetch(q.LOCK_ACTIVE_ADMIN_KEYS, program_id)]
    if admins == [key_id]:
        raise DomainError("last_admin_key", "Create another admin key before revoking this one (the program "
                          "would have no admin key left).")
    row = await conn.fetchrow(q.REVOKE_API_KEY, program_id, key_id)
    if row is None:
        raise DomainError("api_key_not_found")
    return ApiKey(**dict(row))


