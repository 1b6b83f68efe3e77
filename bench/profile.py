"""Optional profiling of the service's workers with py-spy (``--profile``): where a worker's CPU goes.

py-spy samples each worker (Python frames, non-blocking: ~no slowdown; ``--native`` would need to stop the
process at each sample and distorts the very thing measured) for the measured window and writes collapsed
stacks. The summary attributes every sample to the package of its innermost Python frame (asyncpg,
pydantic, starlette, uvicorn, app, ...; time in C extensions counts for the Python function that called
them), and lists the hottest functions (self time) and the heaviest app functions (inclusive time).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

_IDLE_LEAVES = {"Condition.wait", "Event.wait", "_worker", "SimpleQueue.get", "Queue.get"}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    import sys

    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def start(pids: list[int], seconds: float, out_dir: Path, name: str) -> list[tuple[subprocess.Popen[bytes], Path]]:
    exe = py_spy()
    if exe is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        path = out_dir / f"{name}-{pid}.txt"
        argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
                "--format", "raw", "--full-filenames", "--nonblocking", "--output", str(path)]
        procs.append((subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return procs


def finish(procs: list[tuple[subprocess.Popen[bytes], Path]], timeout: float = 30) -> list[Path]:
    paths = []
    for proc, path in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if path.exists():
            paths.append(path)
    return paths


def _package(file: str) -> str:
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/app/" in file:
        parts = file.split("/app/", 1)[1].split("/")
        return "app/" + (parts[0] if len(parts) > 1 else parts[0].removesuffix(".py"))
    if "/bench/" in file:
        return "bench"
    if file.startswith("<"):
        return "python"
    if "asyncio/runners" in file:
        return "event loop (uvloop, C: socket I/O, callbacks)"
    return "stdlib:" + Path(file).stem


def summarize(paths: list[Path], top: int = 15) -> dict[str, Any]:
    """Shares of samples by innermost package, hottest functions (self), heaviest app functions."""
    by_package: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    incl_app: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_s = line.rpartition(" ")
            try:
                count = int(count_s)
            except ValueError:
                continue
            frames = [f for f in stack.split(";") if f]
            if not frames:
                continue
            leaf = _FRAME.match(frames[-1])
            if leaf and leaf["func"] in _IDLE_LEAVES:
                idle += count  # a thread-pool worker waiting for work: not CPU, though py-spy sampled it
                continue
            total += count
            on_loop = any("asyncio/runners" in f or "uvicorn/server" in f for f in frames)
            threads["event loop thread" if on_loop else "other threads (thread pool: sync dependencies)"] += count
            leaf_file = leaf["file"] if leaf else ""
            by_package[_package(leaf_file)] += count
            self_fn[f"{leaf['func'] if leaf else frames[-1]} ({_package(leaf_file)})"] += count
            seen = set()
            for f in frames:
                m = _FRAME.match(f)
                if m and "/app/" in m["file"]:
                    key = f"{m['func']} ({_package(m['file'])})"
                    if key not in seen:
                        seen.add(key)
                        incl_app[key] += count

    def pct(counter: collections.Counter[str]) -> list[dict[str, Any]]:
        return [{"name": k, "pct": round(100 * v / total, 1)} for k, v in counter.most_common(top)]

    return {"samples": total, "idle_thread_samples_excluded": idle, "by_thread": pct(threads),
            "by_innermost_package": pct(by_package),
            "hottest_functions_self": pct(self_fn),
            "app_functions_inclusive": pct(incl_app)}
