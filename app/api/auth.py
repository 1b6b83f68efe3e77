"""Bearer API keys: who is calling, for which program, with which scopes.

Every authenticated request resolves to a ``Principal`` bound to exactly one program; every query
below the API layer takes that program id, so another program's data is simply not found (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import DomainError
from app.programs import queries as q
from app.programs.context import Principal

__all__ = ["KeyCache", "KeyInvalidation", "Principal", "RateLimiter", "authenticate", "authorize", "bearer",
           "refusal_before_body", "require", "required_scopes"]
from app.programs.keys import hash_key, matches, parse_prefix
from app.programs.schemas import ProgramSettings

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer plk_...`")


class KeyCache:
    """Per-process cache of authenticated keys, so most requests skip the key lookup.

    Entries are found by the key's SHA-256 (no secret is kept in memory) and live ``ttl`` seconds. Every
    process listens on the Postgres channel ``points_ledger_keys`` (see ``KeyInvalidation``): revoking a
    key or changing a program's settings notifies all of them in the same transaction, so a revoked key is
    refused everywhere at once. While that listener is down the cache is bypassed.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.listening = False
        self._items: dict[bytes, tuple[float, Principal]] = {}
        # Other per-process caches invalidated by the same messages (the programs' configuration versions).
        self.followers: list[Any] = []

    @property
    def active(self) -> bool:
        return self.ttl > 0 and self.listening

    def get(self, digest: bytes) -> Principal | None:
        if not self.active:
            return None
        item = self._items.get(digest)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, digest: bytes, principal: Principal) -> None:
        if self.active:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[digest] = (time.monotonic() + self.ttl, principal)

    def evict(self, message: str) -> None:
        """``key:<id>`` or ``program:<id>``; anything else clears everything."""
        kind, _, ident = message.partition(":")
        for k, (_, p) in list(self._items.items()):
            if (kind == "key" and str(p.key_id) == ident) or (kind == "program" and str(p.program_id) == ident):
                self._items.pop(k, None)
        if kind not in ("key", "program"):
            self._items.clear()
        for follower in self.followers:
            follower.evict(message)

    def clear(self) -> None:
        self._items.clear()
        for follower in self.followers:
            follower.clear()


CHANNEL = "points_ledger_keys"
NOTIFY = f"SELECT pg_notify('{CHANNEL}', $1)"


async def announce_program_change(request: Request, conn: asyncpg.Connection, program_id: UUID) -> None:
    """In the transaction that changes a program's settings or configuration: every process evicts what it cached
    of the program (keys carry the settings; the version cache the configurations) when it commits, and this
    process at once (the notification reaches its own listener a moment later), so the caller's next request sees
    the change."""
    await conn.execute(NOTIFY, f"program:{program_id}")
    request.app.state.key_cache.evict(f"program:{program_id}")


class KeyInvalidation:
    """Keeps one connection LISTENing for invalidations; reconnects when it is lost."""

    def __init__(self, dsn: str, cache: KeyCache) -> None:
        self.dsn = dsn
        self.cache = cache
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-invalidation")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.cache.evict(payload)

    def _on_lost(self, conn: Any) -> None:
        self.cache.listening = False
        self.cache.clear()
        self._lost.set()

    async def _run(self) -> None:
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                await conn.add_listener(CHANNEL, self._on_notify)
                conn.add_termination_listener(self._on_lost)
                self._lost.clear()
                self.cache.clear()
                self.cache.listening = True
                await self._lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key invalidation listener: %s", type(exc).__name__)
            finally:
                self.cache.listening = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(2)


class RateLimiter:
    """Token bucket per API key, in process (each worker limits on its own). Off when rate <= 0."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._buckets: dict[UUID, tuple[float, float]] = {}

    def check(self, key_id: UUID) -> float | None:
        """None when the request may go on, else the seconds to wait."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens < 1:
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        self._buckets[key_id] = (tokens - 1, now)
        return None


async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise DomainError("unauthorized", "Send an API key as `Authorization: Bearer <key>`.")
    key = credentials.credentials
    cache: KeyCache = request.app.state.key_cache
    digest = hash_key(key)
    cached = cache.get(digest)
    if cached is not None:
        return cached
    prefix = parse_prefix(key)
    if prefix is None:
        raise DomainError("unauthorized", "Malformed API key.")
    row = await request.app.state.pool.fetchrow(q.AUTHENTICATE, prefix)
    if row is None or not matches(key, row["key_hash"]) or row["revoked_at"] is not None:
        raise DomainError("unauthorized", "Invalid or revoked API key.")
    principal = Principal(
        key_id=row["key_id"], program_id=row["program_id"], scopes=frozenset(row["scopes"]),
        currency=row["currency"], timezone=row["timezone"],
        settings=ProgramSettings.model_validate(row["settings"]),
    )
    cache.put(digest, principal)
    return principal


async def authorize(request: Request, credentials: HTTPAuthorizationCredentials | None,
                    scopes: tuple[str, ...]) -> Principal:
    """The principal of a valid key holding one of ``scopes`` (admin holds all), within its rate limit;
    else ``DomainError`` 401 ``unauthorized``, 429 ``rate_limited`` or 403 ``insufficient_scope``."""
    principal = await authenticate(request, credentials)
    wait = request.app.state.rate_limiter.check(principal.key_id)
    if wait is not None:
        raise DomainError("rate_limited", retry_after=max(1, math.ceil(wait)))
    if not any(principal.allows(s) for s in scopes):
        raise DomainError(
            "insufficient_scope", f"This operation needs the scope {' or '.join(scopes)}.",
            required_scopes=list(scopes),
        )
    return principal


# Every dependency ``require`` made, with its scopes: the error handlers look up a route's access rule here
# when they must answer before the route's own dependencies ran (a body that could not be parsed).
_REQUIRED_SCOPES: dict[Callable[..., Any], tuple[str, ...]] = {}


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: an authenticated principal holding at least one of ``scopes`` (admin holds all)."""

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Principal:
        return await authorize(request, credentials, scopes)

    dependency.__name__ = f"require_{'_or_'.join(scopes)}"
    _REQUIRED_SCOPES[dependency] = scopes
    return dependency


def required_scopes(dependant: Any) -> tuple[str, ...] | None:
    """The scopes a route's ``require(...)`` dependency asks for (searched through its dependency tree), or
    None for a public route."""
    stack = [dependant]
    while stack:
        d = stack.pop()
        scopes = _REQUIRED_SCOPES.get(d.call) if d.call is not None else None
        if scopes is not None:
            return scopes
        stack.extend(d.dependencies)
    return None


async def refusal_before_body(request: Request) -> DomainError | None:
    """For a request whose body could not be parsed, so its route's dependencies never ran: the refusal its
    access rule gives (401 without a valid key, 403 without the scope, 429 over the rate limit), if any.
    Authentication comes before the body, whatever the body is."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    scopes = required_scopes(dependant) if dependant is not None else None
    if scopes is None:
        return None
    try:
        await authorize(request, await bearer(request), scopes)
    except DomainError as refusal:
        return refusal
    return None
