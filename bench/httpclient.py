"""A minimal HTTP/1.1 keep-alive client over raw asyncio sockets, for load generation.

One ``Connection`` = one TCP connection with at most one request in flight (no pipelining), like a wrk
connection. Requests are pre-built bytes; responses are parsed by ``httptools`` (the C parser uvicorn uses).
Only what the benchmark needs is kept: status, body, and whether ``Idempotent-Replayed`` was set.
httpx costs ~10x more client CPU per request, which on a 2-core machine would steal the server's CPU.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools


class Response:
    __slots__ = ("status", "body", "replayed")

    def __init__(self, status: int, body: bytes, replayed: bool) -> None:
        self.status = status
        self.body = body
        self.replayed = replayed

    def json(self) -> Any:
        return json.loads(self.body)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self._body: list[bytes] = []
        self._replayed = False
        self.closed = False
        self.made: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio classes
        if not self.made.done():
            self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []
        self._replayed = False

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self.parser.get_status_code(), b"".join(self._body), self._replayed))
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class _ProtocolWithHeaders(_Protocol):
    """Also looks at response headers (``Idempotent-Replayed``). A separate class because httptools calls
    ``on_header`` for every header when the method exists, which costs client CPU when nobody needs it."""

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"idempotent-replayed":
            self._replayed = value.strip().lower() == b"true"


class Connection:
    """A keep-alive connection that reconnects by itself after the server closed it."""

    def __init__(self, host: str, port: int, *, headers: bool = False) -> None:
        self.host = host
        self.port = port
        self._factory = _ProtocolWithHeaders if headers else _Protocol
        self._proto: _Protocol | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(self._factory, self.host, self.port)
        await proto.made  # uvloop may return before connection_made() has run
        return proto

    async def connect(self) -> None:
        """Open the connection now (else the first request does)."""
        if self._proto is None or self._proto.closed:
            self._proto = await self._connect()

    async def request(self, data: bytes) -> Response:
        proto = self._proto
        if proto is None or proto.closed:
            proto = self._proto = await self._connect()
        assert proto.transport is not None
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        proto.waiter = waiter
        proto.transport.write(data)
        return await waiter

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


class RequestBuilder:
    """Builds request bytes with a fixed header block (host, auth) computed once."""

    def __init__(self, host: str, port: int, api_key: str | None = None) -> None:
        head = f"Host: {host}:{port}\r\nUser-Agent: points-ledger-bench\r\n"
        if api_key:
            head += f"Authorization: Bearer {api_key}\r\n"
        self._head = head.encode()

    def build(self, method: str, path: str, body: Any = None, idempotency_key: str | None = None) -> bytes:
        extra = b""
        if idempotency_key is not None:
            extra = b"Idempotency-Key: " + idempotency_key.encode() + b"\r\n"
        if body is None:
            payload = b""
            if method in ("GET", "HEAD"):
                return b"".join((method.encode(), b" ", path.encode(), b" HTTP/1.1\r\n", self._head, extra,
                                 b"\r\n"))
        else:
            payload = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        return b"".join((
            method.encode(), b" ", path.encode(), b" HTTP/1.1\r\n", self._head, extra,
            b"Content-Type: application/json\r\nContent-Length: ", str(len(payload)).encode(), b"\r\n\r\n",
            payload,
        ))
