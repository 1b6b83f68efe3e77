"""The database ceiling of a redeem: asyncpg straight to Postgres, no HTTP, at the same concurrency.

``python -m bench.direct SPEC.json OUT.json``. Two variants (``"variant"`` in the spec):

* ``fn``: the ledger's redeem function, ``ledger.redeem(...)``, without an Idempotency-Key (``p_key => NULL``):
  what Postgres alone does for this operation, answer rendered included;
* ``full``: exactly the statement the service sends for ``POST /v1/redemptions`` (the same ``Write`` of
  ``app.redemption.service``: key lookup, effect, answer stored under the key, one statement): the database's
  share of the service's work, without Python web-framework costs. The gap between ``full`` and the HTTP redeem
  is the cost of the service's own Python (FastAPI, pydantic) and of HTTP.

Members are chosen with the same Zipf/uniform picker as the HTTP load. Prints ``WINDOW_START`` /
``WINDOW_END`` like ``bench.loadgen``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from app.db.pool import create_pool
from bench.loadgen import Series
from bench.members import MemberPicker


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    from app.ledger.writes import Answer
    from app.programs.context import Principal
    from app.programs.schemas import ProgramSettings
    from app.redemption.schemas import RedeemCreate
    from app.redemption.service import _debit

    program = UUID(spec["program_id"])
    variant = spec["variant"]
    connections = spec["connections"]
    picker = MemberPicker(spec["members"], uniform=spec.get("uniform", False), s=spec.get("zipf_s", 0.99),
                          seed=spec.get("seed", 1) + 7)
    rng = random.Random(spec.get("seed", 1))
    pool = await create_pool(spec["url"], min_size=connections, max_size=connections)
    series = Series()
    seq = itertools.count()
    tag = spec["run_tag"]

    principal = Principal(key_id=program, program_id=program, scopes=frozenset({"redeem"}), currency="EUR",
                          timezone="UTC", settings=ProgramSettings())

    async def one(conn: Any) -> bool:
        member = picker.ref()
        points = rng.randint(1, 10)
        reference = f"{tag}-direct-{next(seq)}"
        key = None if variant == "fn" else reference
        fingerprint = hashlib.sha256(f"POST\n/v1/redemptions\n{reference}".encode()).digest()
        write = _debit(principal, RedeemCreate(member_id=member, points=points, reference=reference), "redeem", None,
                       key, fingerprint)
        answer = Answer.of(await conn.fetchrow(write.sql(), *write.values()))
        return answer.status == "ok"

    w0 = w1 = 0.0

    async def worker() -> None:
        async with pool.acquire() as conn:
            while (t0 := time.perf_counter()) < w1:
                try:
                    ok = await one(conn)
                    outcome = "ok" if ok else "refused"
                except Exception as exc:  # counted, the run goes on
                    ok = False
                    outcome = f"exception:{type(exc).__name__}"
                t1 = time.perf_counter()
                if w0 <= t1 <= w1:
                    series.latencies.append(t1 - t0)
                    series.status[outcome] += 1
                    series.ok += ok

    cpu: dict[str, float] = {}

    def mark(edge: str) -> None:
        cpu[edge] = time.process_time()
        print(f"WINDOW_{edge.upper()}", flush=True)

    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    w0 = start + spec["warmup"]
    w1 = w0 + spec["duration"]
    loop.call_later(spec["warmup"], mark, "start")
    loop.call_later(spec["warmup"] + spec["duration"], mark, "end")
    tasks = [asyncio.ensure_future(worker()) for _ in range(connections)]
    _, pending = await asyncio.wait(tasks, timeout=spec["warmup"] + spec["duration"] + 15)
    for t in pending:
        t.cancel()
    await pool.close()
    if "end" not in cpu:
        mark("end")
    seconds = spec["duration"]
    client_cpu = cpu["end"] - cpu["start"]
    return {
        "mode": "closed", "variant": variant, "connections": connections, "duration_s": seconds,
        "warmup_s": spec["warmup"], "ops": series.summary(seconds),
        "requests": {"count": len(series.latencies), "throughput": round(len(series.latencies) / seconds, 2)},
        "errors_by_status": {k: v for k, v in series.status.items() if k != "ok"},
        "client": {"cpu_s": round(client_cpu, 3), "cpu_pct_of_one_core": round(100 * client_cpu / seconds, 1)},
    }


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    try:
        import uvloop

        result = uvloop.run(run(spec))
    except ImportError:
        result = asyncio.run(run(spec))
    with open(argv[1], "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
