"""Program and API key use cases. Callers own the transaction."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from app.errors import DomainError
from app.programs import queries as q
from app.programs.keys import generate_key
from app.programs.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated, Program, ProgramCreate


async def create_program(conn: asyncpg.Connection, data: ProgramCreate) -> tuple[Program, ApiKeyCreated]:
    """Create a program and its first admin key."""
    row = await conn.fetchrow(q.INSERT_PROGRAM, data.name, data.currency, data.timezone, data.settings)
    program = Program(**dict(row))
    key = await create_api_key(conn, program.id, ApiKeyCreate(name="initial admin key", scopes=["admin"]))
    return program, key


async def get_program(conn: asyncpg.Connection, program_id: UUID) -> Program:
    row = await conn.fetchrow(q.GET_PROGRAM, program_id)
    if row is None:
        raise DomainError("not_found", "Program not found.")
    return Program(**dict(row))


async def create_api_key(conn: asyncpg.Connection, program_id: UUID, data: ApiKeyCreate) -> ApiKeyCreated:
    key, prefix, key_hash = generate_key()
    scopes = sorted(set(data.scopes))
    row = await conn.fetchrow(q.INSERT_API_KEY, program_id, data.name, prefix, key_hash, scopes)
    return ApiKeyCreated(**dict(row), key=key)


async def list_api_keys(conn: asyncpg.Connection, program_id: UUID) -> list[ApiKey]:
    return [ApiKey(**dict(r)) for r in await conn.fetch(q.LIST_API_KEYS, program_id)]


async def revoke_api_key(conn: asyncpg.Connection, program_id: UUID, key_id: UUID) -> ApiKey:
    row = await conn.fetchrow(q.REVOKE_API_KEY, program_id, key_id)
    if row is None:
        raise DomainError("api_key_not_found")
    return ApiKey(**dict(row))


