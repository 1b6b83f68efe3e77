"""The fast lane of the hottest read: `GET /v1/members/{member_id}/balance`, the request every app screen makes.

A raw ASGI layer in front of the FastAPI router answers the read's happy path only: a key already in the
per-process cache that may read, within its rate limit, a well-formed member reference, a member that exists.
It calls the same functions the route does (``authorize``'s pieces, ``service.balance_json``, which renders the
JSON in Postgres) and answers the same bytes; everything else (no key, an unknown key, a missing scope, a bad
reference, an unknown member, a database error) falls through to the route, which answers it with its
problem+json as for any other request. What the lane saves is FastAPI's per-request work around one indexed
statement: routing, dependency solving, parameter validation and the response object (measured in bench/).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.ledger import service
from app.programs.keys import hash_key

PATH = re.compile(r"^/v1/members/([A-Za-z0-9._:@+\-]{1,128})/balance$")  # MemberRef's own pattern and length


class FastReads:
    def __init__(self, app: ASGIApp, state: Any, routes: list[Any]) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state: key cache, rate limiter, pool
        # the balance route, so that metrics and logs name the request as the router would
        self.route = next(r for r in routes if getattr(r, "path", None) == "/v1/members/{member_id}/balance")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("query_string"):
            match = PATH.match(scope["path"])
            if match is not None:
                body = await self._balance(scope, match.group(1))
                if body is not None:
                    scope["route"] = self.route
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    async def _balance(self, scope: Scope, member_ref: str) -> bytes | None:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        if authorization is None or authorization[:7].lower() != b"bearer " or b"origin" in headers:
            return None  # no key; or a browser's cross-origin request (the route's CORS layer answers it)
        principal = self.state.key_cache.get(hash_key(authorization[7:].strip().decode("latin-1")))
        if principal is None or not principal.allows("read"):
            return None
        if self.state.rate_limiter.check(principal.key_id) is not None:
            return None  # the route answers 429 (checking again: a refused key stays refused)
        try:
            text = await service.balance_json(self.state.pool, principal.program_id, member_ref)
        except Exception:  # member_not_found (DomainError), the database: the route answers them
            return None
        return text.encode()
