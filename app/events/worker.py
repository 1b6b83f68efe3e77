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

import aiohttp
import asyncpg
from yarl import URL

from app.events import queries as q
from app.events.webhooks import address_allowed, parse_url, resolve, retry_delay, signed_headers

log = logging.getLogger(__name__)

USER_AGENT = "points-ledger-webhooks/1"
SNIPPET_BYTES = 1024
DNS_CACHE_SECONDS = 30.0
FAN_OUT_BATCH = 1000
WAKE_SECONDS = 5.0  # how often waiting deliveries that head their queue are woken (races, see 95_webhooks.sql)
BATCH_WAIT_SECONDS = 0.005  # with sends in flight, how long to wait for more to finish before claiming again


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
                 client: aiohttp.ClientSession | None = None) -> None:
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
        self._batch = max(1, settings.concurrency // 4)

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="webhook-worker")

    def _http(self) -> aiohttp.ClientSession:
        """aiohttp, not httpx, for the sends: on this machine class httpx's connection pool made ~300-500 requests/s
        to a local receiver at 64 concurrent sends, aiohttp ~5,800 (bench/README.md, Events)."""
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.concurrency, use_dns_cache=False),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
                headers={"user-agent": USER_AGENT, "content-type": "application/json"},
                trust_env=False, auto_decompress=False, skip_auto_headers=("accept-encoding",),
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
            await self._client.close()
            self._client = None

    async def _loop(self) -> None:
        fan_out = asyncio.create_task(self._fan_out_loop(), name="webhook-fan-out")
        try:
            while True:
                try:
                    await self._flush()
                    free = self.settings.concurrency - len(self._inflight)
                    # Claim in batches (a quarter of the slots at least), not one delivery per finished send.
                    claimed = await self._claim() if free >= self._batch or not self._inflight else 0
                    if claimed == 0 or claimed < free:  # all slots busy, or nothing more due: wait
                        self._wake.clear()
                        idle = claimed == 0 and not self._inflight
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(),
                                                   self.settings.poll_seconds if idle else BATCH_WAIT_SECONDS)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # database restarting, connection lost: try again shortly
                    log.warning("webhook worker: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(max(self.settings.poll_seconds, 1.0))
        finally:
            fan_out.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fan_out

    async def _fan_out_loop(self) -> None:
        """New changes into deliveries, every poll interval (at once again while there is a backlog), and now and
        then the queues a race left with nothing due (ledger.webhook_wake)."""
        last_wake = 0.0
        while True:
            try:
                added = await self.pool.fetchval(q.FAN_OUT, FAN_OUT_BATCH)
                if time.monotonic() - last_wake >= WAKE_SECONDS:
                    last_wake = time.monotonic()
                    await self.pool.fetchval(q.WAKE, None)
                if added:
                    self._wake.set()
                if added < FAN_OUT_BATCH:
                    await asyncio.sleep(self.settings.poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook fan-out: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(max(self.settings.poll_seconds, 1.0))

    async def run_until_idle(self, rounds: int = 100) -> int:
        """For tests and the CLI: fan out, send everything due now, record it; returns deliveries sent."""
        before = self.sent
        for _ in range(rounds):
            await self.pool.fetchval(q.FAN_OUT, FAN_OUT_BATCH)
            await self.pool.fetchval(q.WAKE, None)
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
        except TimeoutError:
            error = f"no answer within {self.settings.timeout_seconds:g} s"
        except (aiohttp.ClientError, OSError) as exc:
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

    async def _target(self, url: str) -> tuple[URL, dict[str, str], str | None]:
        """The URL to connect to, extra headers and the TLS server name. Unless private URLs are allowed, the host
        is resolved here, every address checked, and the connection made to a checked address (with the original
        Host and TLS server name), so a DNS answer that changed since the check cannot redirect the delivery."""
        if self.settings.allow_private:
            return URL(url), {}, None
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
        netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
        return URL(url).with_host(address), {"host": netloc}, (host if scheme == "https" else None)

    async def _send(self, claimed: Claimed) -> tuple[int, str]:
        session = self._http()
        body = claimed.body.encode() if claimed.body is not None else b""
        url, extra_headers, server_hostname = await self._target(claimed.url)
        headers = signed_headers(claimed.secrets, claimed.event_id, int(time.time()), body) | extra_headers
        async with session.post(url, data=body, headers=headers, allow_redirects=False,
                                server_hostname=server_hostname) as response:
            read = await response.content.read(SNIPPET_BYTES)
            return response.status, read.decode("utf-8", "replace")[:500]
