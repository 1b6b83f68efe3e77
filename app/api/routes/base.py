"""The route class of every API router: literal paths before parameters; bodies strictly typed UTF-8 JSON.

* A literal path wins over a parameter of the same position. ``POST /v1/redemptions/quote`` and
  ``GET /v1/redemptions/{redemption_id}`` are siblings: left to Starlette, ``GET /v1/redemptions/quote``
  would be the redemption with id ``quote`` (a 422, or for string ids a lookup). A parameterised route here
  never claims a path that some route declares literally, so such a request matches only the literal route,
  by path and not by method: 405 with ``Allow``, as for any undeclared method.
* The body is validated as JSON, strictly, against the route's model before FastAPI validates the parsed
  object (laxly): a JSON value must have the type the document gives it. A date is a string ``YYYY-MM-DD``,
  not ``0``; an integer a JSON integer, not ``"1"``, ``1.0`` or ``true``; a boolean ``true``/``false``, not
  ``0`` or ``"true"``; a date-time a string, not a number. Refused: 422 ``validation_error`` naming the field
  (after authentication), nothing written.
* RFC 8259: JSON exchanged between systems is UTF-8. Python's ``json.loads`` of bytes would also accept UTF-16
  and UTF-32; here the body must decode as UTF-8 (a leading UTF-8 byte order mark is ignored, as RFC 8259
  section 8.1 allows parsers to). Anything else is a JSON decode error, answered 400 ``malformed_request``
  (after authentication, by the handlers of ``app.api.problems``), and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette._utils import get_route_path  # the path routes match against (root_path removed), as Starlette's
from starlette.routing import Match
from starlette.types import Scope

from app.observability import BodyTooLarge

_NOT_UTF8 = "the body is not UTF-8 (RFC 8259: JSON between systems is UTF-8)"


class Utf8JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if b"\x00" in body[:4]:  # no JSON text starts with a NUL: UTF-16 or UTF-32 without a BOM
                raise json.JSONDecodeError(_NOT_UTF8, "", 0)
            try:
                text = body.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError(_NOT_UTF8, "", exc.start) from None
            try:
                self._json = json.loads(text)
            except RecursionError:
                raise json.JSONDecodeError("the body is nested too deeply", "", 0) from None
        return self._json


class UnsupportedMediaType(Exception):
    """A body that is not sent as JSON (no ``Content-Type: application/json``): 415 ``unsupported_media_type``,
    after authentication (the handler authenticates first)."""

    def __init__(self, content_type: str | None) -> None:
        self.content_type = content_type
        super().__init__(f"Send the body as JSON with Content-Type: application/json, not {content_type or 'none'}.")


UNSUPPORTED_MEDIA_TYPE_RESPONSE = {
    "description": "Problem codes: `unsupported_media_type`",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


class StrictBodyError(RequestValidationError):
    """The body is JSON of the wrong types (raised before the route's dependencies ran: the handlers
    authenticate first)."""


def _json_media_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class ApiRoute(APIRoute):
    # Every literal path (no parameter) of every ApiRoute: a parameterised route does not match these.
    # (Paths as declared, so a prefix added by ``include_router(prefix=...)`` would not be seen; none is.)
    literal_paths: ClassVar[set[str]] = set()

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if not self.param_convertors:
            ApiRoute.literal_paths.add(self.path)
        # The body validated as JSON in strict mode: a JSON value must have the type the document gives it
        # (a JSON integer for an integer, true/false for a boolean, a string for a date), where pydantic's
        # lax mode on the parsed object would take 0 as a date, "1" or true as 1, 0 or "true" as a boolean.
        self._strict_body: TypeAdapter[Any] | None = None
        annotation = self.body_field.field_info.annotation if self.body_field is not None else None
        if annotation is not None and not self._embed_body_fields:
            self._strict_body = TypeAdapter(annotation)
        if self.body_field is not None:  # every route that reads a body may answer 415
            self.responses.setdefault(415, UNSUPPORTED_MEDIA_TYPE_RESPONSE)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE and self.param_convertors and get_route_path(scope) in ApiRoute.literal_paths:
            return Match.NONE, {}
        return match, child_scope

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()  # (APIRoute.__init__ calls this before _strict_body is set)

        async def api_handler(request: Request) -> Response:
            request = Utf8JsonRequest(request.scope, request.receive)
            content_type = request.headers.get("content-type")
            if self.body_field is not None and not _json_media_type(content_type) and await _has_body(request):
                raise UnsupportedMediaType(content_type)
            strict = self._strict_body
            if strict is not None and _json_media_type(content_type):
                await _validate_strictly(request, strict)
            return await handler(request)

        return api_handler


async def _has_body(request: Request) -> bool:
    try:
        return bool(await request.body())
    except BodyTooLarge:
        raise
    except Exception as exc:  # as FastAPI answers a body it cannot read
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


async def _validate_strictly(request: Utf8JsonRequest, adapter: TypeAdapter[Any]) -> None:
    try:
        body = await request.body()
    except BodyTooLarge:
        raise
    except Exception as exc:  # as FastAPI answers a body it cannot read
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
    if not body:
        return
    try:
        await request.json()
    except json.JSONDecodeError:
        return  # FastAPI reads it again and answers the decode error
    try:
        adapter.validate_json(body.decode("utf-8-sig"), strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            # pydantic's parser refuses JSON that json.loads takes (a lone surrogate, deep nesting): no verdict
            # here, FastAPI's own validation answers as it always did.
            return
        raise StrictBodyError([
            {**{k: v for k, v in e.items() if k in ("type", "msg", "input", "ctx")}, "loc": ("body", *e["loc"])}
            for e in errors
        ]) from None
