"""The HTTP/1.1 protocol the service is served with: uvicorn's httptools protocol plus read deadlines.

uvicorn bounds only the idle time *between* requests on a keep-alive connection (``timeout_keep_alive``). A
client that opens a connection and sends nothing, or sends a request head or body a byte at a time, keeps its
socket, its slot and its memory for as long as it likes (issue 12 F6: slow clients kept sockets forever). Here:

* **Header deadline** (``PL_HEADER_TIMEOUT_SECONDS``, default 10): from the moment the server starts waiting for
  a request (the connection was accepted, or the first byte of the next request on a keep-alive connection
  arrived) until the request's head is complete. A connection that never sends a byte is closed silently at
  the deadline; one that sent part of a head gets ``408 request_timeout`` and is closed.
* **Body deadline** (``PL_BODY_TIMEOUT_SECONDS``, default 30): from the end of the head until the whole body has
  arrived (a total, not a gap between chunks: a client sending one byte every few seconds cannot stretch a
  1 MiB body over days). If the application has not answered yet, the client gets ``408 request_timeout`` and
  the connection is closed; the application sees the client disconnect while reading the body, so nothing
  is written (every write reads its whole body first).

Once a request is complete the deadlines stop: the application takes as long as it needs (Postgres'
``statement_timeout`` bounds that). ``0`` turns a deadline off. Between requests uvicorn's keep-alive timeout
(``PL_KEEP_ALIVE_SECONDS``) still applies.

The deadlines are read from the service's settings in each worker process (the command line sets them through
the environment, which the workers inherit).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _timeout_response() -> bytes:
    from app.api.problems import problem_body

    body = json.dumps(problem_body("request_timeout", "The request was not received in time; send it again "
                                   "faster, or on a new connection.")).encode()
    head = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n")
    return head + body


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a header and a body read deadline (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from app.config import get_settings

        settings = get_settings()
        self.header_timeout = settings.header_timeout_seconds
        self.body_timeout = settings.body_timeout_seconds
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_head = False

    # --- the deadline ---------------------------------------------------------------------------------------

    def _arm(self, seconds: float, handler: Any) -> None:
        self._disarm()
        if seconds > 0:
            self._deadline = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._reading_head:  # part of a request came: say why it ends
            self.transport.write(_timeout_response())
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(_timeout_response())
            # The application, waiting for the rest of the body, sees the client disconnect (its answer is
            # dropped: this one was sent instead).
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    # --- uvicorn's hooks ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, self._head_timed_out)  # a connection that never sends a request

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        if self._deadline is None:  # the first request keeps the deadline counted from the connection
            self._arm(self.header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._arm(self.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
