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
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import DomainError
from app.programs import queries as q
from app.programs.context import Principal

__all__ = ["Broadcast", "FailedAuthLimiter", "KeyCache", "KeyInvalidation", "Principal", "RateLimiter", "authenticate",
           "authorize", "bearer",
           "refusal_before_body", "require", "required_scopes"]
from app.programs.keys import hash_key, matches, parse_prefix
from app.programs.schemas import ProgramSettings

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer plk_...`")


class KeyCache:
    """Per-process cache of authenticated keys, so most requests skip the key lookup.

    Entries are found by the key's SHA-256 (no secret is kept in memory) and live ``ttl`` seconds. Every
    process listens on the Postgres channel ``points_ledger_keys`` (see ``KeyInvalidation``): revoking a
    key or changing a program's settings notifies all of them in the same transaction, and waits until each
    has acknowledged its eviction, so a revoked key is refused everywhere once the revocation has answered.
    While that listener is down the cache is bypassed.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.listening = False
        # issue-12 F1: bumped by every eviction and clear. A lookup reads it before going to the database and
        # hands it to put(): if anything was invalidated meanwhile, the lookup's answer may predate it (its
        # snapshot was taken before the revocation committed, its result arrived after the NOTIFY was handled)
        # and is not cached. Without this, such an answer stayed cached for the whole TTL.
        self.generation = 0
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

    def put(self, digest: bytes, principal: Principal, generation: int) -> None:
        if self.active and generation == self.generation:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[digest] = (time.monotonic() + self.ttl, principal)

    def evict(self, message: str) -> None:
        """``key:<id>`` or ``program:<id>``; anything else clears everything."""
        self.generation += 1
        kind, _, ident = message.partition(":")
        for k, (_, p) in list(self._items.items()):
            if (kind == "key" and str(p.key_id) == ident) or (kind == "program" and str(p.program_id) == ident):
                self._items.pop(k, None)
        if kind not in ("key", "program"):
            self._items.clear()
        for follower in self.followers:
            follower.evict(message)

    def clear(self) -> None:
        self.generation += 1
        self._items.clear()
        for follower in self.followers:
            follower.clear()


CHANNEL = "points_ledger_keys"
NOTIFY = f"SELECT pg_notify('{CHANNEL}', $1)"

# issue-12 F1: an invalidation is acknowledged by every process before the request that made it answers.
#
# Every process keeps one connection LISTENing on CHANNEL (KeyInvalidation). It shows itself as a listener
# (application_name LISTENER) only once its LISTEN is registered, and starts caching only after every
# invalidation in flight has committed (it waits for the shared side of INVALIDATION_LOCK). On a notification
# `<kind>:<id>:<token>` it evicts, then answers NOTIFY ACK_CHANNEL '<token>' from that connection, so the ack
# carries the listener's backend pid.
#
# The invalidating request (Broadcast): LISTENs on ACK_CHANNEL on a connection of its own; in its transaction
# takes INVALIDATION_LOCK, NOTIFYs, and reads the listeners' pids as its last statement; after commit waits, up
# to PL_INVALIDATION_ACK_TIMEOUT_MS, for an ack from each. A listener that started after that read cannot have
# cached the key before the commit (the lock held it back), and one that is gone has cleared its cache (a
# process whose listener is down bypasses its cache). So when every listener read has acked or gone, no process
# can answer from a stale cache entry. A listener still alive and silent at the deadline makes the request answer
# 503 revocation_unconfirmed: the revocation is committed; repeating the request repeats the broadcast.
LISTENER = "points-ledger-keys"
ACK_CHANNEL = "points_ledger_keys_ack"
ACK = f"SELECT pg_notify('{ACK_CHANNEL}', $1)"
INVALIDATION_LOCK = "hashtextextended('points_ledger_key_invalidation', 0)"
LOCK_INVALIDATIONS = f"SELECT pg_advisory_xact_lock({INVALIDATION_LOCK})"
WAIT_FOR_INVALIDATIONS = (f"SELECT pg_advisory_lock_shared({INVALIDATION_LOCK}), "
                          f"pg_advisory_unlock_shared({INVALIDATION_LOCK})")
LISTENERS = f"""
SELECT coalesce(array_agg(pid), '{{}}') FROM pg_stat_activity
WHERE application_name = '{LISTENER}' AND datname = current_database()
"""
LIVE_LISTENERS = f"""
SELECT coalesce(array_agg(pid), '{{}}') FROM pg_stat_activity
WHERE application_name = '{LISTENER}' AND datname = current_database() AND pid = ANY ($1::int[])
"""


def _split(payload: str) -> tuple[str, str | None]:
    """``kind:id:token`` -> (``kind:id``, token); a payload without a token has none."""
    kind, _, rest = payload.partition(":")
    ident, _, token = rest.partition(":")
    return f"{kind}:{ident}", token or None


async def announce_program_change(request: Request, conn: asyncpg.Connection, program_id: UUID) -> None:
    """In the transaction that changes a program's settings or configuration: every process evicts what it cached
    of the program (keys carry the settings; the version cache the configurations) when it commits, and this
    process at once (the notification reaches its own listener a moment later), so the caller's next request sees
    the change."""
    await conn.execute(NOTIFY, f"program:{program_id}")
    request.app.state.key_cache.evict(f"program:{program_id}")


class KeyInvalidation:
    """Keeps one connection LISTENing for invalidations, acknowledging each; reconnects when it is lost."""

    def __init__(self, dsn: str, cache: KeyCache, ack_timeout: float = 2.0) -> None:
        self.dsn = dsn
        self.cache = cache
        self.ack_timeout = ack_timeout
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._acks: asyncio.Queue[str] = asyncio.Queue()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-invalidation")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def broadcast(self) -> Broadcast:
        """An acknowledged invalidation, for a request that revokes a key or changes settings."""
        return Broadcast(self.dsn, self.ack_timeout)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        message, token = _split(payload)
        self.cache.evict(message)
        if token is not None:  # evicted: now say so (sent in order by _send_acks, on this connection)
            self._acks.put_nowait(token)

    def _on_lost(self, conn: Any) -> None:
        self.cache.listening = False
        self.cache.clear()
        self._lost.set()

    async def _send_acks(self, conn: asyncpg.Connection) -> None:
        while True:
            token = await self._acks.get()
            await conn.execute(ACK, token)

    async def _run(self) -> None:
        while True:
            conn = None
            acks: asyncio.Task[None] | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5,
                                             server_settings={"application_name": f"{LISTENER}-starting"})
                await conn.add_listener(CHANNEL, self._on_notify)
                conn.add_termination_listener(self._on_lost)
                self._lost.clear()
                # Visible to invalidating requests only now that the LISTEN is registered; caching only once the
                # invalidations in flight (which could not see this listener) have committed.
                await conn.execute(f"SET application_name = '{LISTENER}'")
                await conn.execute(WAIT_FOR_INVALIDATIONS)
                self.cache.clear()
                self.cache.listening = True
                acks = asyncio.create_task(self._send_acks(conn), name="key-invalidation-acks")
                await self._lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key invalidation listener: %s", type(exc).__name__)
            finally:
                self.cache.listening = False
                if acks is not None:
                    acks.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await acks
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(2)


class Broadcast:
    """One acknowledged invalidation (see the comment above ``LISTENER``)::

        async with invalidation.broadcast() as broadcast:
            async with pool.acquire() as conn, conn.transaction():
                ...  # the change
                await broadcast.publish(conn, f"key:{key_id}")
            unconfirmed = await broadcast.confirm()
    """

    def __init__(self, dsn: str, timeout: float) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self.token = uuid4().hex
        self.expected: set[int] = set()
        self.acked: set[int] = set()
        self._done = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> Broadcast:
        self._conn = await asyncpg.connect(self.dsn, timeout=5,
                                           server_settings={"application_name": "points-ledger-acks"})
        await self._conn.add_listener(ACK_CHANNEL, self._on_ack)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    def _on_ack(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload == self.token:
            self.acked.add(pid)
            if self.expected <= self.acked:
                self._done.set()

    async def publish(self, conn: asyncpg.Connection, message: str) -> None:
        """In the transaction of the change, after it: notify every listener, and note which there are."""
        await conn.execute(LOCK_INVALIDATIONS)
        await conn.execute(NOTIFY, f"{message}:{self.token}")
        self.expected = set(await conn.fetchval(LISTENERS))

    async def confirm(self) -> set[int]:
        """After the commit: wait for every listener's ack (or its end); the backend pids of the live listeners
        that did not acknowledge within the timeout (empty: every process has evicted)."""
        assert self._conn is not None
        if not self.expected <= self.acked:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.timeout)
        missing = self.expected - self.acked
        if not missing:
            return set()
        return set(await self._conn.fetchval(LIVE_LISTENERS, list(missing))) - self.acked


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


class _Buckets:
    """Token buckets by name, least recently used evicted beyond ``capacity`` (memory stays bounded whatever
    the number of addresses or prefixes a client invents)."""

    def __init__(self, rate: float, burst: int, capacity: int) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, name: str, now: float) -> float:
        tokens, stamp = self._items.get(name, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def wait(self, name: str, now: float) -> float | None:
        """Seconds until ``name`` may fail once more, or None when it may now."""
        tokens = self._tokens(name, now)
        return None if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, name: str, now: float) -> None:
        self._items[name] = (self._tokens(name, now) - 1, now)
        self._items.move_to_end(name)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class FailedAuthLimiter:
    """issue-12 F9: failed key lookups cost a token, per client address and per key prefix (each process on
    its own). With either bucket empty, a key that is not in the cache is refused (429
    ``authentication_rate_limited``, with ``Retry-After``) *before* any database lookup, so guessing keys
    costs the guesser time and costs the database nothing. Keys already cached (they were valid moments ago)
    are not held up; malformed keys never reach the database and cost nothing. Off when rate <= 0.

    Behind a proxy the address is the proxy's (``proxy_headers`` is off): the address bucket then limits the
    failed lookups of all its clients together, while valid cached keys keep working."""

    CAPACITY = 10_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.addresses = _Buckets(rate, burst, self.CAPACITY)
        self.prefixes = _Buckets(rate, burst, self.CAPACITY)

    def wait(self, address: str, prefix: str) -> float | None:
        if self.rate <= 0:
            return None
        now = time.monotonic()
        waits = [w for w in (self.addresses.wait(address, now), self.prefixes.wait(prefix, now)) if w is not None]
        return max(waits) if waits else None

    def failed(self, address: str, prefix: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.addresses.take(address, now)
        self.prefixes.take(prefix, now)


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
    limiter: FailedAuthLimiter = request.app.state.failed_auth_limiter
    address = request.client.host if request.client else "unknown"
    wait = limiter.wait(address, prefix)
    if wait is not None:
        raise DomainError("authentication_rate_limited", retry_after=max(1, math.ceil(wait)))
    # issue-12 F1: the cache generation before the lookup. If an invalidation arrives while the lookup is in
    # flight (its snapshot may predate the revocation), the answer is not cached.
    generation = cache.generation
    row = await request.app.state.pool.fetchrow(q.AUTHENTICATE, prefix)
    if row is None or not matches(key, row["key_hash"]) or row["revoked_at"] is not None:
        limiter.failed(address, prefix)
        raise DomainError("unauthorized", "Invalid or revoked API key.")
    principal = Principal(
        key_id=row["key_id"], program_id=row["program_id"], scopes=frozenset(row["scopes"]),
        currency=row["currency"], timezone=row["timezone"],
        settings=ProgramSettings.model_validate(row["settings"]),
    )
    cache.put(digest, principal, generation)
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
