"""Events out: the change feed (pull) and webhook endpoints (push)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response

from app.api.deps import Admin, MemberIdPath, Pool, Reader
from app.api.idempotency import JSONText
from app.api.problems import responses
from app.api.routes.base import ApiRoute
from app.errors import DomainError
from app.events import service
from app.events.schemas import (
    ChangePage,
    DeliveriesRequeued,
    DeliveryRecover,
    EventType,
    SecretRotated,
    SecretRotation,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointUpdate,
)

router = APIRouter(prefix="/v1", tags=["events"], route_class=ApiRoute)

After = Annotated[str | None, Query(max_length=64, description="The `next_cursor` of the previous page (an event id); "
                                    "none: from the oldest event kept")]
Types = Annotated[str | None, Query(max_length=2000, description="Comma-separated event types; none: all",
                                    examples=["points.earned,points.expiring"])]
Limit = Annotated[int, Query(ge=1, le=500)]
ENDPOINT_ERRORS = ("insufficient_scope", "webhook_endpoint_not_found")


def _types(types: str | None) -> list[EventType] | None:
    if not types:
        return None
    chosen: list[EventType] = []
    for name in (t.strip() for t in types.split(",")):
        try:
            chosen.append(EventType(name))
        except ValueError:
            raise DomainError("validation_error", f"Unknown event type {name!r}.", errors=[
                {"loc": ["query", "types"], "msg": f"unknown event type {name!r}", "type": "enum"}]) from None
    return chosen


@router.get("/changes", response_model=ChangePage,
            responses=responses("insufficient_scope", "invalid_cursor"))
async def list_changes(principal: Reader, pool: Pool, after: After = None, types: Types = None,
                       limit: Limit = 100) -> Response:
    """The program's change feed: every event the webhooks deliver, oldest first, in one stable order. Page with
    `after=<next_cursor>`: a consumer that starts at the beginning and follows `next_cursor` sees every event
    exactly once and in order, even while transactions commit out of order (an event appears only once no
    transaction that could precede it is still running). At the end, `next_cursor` stays as it is: poll again
    with it. Events are kept `PL_CHANGES_RETENTION_DAYS` (30 days by default)."""
    return JSONText(await service.feed_json(pool, principal.program_id, after, _types(types), limit))


@router.get("/members/{member_id}/changes", response_model=ChangePage,
            responses=responses("insufficient_scope", "member_not_found", "invalid_cursor"))
async def list_member_changes(member_id: MemberIdPath, principal: Reader, pool: Pool, after: After = None,
                              types: Types = None, limit: Limit = 100) -> Response:
    """One member's events, in the feed's order (same cursors)."""
    return JSONText(await service.member_feed_json(pool, principal.program_id, member_id, after, _types(types),
                                                   limit))


@router.post("/webhook-endpoints", status_code=201, response_model=WebhookEndpointCreated,
             responses=responses("insufficient_scope", "webhook_url_invalid", "webhook_url_not_allowed",
                                 "webhook_endpoint_limit"))
async def create_webhook_endpoint(body: WebhookEndpointCreate, principal: Admin, pool: Pool,
                                  request: Request) -> WebhookEndpointCreated:
    """Deliver the program's events (of `event_types`; none: all) to `url`, signed as Standard Webhooks says. The
    endpoint receives the events from its creation on. The signing `secret` is in this answer only. A URL whose
    host resolves to a loopback, private or link-local address is refused (unless the operator allows them)."""
    async with pool.acquire() as conn, conn.transaction():
        return await service.create_endpoint(conn, principal.program_id, body, _allow_private(request))


@router.get("/webhook-endpoints", response_model=WebhookEndpointList, responses=responses("insufficient_scope"))
async def list_webhook_endpoints(principal: Admin, pool: Pool) -> WebhookEndpointList:
    return WebhookEndpointList(data=await service.list_endpoints(pool, principal.program_id))


@router.get("/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpoint, responses=responses(*ENDPOINT_ERRORS))
async def get_webhook_endpoint(endpoint_id: UUID, principal: Admin, pool: Pool) -> WebhookEndpoint:
    return await service.get_endpoint(pool, principal.program_id, endpoint_id)


@router.patch("/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpoint,
              responses=responses(*ENDPOINT_ERRORS, "webhook_url_invalid", "webhook_url_not_allowed"))
async def update_webhook_endpoint(endpoint_id: UUID, body: WebhookEndpointUpdate, principal: Admin, pool: Pool,
                                  request: Request) -> WebhookEndpoint:
    """Change fields given. `enabled: false` pauses deliveries; enabling again resumes them where they stopped
    (events of the pause included, within the feed's retention) and clears the failure state."""
    return await service.update_endpoint(pool, principal.program_id, endpoint_id, body, _allow_private(request))


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204, responses=responses(*ENDPOINT_ERRORS))
async def delete_webhook_endpoint(endpoint_id: UUID, principal: Admin, pool: Pool) -> Response:
    """Delete the endpoint, its pending deliveries and its log."""
    await service.delete_endpoint(pool, principal.program_id, endpoint_id)
    return Response(status_code=204)


@router.post("/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=SecretRotated,
             responses=responses(*ENDPOINT_ERRORS))
async def rotate_webhook_secret(endpoint_id: UUID, principal: Admin, pool: Pool,
                                body: SecretRotation | None = None) -> SecretRotated:
    """A new signing secret (in this answer only). For `grace_seconds` (default a day) deliveries carry
    signatures by both the new and the old secret, so receivers can switch over without losing any."""
    return await service.rotate_secret(pool, principal.program_id, endpoint_id, body or SecretRotation())


@router.get("/webhook-endpoints/{endpoint_id}/deliveries", response_model=WebhookDeliveryPage,
            responses=responses(*ENDPOINT_ERRORS, "invalid_cursor"))
async def list_webhook_deliveries(
    endpoint_id: UUID, principal: Admin, pool: Pool,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The endpoint's deliveries, newest first, each with its attempts (status, latency, the answer's start)."""
    return JSONText(await service.deliveries_json(pool, principal.program_id, endpoint_id, status, limit, cursor))


@router.post("/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry", status_code=202,
             response_model=WebhookDelivery, responses=responses(*ENDPOINT_ERRORS, "webhook_delivery_not_found"))
async def retry_webhook_delivery(endpoint_id: UUID, delivery_id: Annotated[str, Path(max_length=64)],
                                 principal: Admin, pool: Pool) -> Response:
    """Send the delivery again now, whatever its status (the same `webhook-id`: receivers deduplicate)."""
    return JSONText(await service.retry_delivery(pool, principal.program_id, endpoint_id, delivery_id),
                    status_code=202)


@router.post("/webhook-endpoints/{endpoint_id}/recover", status_code=202, response_model=DeliveriesRequeued,
             responses=responses(*ENDPOINT_ERRORS))
async def recover_webhook_deliveries(endpoint_id: UUID, body: DeliveryRecover, principal: Admin,
                                     pool: Pool) -> DeliveriesRequeued:
    """After an outage: send again every delivery made since `since` that failed for good."""
    return await service.recover(pool, principal.program_id, endpoint_id, body)


def _allow_private(request: Request) -> bool:
    return bool(request.app.state.settings.webhook_allow_private_urls)
