"""Slow clients against a real server (issue 12 F6): a request's head and body must arrive within their
deadlines, else 408 and the connection closes; before, a client that sent nothing, or a head or body a byte at a
time, kept its socket forever. Also the Idempotency-Key header as the real HTTP parser delivers it (F5)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="serves on SO_REUSEPORT sockets")

BIN = Path(sys.executable).parent / "points-ledger"
DEADLINE = 1.0  # seconds, for both the head and the body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_all(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``seconds``, and whether it closed the connection."""
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        return data, False


def _request(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += s.recv(65536)
        return head + b"\r\n\r\n" + body


def _create_program(database_url: str) -> str:
    async def run() -> str:
        from app.db.pool import create_pool
        from app.programs.schemas import ProgramCreate
        from app.programs.service import create_program

        pool = await create_pool(database_url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn, conn.transaction():
                _, key = await create_program(conn, ProgramCreate(name="slow", currency="EUR"))
        finally:
            await pool.close()
        return key.key

    return asyncio.run(run())


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[dict[str, Any]]:
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PL_SCHEDULER_ENABLED": "false", "PL_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                             "--no-migrate", "--header-timeout", str(DEADLINE), "--body-timeout", str(DEADLINE)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not come up"
            try:
                if _request(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").startswith(b"HTTP/1.1 200"):
                    break
            except OSError:
                time.sleep(0.2)
        yield {"port": port, "key": _create_program(database_url), "database_url": database_url}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(server):
    started = time.monotonic()
    connections = [socket.create_connection(("127.0.0.1", server["port"])) for _ in range(4)]  # on both workers
    try:
        for s in connections:
            data, closed = _read_all(s, DEADLINE + 4)
            assert closed and data == b"", data
        assert DEADLINE * 0.8 <= time.monotonic() - started < DEADLINE + 3
    finally:
        for s in connections:
            s.close()


def test_a_head_sent_too_slowly_gets_408_and_the_connection_closes(server):
    with socket.create_connection(("127.0.0.1", server["port"])) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # the head never ends
        started = time.monotonic()
        trickle_until = started + DEADLINE + 1
        closed = False
        data = b""
        while time.monotonic() < trickle_until and not closed:  # a byte now and then does not extend it
            try:
                s.sendall(b"X")
            except OSError:
                break
            chunk, closed = _read_all(s, 0.2)
            data += chunk
        if not closed:
            chunk, closed = _read_all(s, 3)
            data += chunk
        assert closed and data.startswith(b"HTTP/1.1 408 "), data
        assert json.loads(data.partition(b"\r\n\r\n")[2])["code"] == "request_timeout"
        assert time.monotonic() - started < DEADLINE + 3


def test_a_body_sent_too_slowly_gets_408_closes_and_writes_nothing(server):
    body = json.dumps({"member_id": "slow-1", "order_id": "slow-order", "currency": "EUR", "total": "10.00",
                       "lines": [{"sku": "A", "quantity": 1, "unit_price": "10.00"}]}).encode()
    head = (f"POST /v1/purchases HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {server['key']}\r\n"
            f"Idempotency-Key: slow-1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server["port"])) as s:
        s.sendall(head.encode() + body[:10])
        started = time.monotonic()
        data, closed = _read_all(s, DEADLINE + 4)
        assert closed and data.startswith(b"HTTP/1.1 408 "), data
        assert time.monotonic() - started < DEADLINE + 3
    # nothing was posted: the same order goes through afterwards, as a first post (201)
    r = _request(server["port"], head.encode() + body)
    assert r.startswith(b"HTTP/1.1 201 "), r[:300]


def test_requests_within_the_deadlines_are_served_and_keep_alive_still_works(server):
    with socket.create_connection(("127.0.0.1", server["port"])) as s:
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n"):  # a head in pieces, in time
            s.sendall(part)
            time.sleep(DEADLINE / 5)
        data, _ = _read_all(s, 1)
        assert data.startswith(b"HTTP/1.1 200 "), data
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # the same connection, a second request
        data, _ = _read_all(s, 1)
        assert data.startswith(b"HTTP/1.1 200 "), data


def test_idempotency_key_whitespace_and_duplicates_through_the_real_parser(server):
    """F5 end to end: the HTTP parser in front of the application kept trailing whitespace and dropped leading
    whitespace; both are stripped now, and two headers are refused."""
    body = json.dumps({"member_id": "ws-1", "order_id": "ws-order", "currency": "EUR", "total": "3.00",
                       "lines": [{"sku": "A", "quantity": 1, "unit_price": "3.00"}]}).encode()

    def post(idempotency_headers: str) -> tuple[bytes, dict[str, Any]]:
        raw = (f"POST /v1/purchases HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {server['key']}\r\n"
               f"{idempotency_headers}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        answer = _request(server["port"], raw.encode() + body)
        head, _, payload = answer.partition(b"\r\n\r\n")
        return head, json.loads(payload)

    head, first = post("Idempotency-Key: ws-key   \r\n")
    assert head.startswith(b"HTTP/1.1 201 "), head
    for variant in ("Idempotency-Key:    ws-key\r\n", "Idempotency-Key: ws-key\r\n", "Idempotency-Key: ws-key \t\r\n"):
        head, again = post(variant)
        assert head.startswith(b"HTTP/1.1 201 ") and b"idempotent-replayed: true" in head.lower(), (variant, head)
        assert again == first
    head, refused = post("Idempotency-Key: ws-key\r\nIdempotency-Key: other\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and refused["code"] == "idempotency_key_invalid", refused
