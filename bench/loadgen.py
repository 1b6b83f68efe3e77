"""The load generator: one process, uvloop, N keep-alive connections, one workload, a bounded time.

``python -m bench.loadgen SPEC.json OUT.json`` (the runner writes the spec). Two modes:

* **closed loop** (default): every connection sends its next operation as soon as the previous one is
  answered; throughput is what the server sustains at that concurrency.
* **open loop** (``"rate"`` in the spec): operations are *scheduled* at a fixed arrival rate (the i-th at
  ``start + i / rate``) and taken by whichever connection is free. Latency is measured from the scheduled
  time, so time an operation spent waiting because the server (or every connection) was busy counts, as in
  wrk2 and k6: latency corrected for coordinated omission. The uncorrected service time is reported too.

The first ``warmup`` seconds are run but not recorded. Operations and requests are recorded when they
*complete* inside the measured window. The process prints ``WINDOW_START`` and ``WINDOW_END`` on stdout
at the window's edges so the runner can read CPU counters of the server and database exactly then.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import gc
import itertools
import json
import random
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from bench.httpclient import Connection, RequestBuilder, Response
from bench.members import HOT_MEMBER, MemberPicker
from bench.workloads import OPS

PERCENTILES = (50, 90, 99, 99.9)


def latency_summary(values: array[float] | list[float]) -> dict[str, float | None]:
    """Milliseconds: p50/p90/p99/p99.9 (nearest rank), mean and max."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "p999": None, "mean": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)

    def pct(p: float) -> float:
        return round(ordered[min(n - 1, max(0, int(round(p / 100 * n + 0.5)) - 1))] * 1000, 3)

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "p999": pct(99.9),
            "mean": round(sum(ordered) / n * 1000, 3), "max": round(ordered[-1] * 1000, 3)}


class Series:
    """Latencies (seconds) and outcomes of one kind of request or operation inside the window."""

    __slots__ = ("latencies", "status", "ok")

    def __init__(self) -> None:
        self.latencies: array[float] = array("d")
        self.status: collections.Counter[int | str] = collections.Counter()
        self.ok = 0

    def summary(self, seconds: float) -> dict[str, Any]:
        n = len(self.latencies)
        status = {str(k): v for k, v in self.status.items()}
        return {"count": n, "ok": self.ok, "errors": n - self.ok,
                "throughput": round(n / seconds, 2) if seconds else None,
                "status": dict(sorted(status.items())), "latency_ms": latency_summary(self.latencies)}


