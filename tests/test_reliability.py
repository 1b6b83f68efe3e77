"""The quick modes of the reliability commands (reliability/README.md), as CI runs them.

Each command runs as a subprocess, exactly as documented, against the test server of ``conftest.py``
(``server_url``: it creates and drops its own database there), except ``crash``, which needs a Postgres it
may stop and so starts an embedded one of its own. A run passes when the command completed and every
anomaly it reported is a known, reported service bug listed in ``reliability/known_issues.py`` (the commands
themselves exit 1 on those too). ``RELIABILITY_STRICT=1`` accepts no anomaly at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reliability.known_issues import known

ROOT = Path(__file__).resolve().parents[1]
STRICT = os.environ.get("RELIABILITY_STRICT") == "1"

pytestmark = pytest.mark.slow


def run_quick(mode: str, out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", f"reliability.{mode}", "--quick", "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=420)
    summary_path = out / "summary.json"
    assert summary_path.exists(), f"{mode} wrote no summary (exit {proc.returncode}):\n{proc.stdout[-3000:]}" \
                                  f"\n{proc.stderr[-3000:]}"
    summary = json.loads(summary_path.read_text())
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert last.startswith(f"{mode}: OK") or last.startswith(f"{mode}: FAILED"), proc.stdout[-3000:]
    signatures: dict[str, int] = summary["figures"]["anomalies_by_signature"]
    if STRICT:
        assert proc.returncode == 0 and not signatures, proc.stdout[-6000:]
    unknown = {sig: n for sig, n in signatures.items() if not known(mode, sig)}
    assert not unknown, (f"{mode}: anomalies that are not known issues: {unknown}\n"
                         f"details in {summary_path}\n{proc.stdout[-6000:]}")
    assert proc.returncode == (1 if signatures else 0), proc.stdout[-3000:]
    return proc, summary["figures"]


def test_bank_quick(server_url: str, tmp_path: Path) -> None:
    _, figures = run_quick("bank", tmp_path / "bank", "--server-url", server_url)
    assert figures["operations"] >= 100
    assert figures["outcomes"].get("acknowledged", 0) >= 50
    assert figures["answers_compared"] > 0  # replays and duplicates were compared
    assert figures["in_doubt_after_reconcile"] == 0


def test_crash_quick(tmp_path: Path) -> None:
    _, figures = run_quick("crash", tmp_path / "crash")
    assert figures["service_kills"] >= 2 and figures["postgres_stops"] >= 1
    assert figures["lost_acknowledged_writes"] == 0 and figures["duplicates"] == 0
    assert figures["in_doubt_after_reconcile"] == 0


def test_fuzz_quick(server_url: str, tmp_path: Path) -> None:
    _, figures = run_quick("fuzz", tmp_path / "fuzz", "--server-url", server_url)
    assert figures["explicit_cases"] >= 100
    assert figures.get("schemathesis_cases", 0) > 0


def test_security_quick(server_url: str, tmp_path: Path) -> None:
    _, figures = run_quick("security", tmp_path / "security", "--server-url", server_url)
    assert figures["routes"] >= 40
    assert figures["isolation_requests"] >= 20 and figures["revoked_key_accepted"] == 0
