"""The webhook delivery worker: one per process (every process may run one).

Each pass: fan the feed's new changes out into deliveries (``ledger.webhook_fan_out``), claim due deliveries
(``ledger.webhook_claim``: a lease, under ``FOR UPDATE SKIP LOCKED``, so two processes never hold the same attempt),
send them signed, and record each result (``ledger.webhook_record``). A process that dies mid-send leaves leases
that lapse; the deliveries are claimed again: at least once, never lost. Sends run concurrently (up to
``webhook_concurrency``) and the claim keeps the slots full while slow receivers take their time; results are
written in batches.

Order: the claim hands out only the oldest pending delivery of each member and endpoint, so a member's changes
reach an endpoint one after the other, in feed order, as long as the receiver answers each in time; a delivery
being retried holds back that member's later ones (never other members'). Changes of the program itself go out
one after the other too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import httpx

from app.events import queries as q
from app.events.webhooks import address_allowed, parse_url, resolve, retry_delay, signed_headers

log = logging.getLogger(__name__)

USER_AGENT = "points-ledger-webhooks/1"
SNIPPET_BYTES = 1024
DNS_CACHE_SECONDS = 30.0
FAN_OUT_BATCH = 1000


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 64
    timeout_seconds: float = 10.0
    poll_seconds: float = 0.2
    allow_private: bool = False
    disable_after: timedelta = timedelta(days=5)

    @property
    def lease_seconds(self) -> int:
        """Longer than any send can take (connect + answer, each bounded by the timeout)."""
        return int(self.timeout_seconds * 3) + 5


@dataclass
class Claimed:
    delivery_id: int
    url: str
    secrets: list[str]
    attempts: int
    event_id: str
    body: str | None


@dataclass
class Outcome:
    delivery_id: int
    status_code: int | None
    latency_ms: int | None
    snippet: str | None
    error: str | None
    delivered: bool
    retry_at: datetime | None


class NotAllowed(Exception):
    pass


class WebhookWorker:
    def __init__(self, pool: asyncpg.Pool, settings: WorkerSettings,
                 client: httpx.AsyncClient | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self._client = client
        self._own_client = client is None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._results: list[Outcome] = []
        self._wake = asyncio.Event()
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self.sent = 0
        self.delivered = 0

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="webhook-worker")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout_seconds), follow_redirects=False, trust_env=False,
                limits=httpx.Limits(max_connections=self.settings.concurrency,
                                    max_keepalive_connections=self.settings.concurrency),
                headers={"user-agent": USER_AGENT, "content-type": "application/json"},
            )
        return self._client

    async def stop(self) -> None:
        """Stop claiming; let the sends in flight finish (bounded by the timeout) and record them."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self.settings.timeout_seconds + 1)
        with contextlib.suppress(Exception):
            await self._flush()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        last_fan_out = 0.0
        while True:
            try:
                now = time.monotonic()
                if now - last_fan_out >= self.settings.poll_seconds:
                    last_fan_out = now
                    await self.pool.fetchval(q.FAN_OUT, FAN_OUT_BATCH)
                await self._flush()
                claimed = await self._claim()
                if not claimed:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database restarting, connection lost: try again shortly
                log.warning("webhook worker: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(max(self.settings.poll_seconds, 1.0))

    async def run_until_idle(self, rounds: int = 100) -> int:
        """For tests and the CLI: fan out, send everything due now, record it; returns deliveries sent."""
        before = self.sent
        for _ in range(rounds):
            await self.pool.fetchval(q.FAN_OUT, FAN_OUT_BATCH)
            claimed = await self._claim()
            if self._inflight:
                await asyncio.wait(self._inflight)
            await self._flush()
            if not claimed:
                break
        return self.sent - before

    # --- claim, send, record -------------------------------------------------------------------------------------
    async def _claim(self) -> int:
        free = self.settings.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        rows = await self.pool.fetch(q.CLAIM, free, self.settings.lease_seconds)
        for row in rows:
            secrets = [row["secret"]] + ([row["previous_secret"]] if row["previous_secret"] else [])
            claimed = Claimed(row["delivery_id"], row["url"], secrets, row["attempts"], row["event_id"], row["body"])
            task = asyncio.create_task(self._deliver(claimed))
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return len(rows)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _flush(self) -> None:
        if not self._results:
            return
        results, self._results = self._results, []
        disable_after = self.settings.disable_after
        try:
            await self.pool.executemany(q.RECORD, [
                (r.delivery_id, r.status_code, r.latency_ms, r.snippet, r.error, r.delivered, r.retry_at,
                 disable_after) for r in results])
        except Exception:
            self._results = results + self._results  # the leases still hold them; try again on the next pass
            raise

    async def _deliver(self, claimed: Claimed) -> None:
        started = time.perf_counter()
        status: int | None = None
        snippet: str | None = None
        error: str | None = None
        try:
            if claimed.body is None:
                error = "the event is past the feed's retention"
            else:
                status, snippet = await self._send(claimed)
        except NotAllowed as exc:
            error = str(exc)
        except httpx.TimeoutException:
            error = f"no answer within {self.settings.timeout_seconds:g} s"
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # never let one delivery kill the worker; it is retried
            log.exception("webhook delivery %s", claimed.delivery_id)
            error = f"{type(exc).__name__}"
        latency_ms = int((time.perf_counter() - started) * 1000)
        delivered = status is not None and 200 <= status < 300
        self.sent += 1
        retry_at = None
        if delivered:
            self.delivered += 1
        elif claimed.body is not None:
            delay = retry_delay(claimed.attempts)
            retry_at = None if delay is None else datetime.now(UTC) + timedelta(seconds=delay)
        if status is not None and not delivered and error is None:
            error = f"HTTP {status}"
        self._results.append(Outcome(claimed.delivery_id, status, latency_ms, snippet, error,
                                     delivered, retry_at))

    async def _target(self, url: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """The URL to connect to, extra headers and request extensions. Unless private URLs are allowed, the host
        is resolved here, every address checked, and the connection made to a checked address (with the original
        Host and TLS server name), so a DNS answer that changed since the check cannot redirect the delivery."""
        if self.settings.allow_private:
            return url, {}, {}
        scheme, host, port = parse_url(url)
        key = (host, port)
        cached = self._dns.get(key)
        if cached is None or cached[0] < time.monotonic():
            cached = (time.monotonic() + DNS_CACHE_SECONDS, await resolve(host, port))
            self._dns[key] = cached
        addresses = cached[1]
        refused = [a for a in addresses if not address_allowed(a)]
        if refused or not addresses:
            raise NotAllowed(f"the host resolves to an address that is not public ({refused[0] if refused else '-'})")
        address = sorted(addresses, key=lambda a: ":" in a)[0]  # IPv4 first
        pinned = str(httpx.URL(url).copy_with(host=address))
        netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
        return pinned, {"host": netloc}, ({"sni_hostname": host} if scheme == "https" else {})

    async def _send(self, claimed: Claimed) -> tuple[int, str]:
        client = self._http()
        body = claimed.body.encode() if claimed.body is not None else b""
        url, extra_headers, extensions = await self._target(claimed.url)
        headers = signed_headers(claimed.secrets, claimed.event_id, int(time.time()), body) | extra_headers
        request = client.build_request("POST", url, content=body, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            read = b""
            async for chunk in response.aiter_raw():
                read += chunk
                if len(read) >= SNIPPET_BYTES:
                    break
        finally:
            await response.aclose()
        return response.status_code, read[:SNIPPET_BYTES].decode("utf-8", "replace")[:500]
