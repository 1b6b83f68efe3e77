"""The `points-ledger` command line against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def created(database_url):
    r = _cli(database_url, "create-program", "--name", "CLI Shop", "--currency", "JPY", "--timezone",
             "Asia/Tokyo", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def test_create_program_prints_a_working_admin_key(created, client):
    assert created["program"]["currency"] == "JPY"
    key = created["api_key"]["key"]
    assert created["api_key"]["scopes"] == ["admin"]
    r = await client.get("/v1/program", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["name"] == "CLI Shop"


def test_create_program_rejects_bad_currency_and_zone(database_url):
    assert _cli(database_url, "create-program", "--name", "x", "--currency", "XYZ").returncode == 2
    assert _cli(database_url, "create-program", "--name", "x", "--currency", "EUR", "--timezone",
                "Mars/Olympus").returncode == 2


async def test_verify_exit_code_reflects_discrepancies(created, database_url, client, db):
    program = created["program"]["id"]
    headers = {"Authorization": f"Bearer {created['api_key']['key']}"}
    await client.put("/v1/members/c1", json={}, headers=headers)
    await client.post("/v1/adjustments", json={"member_id": "c1", "points": 10, "reason": "x"},
                      headers={**headers, "Idempotency-Key": "cli-1"})
    ok = _cli(database_url, "verify", "--program", program)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verify: OK" in ok.stdout
    await db.execute("UPDATE member_balances SET available = 99 WHERE program_id = $1::uuid", program)
    bad = _cli(database_url, "verify", "--program", program, "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["discrepancies"][0]["check"] == "balance_mismatch"


def test_openapi_check_passes_on_the_committed_file(database_url):
    r = _cli(database_url, "openapi", "--check")
    assert r.returncode == 0, r.stderr