class Slot:
    """One connection and the recent writes it sent (for replays)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.recent: collections.deque[bytes] = collections.deque(maxlen=64)


class Runner:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        wl = spec["workload"]
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        self.builder = RequestBuilder(self.host, self.port, spec.get("api_key"))
        self.connections: int = spec["connections"]
        self.duration: float = spec["duration"]
        self.warmup: float = spec["warmup"]
        self.rate: float | None = spec.get("rate")
        self.currency: str = spec.get("currency", "EUR")
        self.run_tag: str = spec["run_tag"]
        self.context: dict[str, Any] = spec.get("context") or {}  # what the runner set up (e.g. a reward's id)
        self.rng = random.Random(spec.get("seed", 1))
        self.picker = MemberPicker(spec["members"], uniform=spec.get("uniform", False),
                                   s=spec.get("zipf_s", 0.99), seed=spec.get("seed", 1))
        self.hot = wl.get("members") == "hot"
        self.replay_share: float = wl.get("replay_share", 0.0)
        names = list(wl["ops"])
        self.op_names = names
        self.op_cum = list(itertools.accumulate(wl["ops"][n] for n in names))
        self.requests: dict[str, Series] = collections.defaultdict(Series)
        self.ops: dict[str, Series] = collections.defaultdict(Series)
        self.ops_service: dict[str, Series] = collections.defaultdict(Series)
        self.replays = {"sent": 0, "confirmed": 0}
        self.w0 = self.w1 = 0.0
        self.scheduled_in_window = 0
        self.max_lag = 0.0

    # helpers used by the operations -------------------------------------------------------------------
    def member_index(self, ref: str) -> int:
        return 1 if ref == HOT_MEMBER else int(ref[1:])

    def _in_window(self, t: float) -> bool:
        return self.w0 <= t <= self.w1

    async def call(self, conn: Connection, label: str, method: str, path: str, body: Any = None,
                   key: str | None = None) -> Response | None:
        data = self.builder.build(method, path, body, key)
        if key is not None and self.replay_share:
            self._slot_of[id(conn)].recent.append(data)
        return await self._send(conn, label, data)

    async def _send(self, conn: Connection, label: str, data: bytes) -> Response | None:
        t0 = time.perf_counter()
        try:
            res = await conn.request(data)
        except (OSError, ConnectionError) as exc:
            t1 = time.perf_counter()
            if self._in_window(t1):
                s = self.requests[label]
                s.latencies.append(t1 - t0)
                s.status[f"conn_error:{type(exc).__name__}"] += 1
            conn.close()
            await asyncio.sleep(0.01)
            return None
        t1 = time.perf_counter()
        if self.w0 <= t1 <= self.w1:
            s = self.requests[label]
            s.latencies.append(t1 - t0)
            status = res.status
            s.status[status] += 1
            s.ok += 200 <= status < 300
        return res

    # one operation ------------------------------------------------------------------------------------
    async def one(self, slot: Slot) -> tuple[str, bool]:
        if self.replay_share and slot.recent and self.rng.random() < self.replay_share:
            data = self.rng.choice(slot.recent)
            res = await self._send(slot.conn, "replay", data)
            ok = res is not None and 200 <= res.status < 300 and res.replayed
            if self._in_window(time.perf_counter()):
                self.replays["sent"] += 1
                self.replays["confirmed"] += ok
            return "replay", ok
        i = bisect.bisect_right(self.op_cum, self.rng.random() * self.op_cum[-1])
        name = self.op_names[min(i, len(self.op_names) - 1)]
        member = HOT_MEMBER if self.hot else self.picker.ref()
        try:
            ok = await OPS[name](self, slot.conn, member)
        except (ValueError, KeyError, TypeError):  # an unexpected response body
            ok = False
        return name, ok

    def _record_op(self, series: dict[str, Series], name: str, ok: bool, latency: float) -> None:
        outcome = "ok" if ok else "error"
        s = series[name]
        s.latencies.append(latency)
        s.status[outcome] += 1
        s.ok += ok
        if len(self.op_names) > 1 or self.replay_share or name != self.op_names[0]:
            s = series["*"]
            s.latencies.append(latency)
            s.status[outcome] += 1
            s.ok += ok

    # loops ---------------------------------------------------------------------------------------------
    async def closed_worker(self, slot: Slot) -> None:
        while (t0 := time.perf_counter()) < self.w1:
            name, ok = await self.one(slot)
            t1 = time.perf_counter()
            if self._in_window(t1):
                self._record_op(self.ops, name, ok, t1 - t0)

    async def open_worker(self, slot: Slot, schedule: itertools.count[int], start: float) -> None:
        assert self.rate
        while True:
            intended = start + next(schedule) / self.rate
            if intended >= self.w1:
                return
            if intended >= self.w0:
                self.scheduled_in_window += 1
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            self.max_lag = max(self.max_lag, t0 - intended)
            name, ok = await self.one(slot)
            t1 = time.perf_counter()
            if self._in_window(t1):
                self._record_op(self.ops, name, ok, t1 - intended)           # corrected
                self._record_op(self.ops_service, name, ok, t1 - t0)          # uncorrected

    async def run(self) -> dict[str, Any]:
        conns = [Connection(self.host, self.port, headers=bool(self.replay_share)) for _ in range(self.connections)]
        slots = [Slot(c) for c in conns]
        self._slot_of = {id(s.conn): s for s in slots}
        for c in conns:  # connect before the clock starts
            await c.connect()
        gc.collect()
        gc.freeze()
        gc.disable()  # bounded run, acyclic garbage: no collector pauses inside the measurement
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        self.w0 = start + self.warmup
        self.w1 = self.w0 + self.duration
        cpu: dict[str, float] = {}
        wall: dict[str, float] = {}

        def mark(edge: str) -> None:
            cpu[edge] = time.process_time()
            wall[edge] = time.time()
            print(f"WINDOW_{edge.upper()}", flush=True)

        loop.call_later(self.warmup, mark, "start")
        loop.call_later(self.warmup + self.duration, mark, "end")
        if self.rate:
            schedule = itertools.count()
            tasks = [asyncio.ensure_future(self.open_worker(s, schedule, start)) for s in slots]
        else:
            tasks = [asyncio.ensure_future(self.closed_worker(s)) for s in slots]
        done, pending = await asyncio.wait(tasks, timeout=self.warmup + self.duration + 15)
        for t in pending:  # bounded: whatever is still waiting 15 s after the end is abandoned
            t.cancel()
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        await asyncio.sleep(0)
        for c in conns:
            c.close()
        if "end" not in cpu:
            mark("end")
        return self.result(cpu, wall, abandoned=len(pending))

    def result(self, cpu: dict[str, float], wall: dict[str, float], abandoned: int) -> dict[str, Any]:
        seconds = self.duration
        total_requests = sum(len(s.latencies) for s in self.requests.values())
        errors: collections.Counter[str] = collections.Counter()
        for s in self.requests.values():
            for status, n in s.status.items():
                if not str(status).startswith("2"):
                    errors[str(status)] += n
        client_cpu = cpu.get("end", 0.0) - cpu.get("start", 0.0)
        ops = self.ops.get("*") or self.ops.get(self.op_names[0]) or Series()
        out: dict[str, Any] = {
            "mode": "open" if self.rate else "closed",
            "connections": self.connections, "duration_s": seconds, "warmup_s": self.warmup,
            "ops": ops.summary(seconds),
            "by_op": {k: v.summary(seconds) for k, v in sorted(self.ops.items()) if k != "*"},
            "requests": {
                "count": total_requests,
                "throughput": round(total_requests / seconds, 2),
                "by_label": {k: v.summary(seconds) for k, v in sorted(self.requests.items())},
            },
            "errors_by_status": dict(sorted(errors.items())),
            "client": {
                "cpu_s": round(client_cpu, 3),
                "cpu_pct_of_one_core": round(100 * client_cpu / seconds, 1),
                "cpu_us_per_request": round(1e6 * client_cpu / total_requests, 1) if total_requests else None,
            },
            "window": {"start_unix": wall.get("start"), "end_unix": wall.get("end")},
            "abandoned_connections": abandoned,
        }
        if self.replay_share:
            out["replays"] = dict(self.replays)
        if self.rate:
            svc = self.ops_service.get("*") or self.ops_service.get(self.op_names[0]) or Series()
            out["open_loop"] = {
                "target_rate": round(self.rate, 2),
                "scheduled_in_window": self.scheduled_in_window,
                "achieved_rate": round(len(ops.latencies) / seconds, 2),
                "latency_corrected_ms": ops.summary(seconds)["latency_ms"],
                "latency_service_ms": svc.summary(seconds)["latency_ms"],
                "max_start_lag_ms": round(self.max_lag * 1000, 3),
            }
        return out


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    runner = Runner(spec)
    try:
        import uvloop

        result = uvloop.run(runner.run())
    except ImportError:
        result = asyncio.run(runner.run())
    with open(argv[1], "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
