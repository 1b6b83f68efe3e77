"""Change feed reads and webhook endpoint administration. Reads return the JSON text Postgres renders."""

from __future__ import annotations

import re
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from app.errors import DomainError
from app.events import queries as q
from app.events.schemas import (
    DeliveriesRequeued,
    DeliveryRecover,
    EventType,
    SecretRotated,
    SecretRotation,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointUpdate,
)
from app.events.webhooks import check_url, new_secret

EVENT_ID = re.compile(r"^evt_[0-9a-f]{16}$")
DELIVERY_ID = re.compile(r"^dlv_[0-9a-f]{16}$")
# An endpoint costs a fan-out pass on every change of its program: a program has a handful, not hundreds.
MAX_ENDPOINTS = 16


def _types(types: Sequence[EventType] | None) -> list[str] | None:
    return None if not types else sorted({t.value for t in types})


def _cursor(after: str | None) -> str | None:
    if after is not None and not EVENT_ID.match(after):
        raise DomainError("invalid_cursor", "`after` must be an event id (`evt_...`) from this feed.")
    return after


async def feed_json(pool: asyncpg.Pool, program_id: UUID, after: str | None, types: Sequence[EventType] | None,
                    limit: int) -> str:
    page: str | None = await pool.fetchval(q.FEED, program_id, _cursor(after), _types(types), limit)
    if page is None:
        raise DomainError("invalid_cursor", "`after` is not an event of this program's feed (or it is past the "
                          "retention: start again from the beginning).")
    return page


async def member_feed_json(pool: asyncpg.Pool, program_id: UUID, member_ref: str, after: str | None,
                           types: Sequence[EventType] | None, limit: int) -> str:
    row = await pool.fetchrow(q.MEMBER_FEED, program_id, member_ref, _cursor(after), _types(types), limit)
    if row is None:
        raise DomainError("member_not_found")
    if row["page"] is None:
        raise DomainError("invalid_cursor", "`after` is not an event of this program's feed.")
    page: str = row["page"]
    return page


def _endpoint(row: asyncpg.Record) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate(dict(row))


async def _get(conn: asyncpg.Connection | asyncpg.Pool, program_id: UUID, endpoint_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(q.GET_ENDPOINT, program_id, endpoint_id)
    if row is None:
        raise DomainError("webhook_endpoint_not_found")
    return row


async def create_endpoint(conn: asyncpg.Connection, program_id: UUID, body: WebhookEndpointCreate,
                          allow_private: bool) -> WebhookEndpointCreated:
    await check_url(body.url, allow_private)
    # The count and the insert under one lock of the program's row (a rare admin write, not a ledger write).
    await conn.execute("SELECT 1 FROM programs WHERE id = $1 FOR UPDATE", program_id)
    if await conn.fetchval(q.ENDPOINT_COUNT, program_id) >= MAX_ENDPOINTS:
        raise DomainError("webhook_endpoint_limit", f"A program has at most {MAX_ENDPOINTS} webhook endpoints.")
    secret = new_secret()
    row = await conn.fetchrow(q.CREATE_ENDPOINT, program_id, body.url, body.description, _types(body.event_types) or [],
                              body.enabled, secret)
    return WebhookEndpointCreated.model_validate({**dict(row), "secret": secret})


async def list_endpoints(pool: asyncpg.Pool, program_id: UUID) -> list[WebhookEndpoint]:
    return [_endpoint(r) for r in await pool.fetch(q.LIST_ENDPOINTS, program_id)]


async def get_endpoint(pool: asyncpg.Pool, program_id: UUID, endpoint_id: UUID) -> WebhookEndpoint:
    return _endpoint(await _get(pool, program_id, endpoint_id))


async def update_endpoint(pool: asyncpg.Pool, program_id: UUID, endpoint_id: UUID, body: WebhookEndpointUpdate,
                          allow_private: bool) -> WebhookEndpoint:
    if body.url is not None:
        await check_url(body.url, allow_private)
    fields = body.model_fields_set
    types = None if body.event_types is None else (_types(body.event_types) or [])
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(q.UPDATE_ENDPOINT, program_id, endpoint_id, body.url, "description" in fields,
                                  body.description, types, body.enabled)
        if row is None:
            raise DomainError("webhook_endpoint_not_found")
        if body.enabled is not None:  # a paused queue waits out of the claim's way; resumed, its heads are due
            await conn.execute(q.WAKE if body.enabled else q.PAUSE, endpoint_id)
    return _endpoint(row)


async def delete_endpoint(pool: asyncpg.Pool, program_id: UUID, endpoint_id: UUID) -> None:
    if await pool.fetchval(q.DELETE_ENDPOINT, program_id, endpoint_id) is None:
        raise DomainError("webhook_endpoint_not_found")


async def rotate_secret(pool: asyncpg.Pool, program_id: UUID, endpoint_id: UUID,
                        body: SecretRotation) -> SecretRotated:
    secret = new_secret()
    row = await pool.fetchrow(q.ROTATE_SECRET, program_id, endpoint_id, secret, body.grace_seconds)
    if row is None:
        raise DomainError("webhook_endpoint_not_found")
    return SecretRotated(secret=secret, previous_secret_valid_until=row["previous_secret_valid_until"])


async def deliveries_json(pool: asyncpg.Pool, program_id: UUID, endpoint_id: UUID, status: str | None,
                          limit: int, cursor: str | None) -> str:
    before = None
    if cursor is not None:
        if not DELIVERY_ID.match(cursor):
            raise DomainError("invalid_cursor")
        before = await pool.fetchval(q.DELIVERY_ROW_ID, cursor)
    page: str | None = await pool.fetchval(q.DELIVERIES, program_id, endpoint_id, before, status, limit)
    if page is None:
        raise DomainError("webhook_endpoint_not_found")
    return page


async def retry_delivery(pool: asyncpg.Pool, program_id: UUID, endpoint_id: UUID, delivery_id: str) -> str:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(q.RETRY_DELIVERY, program_id, endpoint_id, delivery_id)
        if row is None:
            await _get(conn, program_id, endpoint_id)
            raise DomainError("webhook_delivery_not_found")
        await conn.execute(q.NORMALIZE, endpoint_id, row["member_id"])
        body: str = await conn.fetchval(q.DELIVERY_JSON, row["id"])
        return body


async def recover(pool: asyncpg.Pool, program_id: UUID, endpoint_id: UUID,
                  body: DeliveryRecover) -> DeliveriesRequeued:
    async with pool.acquire() as conn, conn.transaction():
        await _get(conn, program_id, endpoint_id)
        requeued = await conn.fetchval(q.RECOVER, program_id, endpoint_id, body.since)
        await conn.execute(q.NORMALIZE, endpoint_id, None)
        return DeliveriesRequeued(requeued=requeued)


async def purge_changes(pool: asyncpg.Pool, retention_days: int, batch: int = 5000) -> int:
    """Scheduler job: deliveries, then events, older than the retention; in slices of ``batch`` rows, each its
    own transaction. Returns the events purged."""
    while (await pool.execute(q.PURGE_DELIVERIES, retention_days, batch)) != "DELETE 0":
        pass
    purged = 0
    while True:
        status = await pool.execute(q.PURGE_CHANGES, retention_days, batch)
        count = int(status.split()[-1])
        purged += count
        if count < batch:
            return purged
