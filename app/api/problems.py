"""problem+json (RFC 9457): the one error format of the API, its handlers and its OpenAPI declaration."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.auth import refusal_before_body
from app.api.routes.base import StrictBodyError, UnsupportedMediaType
from app.errors import CATALOG, DomainError
from app.observability import BodyTooLarge, request_id_var

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://points-ledger.dev/problems/"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An error. ``code`` is stable and machine-readable; other fields may carry context (for example
    ``available`` with ``insufficient_points``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


def problem_body(code: str, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    status, title = CATALOG[code]
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "code": code,
        "detail": detail or title,
    }
    body.update(extra)
    rid = request_id_var.get()
    if rid:
        body["request_id"] = rid
    return body


def problem_response(code: str, detail: str | None = None, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    body = problem_body(code, detail, **extra)
    return JSONResponse(body, status_code=body["status"], media_type="application/problem+json",
                        headers=headers)


def domain_error_body(exc: DomainError) -> dict[str, Any]:
    return problem_body(exc.code, exc.detail, **exc.extra)


_CONNECTION_ERRORS = (
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a connection reset while Postgres shuts down
    asyncpg.PostgresConnectionError,
    ConnectionError,
    TimeoutError,
    OSError,  # e.g. the unix socket of a stopped Postgres is gone: environmental, never the client's fault
)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _caused_by(exc, BodyTooLarge):
            return problem_response("payload_too_large")
        raw = exc.errors()
        errors = [
            {"loc": [str(x) if not isinstance(x, int) else x for x in e.get("loc", ())],
             "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in raw
        ]
        body_first = any(e["type"] == "json_invalid" for e in errors)
        if body_first or isinstance(exc, StrictBodyError):
            # The body was parsed or typed before the route's dependencies ran: authenticate first.
            refusal = await refusal_before_body(request)
            if refusal is not None:
                return domain_error_response(refusal)
        if body_first:
            reasons = sorted({str((e.get("ctx") or {}).get("error", "")) for e in raw} - {""})
            detail = "The body is not valid JSON" + (f": {'; '.join(reasons)}." if reasons else ".")
            return problem_response("malformed_request", detail, errors=errors)
        if errors and all(_is_missing_idempotency_key(e) for e in errors):
            return problem_response("idempotency_key_missing", "Send an Idempotency-Key header with every write.")
        return problem_response("validation_error", _summary(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if _caused_by(exc, BodyTooLarge):  # the limit hit while FastAPI was reading a chunked body
            return problem_response("payload_too_large")
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "malformed_request",
                401: "unauthorized", 415: "unsupported_media_type"}.get(exc.status_code)
        if code is None:
            code = "validation_error" if exc.status_code < 500 else "internal_error"
        if code == "malformed_request":  # a body FastAPI could not read: authentication still comes first
            refusal = await refusal_before_body(request)
            if refusal is not None:
                return domain_error_response(refusal)
        return problem_response(code, str(exc.detail) if exc.detail else None, headers=getattr(exc, "headers", None))

    @app.exception_handler(UnsupportedMediaType)
    async def _unsupported_media_type(request: Request, exc: UnsupportedMediaType) -> JSONResponse:
        refusal = await refusal_before_body(request)  # authentication (and the scope) come before the body
        if refusal is not None:
            return domain_error_response(refusal)
        return problem_response("unsupported_media_type", str(exc))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: Exception) -> JSONResponse:
        return problem_response("payload_too_large")

    @app.exception_handler(asyncpg.CharacterNotInRepertoireError)
    @app.exception_handler(asyncpg.UntranslatableCharacterError)
    @app.exception_handler(asyncpg.InvalidTextRepresentationError)
    async def _unstorable_text(request: Request, exc: Exception) -> JSONResponse:
        return problem_response("validation_error", "The request contains text Postgres cannot store (a NUL "
                                "character or a lone surrogate).")

    @app.exception_handler(asyncpg.DataError)
    async def _unencodable_value(request: Request, exc: Exception) -> JSONResponse:
        # asyncpg could not encode a request's value for Postgres (a date-time whose UTC instant falls before
        # year 1, say): the request's fault, refused like any invalid value; the transaction rolled back.
        log.warning("value Postgres cannot represent: %s", str(exc)[:200])
        return problem_response("validation_error", "The request contains a value Postgres cannot represent "
                                "(for example a date-time out of range).")

    @app.exception_handler(asyncpg.QueryCanceledError)
    async def _timeout(request: Request, exc: Exception) -> JSONResponse:
        log.warning("statement timeout")
        return problem_response("database_timeout", headers={"Retry-After": "1"})

    @app.exception_handler(asyncpg.LockNotAvailableError)
    async def _busy(request: Request, exc: Exception) -> JSONResponse:
        return problem_response("member_busy", headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc)


def domain_error_response(exc: DomainError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.code in ("member_busy", "request_in_progress", "revocation_unconfirmed") \
        else None
    if exc.code in ("rate_limited", "authentication_rate_limited"):
        headers = {"Retry-After": str(exc.extra.get("retry_after", 1))}
    return problem_response(exc.code, exc.detail, headers=headers, **exc.extra)


def _is_missing_idempotency_key(error: dict[str, Any]) -> bool:
    loc = [str(x).lower() for x in error["loc"]]
    return error["type"] == "missing" and loc == ["header", "idempotency-key"]


def unexpected_error_response(exc: BaseException) -> JSONResponse:
    """The answer to an exception nothing else handled: 503 for a database that is down, else a bare 500."""
    if isinstance(exc, _CONNECTION_ERRORS) or (isinstance(exc, Exception) and _is_connection_failure(exc)):
        log.warning("database unavailable: %s", type(exc).__name__)
        return problem_response("database_unavailable", headers={"Retry-After": "1"})
    log.error("unhandled error", exc_info=exc)
    return problem_response("internal_error")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_connection_failure(exc: Exception) -> bool:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in errors[:5]]
    return "; ".join(parts) or "invalid request"


def responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status with the problem codes it may carry."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in (*codes, "validation_error", "malformed_request", "unauthorized", "rate_limited",
                 "authentication_rate_limited", "internal_error", "database_unavailable", "database_timeout"):
        status = CATALOG[code][0]
        if code not in by_status[status]:
            by_status[status].append(code)
    return {
        status: {
            "model": Problem,
            "description": "Problem codes: " + ", ".join(f"`{c}`" for c in sorted(cs)),
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, cs in sorted(by_status.items())
    }
