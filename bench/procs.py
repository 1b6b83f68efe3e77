"""Processes of a benchmark run: servers started and always stopped, load clients run with a time bound,
and the CPU time of each group of processes (service, Postgres, client) read at the window's edges."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(port: int, method: str, path: str, body: Any = None, key: str | None = None,
              headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
    """One plain request for setup steps (not for load)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = dict(headers or {})
        if key:
            h["Authorization"] = f"Bearer {key}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=h)
        res = conn.getresponse()
        raw = res.read()
        try:
            return res.status, json.loads(raw) if raw else None
        except ValueError:
            return res.status, raw.decode(errors="replace")
    finally:
        conn.close()


class Server:
    """A server subprocess in its own session; ``stop()`` ends it (SIGTERM, then SIGKILL of its group)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, path: str = "/healthz", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = http_json(self.port, "GET", path, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        return [self.proc.pid] + [c.pid for c in _children(self.proc.pid)]

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (spawned by multiprocessing), or the process itself with one worker."""
        workers = [c.pid for c in _children(self.proc.pid) if "spawn_main" in " ".join(_cmdline(c))]
        return workers or [self.proc.pid]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 25) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None or any(psutil.pid_exists(p) for p in self._group()):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's process group only
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._log.close()

    def _group(self) -> list[int]:
        out = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == self.proc.pid and p.pid != os.getpid():
                    out.append(p.pid)
            except (ProcessLookupError, PermissionError):
                continue
        return out


def _children(pid: int) -> list[psutil.Process]:
    try:
        kids: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return kids
    except psutil.Error:
        return []


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return [str(a) for a in p.cmdline()]
    except psutil.Error:
        return []


@contextmanager
def running(server: Server, ready_path: str = "/healthz") -> Iterator[Server]:
    try:
        server.wait_ready(ready_path)
        yield server
    finally:
        server.stop()


class CpuGroups:
    """CPU seconds (user + system) of named process trees, per PID so that processes which appear during
    the window (new Postgres backends) are counted from their start."""

    def __init__(self) -> None:
        self.roots: dict[str, int | None] = {}

    def set(self, name: str, root_pid: int | None) -> None:
        self.roots[name] = root_pid

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"_time": time.monotonic(), "_machine": psutil.cpu_times()}
        for name, root in self.roots.items():
            per_pid: dict[int, float] = {}
            if root is not None:
                procs = [psutil.Process(root)] if psutil.pid_exists(root) else []
                procs += _children(root)
                for p in procs:
                    try:
                        t = p.cpu_times()
                        per_pid[p.pid] = t.user + t.system
                    except psutil.Error:
                        continue
            snap[name] = per_pid
        return snap

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        seconds = b["_time"] - a["_time"]
        out: dict[str, Any] = {"seconds": round(seconds, 3)}
        for name in a:
            if name.startswith("_"):
                continue
            used = sum(cpu - a[name].get(pid, 0.0) for pid, cpu in b[name].items())
            out[f"{name}_cpu_pct_of_one_core"] = round(100 * used / seconds, 1) if seconds else None
            out[f"{name}_processes"] = len(b[name])
        ma, mb = a["_machine"], b["_machine"]
        busy = (sum(mb) - mb.idle - getattr(mb, "iowait", 0)) - (sum(ma) - ma.idle - getattr(ma, "iowait", 0))
        total = sum(mb) - sum(ma)
        out["machine_busy_pct"] = round(100 * busy / total, 1) if total else None
        if total and seconds:
            # CPU of everything else on the machine (other users' jobs, the OS): a noise indicator.
            cores = psutil.cpu_count() or 1
            ours = sum(v for k, v in out.items() if k.endswith("_cpu_pct_of_one_core") and v)
            out["other_cpu_pct_of_one_core"] = round(max(0.0, 100 * cores * busy / total - ours), 1)
        return out


def run_client(module: str, spec: dict[str, Any], cpu: CpuGroups, *, timeout: float,
               on_window: Any = None) -> dict[str, Any]:
    """Run ``python -m module spec out`` (a load client), reading CPU counters when it prints
    ``WINDOW_START`` / ``WINDOW_END``; return its result with a ``cpu`` section."""
    with tempfile.TemporaryDirectory(prefix="pl-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.Popen([sys.executable, "-m", module, str(spec_path), str(out_path)], cwd=ROOT,
                                stdout=subprocess.PIPE)
        cpu.set("client", proc.pid)
        snaps: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        try:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            buffer = b""
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 1.0)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    edge = line.strip().decode(errors="replace")
                    if edge in ("WINDOW_START", "WINDOW_END"):
                        snaps[edge[7:].lower()] = cpu.snapshot()
                        if on_window:
                            on_window(edge[7:].lower())
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"{module} failed with exit code {proc.returncode}")
        result: dict[str, Any] = json.loads(out_path.read_text())
    if "start" in snaps and "end" in snaps:
        result["cpu"] = CpuGroups.delta(snaps["start"], snaps["end"])
    return result
