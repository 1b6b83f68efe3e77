"""Bearer API keys: who is calling, for which program, with which scopes.

Every authenticated request resolves to a ``Principal`` bound to exactly one program; every query
below the API layer takes that program id, so another program's data is simply not found (404).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import DomainError
from app.programs import queries as q
from app.programs.context import Principal

__all__ = ["KeyCache", "Principal", "RateLimiter", "authenticate", "bearer", "require"]
from app.programs.keys import matches, parse_prefix
from app.programs.schemas import ProgramSettings

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer plk_...`")


class KeyCache:
    """Optional per-process cache of authenticated keys (``PL_API_KEY_CACHE_SECONDS``; 0 disables).
    Revoking through this process evicts at once; other processes see a revocation within the TTL."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[str, tuple[float, Principal]] = {}

    def get(self, key: str) -> Principal | None:
        if self.ttl <= 0:
            return None
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, principal: Principal) -> None:
        if self.ttl > 0:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (time.monotonic() + self.ttl, principal)

    def evict_key_id(self, key_id: UUID) -> None:
        for k, (_, p) in list(self._items.items()):
            if p.key_id == key_id:
                del self._items[k]


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
    cached = cache.get(key)
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
    cache.put(key, principal)
    return principal


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: an authenticated principal holding at least one of ``scopes`` (admin holds all)."""

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Principal:
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

    dependency.__name__ = f"require_{'_or_'.join(scopes)}"
    return dependency
