"""A real webhook receiver on 127.0.0.1 (uvicorn, in the test's event loop) that verifies every delivery with the
reference implementation of Standard Webhooks (the `standardwebhooks` package), as a customer's receiver would."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified_by: list[int]  # indexes of the receiver's secrets that verify it

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """``answer(n)`` decides the n-th request's (status, delay seconds); default: 200 at once."""

    secrets: list[str] = field(default_factory=list)
    answer: Callable[[int], tuple[int, float]] = lambda n: (200, 0.0)
    received: list[Delivery] = field(default_factory=list)  # every request, answered 2xx or not
    accepted: list[Delivery] = field(default_factory=list)  # those answered 2xx
    url: str = ""
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        verified = []
        for i, secret in enumerate(self.secrets):
            with contextlib.suppress(WebhookVerificationError):
                Webhook(secret).verify(body, headers)
                verified.append(i)
        delivery = Delivery(headers, body, verified)
        n = len(self.received)
        self.received.append(delivery)
        status, delay = self.answer(n)
        if delay:
            await asyncio.sleep(delay)
        if 200 <= status < 300:
            self.accepted.append(delivery)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": f"answer {status}".encode()})

    async def start(self, port: int = 0) -> None:
        config = uvicorn.Config(self, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
            if self._task.done():
                self._task.result()
        sock = self._server.servers[0].sockets[0]
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        return [d.event for d in self.accepted]


@contextlib.asynccontextmanager
async def running(receiver: Receiver) -> AsyncIterator[Receiver]:
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
