"""`points-ledger serve --workers N`: each worker accepts on its own SO_REUSEPORT socket, so keep-alive
connections opened in a burst are shared out over the workers (with uvicorn's shared socket, one worker took
nearly all of them); SIGTERM stops everything gracefully; a parent killed with SIGKILL leaves no worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing is Linux's")

BIN = Path(sys.executable).parent / "points-ledger"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    return data


def _start(database_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url, "PL_SCHEDULER_ENABLED": "false", "PL_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                             "--no-migrate"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if _get(s, "/healthz").startswith(b"HTTP/1.1 200") and len(_workers(proc)) == 2:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve did not come up")


def _workers(proc: subprocess.Popen[bytes]) -> list[int]:
    """The worker processes (multiprocessing also starts a resource tracker beside them)."""
    return [c.pid for c in psutil.Process(proc.pid).children()
            if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]


def _gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_keep_alive_connections_spread_over_workers_and_sigterm_stops_all(database_url):
    port = _free_port()
    proc = _start(database_url, port)
    workers = _workers(proc)
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(24)]
    try:
        for c in connections:
            assert _get(c, "/healthz").startswith(b"HTTP/1.1 200")
        served = {pid: sum(1 for k in psutil.Process(pid).net_connections("tcp")
                           if k.status == psutil.CONN_ESTABLISHED and k.laddr.port == port) for pid in workers}
        # 24 connections hashed over 2 sockets: all on one would have probability 2 * 2**-24
        assert all(count > 0 for count in served.values()), served
        assert sum(served.values()) == len(connections)
    finally:
        for c in connections:
            c.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert _gone(workers, 10)


def test_workers_die_with_a_killed_parent(database_url):
    port = _free_port()
    proc = _start(database_url, port)
    workers = _workers(proc)
    proc.kill()
    proc.wait(timeout=10)
    assert _gone(workers, 15), "orphaned workers still serving the port"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
