"""Exports (issue 15, item 3): balances as of an instant (CSV), the ledger's entries with their postings (JSONL),
members (CSV, without erased personal data), through HTTP and the command line; another program's data is absent."""

from __future__ import annotations

import csv
import io
import json
import uuid

from tests.test_cli import _acli, _clean


async def _now(db):
    return await db.fetchval("SELECT clock_timestamp()")


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def _setup(tenant, other_tenant, db):
    p = uuid.uuid4().hex[:6]
    ada, bob, cy = f"ada-{p}", f"bob-{p}", f"cy-{p}"
    await tenant.member(ada, name="Ada Lovelace", email="ada@example.com", birthday="1990-12-10",
                        attributes={"store": "Berlin"})
    await tenant.member(bob, name="Bob Secret", email="bob.secret@example.com", phone="+49 30 123456",
                        birthday="1985-01-02", attributes={"likes": "espresso"})
    await tenant.adjust(ada, 500)
    await tenant.adjust(bob, 300)
    before = await _now(db)
    await tenant.member(cy, name="Cy")
    await tenant.adjust(cy, 40)
    await tenant.adjust(ada, -120)
    r = await tenant.client.post("/v1/holds", json={"member_id": ada, "points": 80},
                                 headers=tenant.headers(idem=uuid.uuid4().hex))
    assert r.status_code == 201
    r = await tenant.client.delete(f"/v1/members/{bob}/personal-data", headers=tenant.headers())
    assert r.status_code == 200, r.text
    await other_tenant.member(f"zed-{p}", name="Zed Other", email="zed.other@example.com")
    await other_tenant.adjust(f"zed-{p}", 999)
    return ada, bob, cy, before


async def test_members_export_has_no_erased_personal_data_and_no_other_program(tenant, other_tenant, db):
    ada, bob, cy, _ = await _setup(tenant, other_tenant, db)
    r = await tenant.client.get("/v1/exports/members", headers=tenant.headers())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = {row["member_id"]: row for row in _rows(r.text)}
    assert set(rows) == {ada, bob, cy}
    assert rows[ada]["name"] == "Ada Lovelace" and rows[ada]["email"] == "ada@example.com"
    assert rows[ada]["birthday"] == "1990-12-10" and json.loads(rows[ada]["attributes"]) == {"store": "Berlin"}
    assert {k: rows[bob][k] for k in ("name", "email", "phone", "birthday")} == dict.fromkeys(
        ("name", "email", "phone", "birthday"), "")
    assert json.loads(rows[bob]["attributes"]) == {}
    for secret in ("Bob Secret", "bob.secret", "123456", "1985-01-02", "espresso", "Zed Other", "zed.other"):
        assert secret not in r.text
    assert list(_rows(r.text)[0]) == ["member_id", "status", "name", "email", "phone", "birthday", "attributes",
                                      "tier", "created_at", "updated_at"]


async def test_balances_export_as_of_matches_the_as_of_reads(tenant, other_tenant, db):
    ada, bob, cy, before = await _setup(tenant, other_tenant, db)
    for at in (before, await _now(db)):
        r = await tenant.client.get("/v1/exports/balances", params={"as_of": at.isoformat()}, headers=tenant.headers())
        assert r.status_code == 200
        rows = {row["member_id"]: row for row in _rows(r.text)}
        expected_members = {ada, bob} if at == before else {ada, bob, cy}
        assert set(rows) == expected_members
        for member in expected_members:
            one = (await tenant.client.get(f"/v1/members/{member}/balance", params={"as_of": at.isoformat()},
                                           headers=tenant.headers())).json()
            assert {k: int(rows[member][k]) for k in ("available", "pending", "held", "expired", "lifetime_earned",
                                                      "lifetime_redeemed")} == {
                k: one[k] for k in ("available", "pending", "held", "expired", "lifetime_earned",
                                    "lifetime_redeemed")}
    assert rows[ada]["available"] == "300" and rows[ada]["held"] == "80"
    r = await tenant.client.get("/v1/exports/balances", params={"as_of": before.isoformat()},
                                headers=tenant.headers())
    assert {row["member_id"]: row["available"] for row in _rows(r.text)} == {ada: "500", bob: "300"}


async def test_entries_export_is_the_ledger_with_postings_and_periods_partition_it(tenant, other_tenant, db):
    ada, bob, cy, before = await _setup(tenant, other_tenant, db)
    r = await tenant.client.get("/v1/exports/entries", headers=tenant.headers())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert len(lines) == await db.fetchval("SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id)
    assert {e["member_id"] for e in lines} == {ada, bob, cy}
    assert [e["recorded_at"] for e in lines] == sorted(e["recorded_at"] for e in lines)
    for e in lines:
        assert sum(p["points"] for p in e["postings"]) == 0 and len(e["postings"]) >= 2
    one = (await tenant.client.get(f"/v1/entries/{lines[0]['id']}", headers=tenant.headers())).json()
    assert one == lines[0]
    first = await tenant.client.get("/v1/exports/entries", params={"until": before.isoformat()},
                                    headers=tenant.headers())
    rest = await tenant.client.get("/v1/exports/entries", params={"since": before.isoformat()},
                                   headers=tenant.headers())
    assert [json.loads(x) for x in first.text.splitlines()] + [json.loads(x) for x in rest.text.splitlines()] == lines
    assert len(first.text.splitlines()) == 2
    plain = await tenant.client.get("/v1/exports/entries", headers={**tenant.headers(), "Accept": "text/plain"})
    assert plain.headers["content-type"].startswith("text/plain") and plain.text == r.text


async def test_exports_need_an_admin_key_and_show_only_the_keys_program(tenant, other_tenant, db):
    await _setup(tenant, other_tenant, db)
    reader = await tenant.key("read")
    for path in ("/v1/exports/balances", "/v1/exports/entries", "/v1/exports/members"):
        r = await tenant.client.get(path, headers=tenant.headers(reader))
        assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
        theirs = await other_tenant.client.get(path, headers=other_tenant.headers())
        assert theirs.status_code == 200 and "ada-" not in theirs.text and "bob-" not in theirs.text
    r = await tenant.client.get("/v1/exports/balances", params={"as_of": "2026-01-01T00:00:00"},
                                headers=tenant.headers())
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


async def test_the_command_exports_to_a_file_or_stdout(tenant, other_tenant, db, database_url, tmp_path):
    ada, bob, cy, before = await _setup(tenant, other_tenant, db)
    program = str(tenant.program_id)
    r = await _acli(database_url, "export", "members", "--program", program, "--output", str(tmp_path / "m.csv"))
    _clean(r)
    assert r.returncode == 0, r.stderr
    rows = {row["member_id"]: row for row in _rows((tmp_path / "m.csv").read_text())}
    assert set(rows) == {ada, bob, cy} and rows[bob]["name"] == ""
    r = await _acli(database_url, "export", "balances", "--program", program, "--as-of", before.isoformat())
    assert {row["member_id"]: row["available"] for row in _rows(r.stdout)} == {ada: "500", bob: "300"}
    r = await _acli(database_url, "export", "entries", "--program", program)
    assert len(r.stdout.splitlines()) == await db.fetchval(
        "SELECT count(*) FROM entries WHERE program_id = $1", tenant.program_id)
    bad = await _acli(database_url, "export", "members", "--program", str(uuid.uuid4()))
    _clean(bad)
    assert bad.returncode == 2 and "no program" in bad.stderr
