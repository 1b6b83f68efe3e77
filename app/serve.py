"""Run an ASGI app under uvicorn with W worker processes, each accepting on its own ``SO_REUSEPORT`` socket.

Why not ``uvicorn --workers``: there, all workers accept from one shared listening socket, and whichever
worker is awake takes the connections. Clients that keep their connections open (POS terminals, a load
balancer's pool, a checkout service) open them in a burst, and one worker ends up with nearly all of them:
measured with the benchmark's 32 keep-alive connections and 2 workers, one worker served ~98% of the
requests (py-spy samples 3,806 vs 57) while the other idled, so the service used one core of two. With
``SO_REUSEPORT`` every worker listens on a socket of its own and the kernel spreads new connections across
them by a hash of the connection's addresses, so keep-alive connections are shared out evenly.

The parent only supervises: it starts the workers, restarts one that dies, and on SIGTERM or SIGINT asks
every worker to shut down gracefully (in-flight requests finish), waits, and exits. Workers die with their
parent (``PR_SET_PDEATHSIG``): a parent killed with SIGKILL leaves no orphan serving the port beside its
successor. Linux only (``SO_REUSEPORT`` load balancing); elsewhere, or with one worker, or for port 0,
this is plain ``uvicorn.run``.

Every worker speaks HTTP through ``app.http_protocol.TimedHttpToolsProtocol``: uvicorn's httptools protocol with
a deadline for a request's head and one for its body (``PL_HEADER_TIMEOUT_SECONDS``, ``PL_BODY_TIMEOUT_SECONDS``),
so a slow client cannot hold a socket forever (issue 12 F6).

Also a command, used by the benchmark to serve its raw ceiling app exactly as the service is served::

    python -m app.serve bench.rawapp:app --host 127.0.0.1 --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

import uvicorn

log = logging.getLogger("points_ledger.serve")

PR_SET_PDEATHSIG = 1


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not glibc Linux: the parent's SIGTERM handling still stops workers
        pass


def _worker(app: str, host: str, port: int, options: dict[str, Any], json_log_level: str | None) -> None:
    _die_with_parent()
    if os.getppid() == 1:  # the parent died before the line above took effect
        return
    if json_log_level is not None:  # a spawned process starts without the parent's logging configuration
        from app.observability import configure_logging

        configure_logging(json_log_level)
    sock = _listen(host, port)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options)).run(sockets=[sock])


def run(app: str, *, host: str, port: int, workers: int, json_log_level: str | None = None, **options: Any) -> None:
    """Serve ``app`` (an import string; ``factory=True`` in ``options`` for a factory). ``json_log_level``:
    configure the service's JSON logs in each worker. The HTTP protocol is ``TimedHttpToolsProtocol`` unless
    ``options`` names another (``http=``)."""
    from app.http_protocol import TimedHttpToolsProtocol

    options.setdefault("http", TimedHttpToolsProtocol)
    if workers <= 1 or port == 0 or not sys.platform.startswith("linux"):
        uvicorn.run(app, host=host, port=port, workers=workers, **options)
        return
    _listen(host, port).close()  # the address is free (or fail now, in the parent, with a clear error)
    context = multiprocessing.get_context("spawn")

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_worker, args=(app, host, port, options, json_log_level), daemon=False)
        process.start()
        return process

    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    processes = [start() for _ in range(workers)]
    log.info("serving on %s:%d with %d workers (SO_REUSEPORT)", host, port, workers)
    try:
        while not stopping:
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
                    processes[i] = start()
            time.sleep(0.5)
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + float(options.get("timeout_graceful_shutdown") or 20) + 5
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", help="import string, e.g. bench.rawapp:app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--header-timeout", type=float, help="seconds (PL_HEADER_TIMEOUT_SECONDS, default 10)")
    parser.add_argument("--body-timeout", type=float, help="seconds (PL_BODY_TIMEOUT_SECONDS, default 30)")
    args = parser.parse_args(argv)
    for value, variable in ((args.header_timeout, "PL_HEADER_TIMEOUT_SECONDS"),
                            (args.body_timeout, "PL_BODY_TIMEOUT_SECONDS")):
        if value is not None:
            os.environ[variable] = str(value)  # read by the workers' protocol (app.http_protocol)
    run(args.app, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level,
        access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
