"""The request contract at the HTTP edge (reliability/known_issues.py RL-6, RL-9, RL-13 and the Idempotency-Key):

* strict types: a date is a string ``YYYY-MM-DD``, a boolean is ``true``/``false``; a body is UTF-8 JSON;
* authentication comes before the body: a write without a valid key is 401 whatever its body;
* a literal path segment wins over a parameter beside it: an undeclared method there is 405 with ``Allow``;
* the ``Idempotency-Key`` header is required in the document as in the service.

Every refusal is problem+json with its code and writes nothing (every table counted before and after).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from app.cli import openapi_document

WRITE_METHODS = ("post", "put", "patch", "delete")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def table_counts(db: Any) -> dict[str, int]:
    async with db.acquire() as conn:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        return {t["tablename"]: await conn.fetchval(f'SELECT count(*) FROM "{t["tablename"]}"') for t in tables}


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["status"] == status and body["request_id"], body
    return body


def adjustment(member_id: str, points: int = 5) -> dict[str, Any]:
    return {"member_id": member_id, "points": points, "reason": "contract"}


# --- RL-6: strict types, UTF-8 bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("birthday", [0, 19901210, 1.5, True, "0", "1990-12-10T00:00:00", "10.12.1990", ""])
async def test_a_birthday_that_is_not_a_date_string_is_422_and_writes_nothing(tenant, db, birthday):
    before = await table_counts(db)
    r = await tenant.client.put("/v1/members/c-bday", json={"birthday": birthday}, headers=tenant.headers())
    body = problem(r, 422, "validation_error")
    assert any(e["loc"] == ["body", "birthday"] for e in body["errors"]), body
    assert await table_counts(db) == before
    r = await tenant.client.get("/v1/members/c-bday", headers=tenant.headers())
    assert r.status_code == 404


async def test_a_refused_birthday_leaves_the_stored_one(tenant):
    await tenant.member("c-bday2", birthday="1990-12-10")
    r = await tenant.client.put("/v1/members/c-bday2", json={"birthday": 0}, headers=tenant.headers())
    problem(r, 422, "validation_error")
    r = await tenant.client.get("/v1/members/c-bday2", headers=tenant.headers())
    assert r.json()["birthday"] == "1990-12-10"
    r = await tenant.client.put("/v1/members/c-bday2", json={"birthday": "2000-02-29"}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["birthday"] == "2000-02-29"
    r = await tenant.client.put("/v1/members/c-bday2", json={"birthday": None}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["birthday"] is None


@pytest.mark.parametrize("flag", [0, 1, "true", "false", "yes", 1.0])
async def test_a_boolean_that_is_not_true_or_false_is_422_and_writes_nothing(tenant, db, flag):
    before = await table_counts(db)
    r = await tenant.client.put("/v1/program/expiration-policy",
                                json={"kind": "fixed", "months": 12, "round_to_end_of_month": flag},
                                headers=tenant.headers())
    body = problem(r, 422, "validation_error")
    assert any(e["loc"][-1] == "round_to_end_of_month" for e in body["errors"]), body
    assert await table_counts(db) == before


async def test_a_json_boolean_is_accepted(tenant):
    r = await tenant.client.put("/v1/program/expiration-policy",
                                json={"kind": "fixed", "months": 12, "round_to_end_of_month": True},
                                headers=tenant.headers())
    assert r.status_code == 201, r.text
    assert r.json()["policy"]["round_to_end_of_month"] is True


NOT_UTF8 = {
    "UTF-16 with BOM": lambda text: text.encode("utf-16"),
    "UTF-16LE without BOM": lambda text: text.encode("utf-16-le"),
    "UTF-16BE without BOM": lambda text: text.encode("utf-16-be"),
    "UTF-32 with BOM": lambda text: text.encode("utf-32"),
    "UTF-32LE without BOM": lambda text: text.encode("utf-32-le"),
    "Latin-1 (invalid UTF-8)": lambda text: text.replace("contract", "caf\u00e9").encode("latin-1"),
}


@pytest.mark.parametrize("encoding", list(NOT_UTF8))
async def test_a_body_that_is_not_utf8_is_400_and_writes_nothing(tenant, db, encoding):
    await tenant.member("c-utf")
    before = await table_counts(db)
    raw = NOT_UTF8[encoding](json.dumps(adjustment("c-utf")))
    r = await tenant.client.post("/v1/adjustments", content=raw,
                                 headers={**tenant.headers(idem=f"utf-{encoding}"), "content-type": "application/json"})
    body = problem(r, 400, "malformed_request")
    assert "UTF-8" in body["detail"], body
    assert await table_counts(db) == before
    # Not remembered under the key: the same operation sent as UTF-8 is then accepted.
    r = await tenant.client.post("/v1/adjustments", content=json.dumps(adjustment("c-utf")).encode(),
                                 headers={**tenant.headers(idem=f"utf-{encoding}"), "content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert (await tenant.balance("c-utf"))["available"] == 5


async def test_a_utf8_byte_order_mark_is_ignored(tenant):
    await tenant.member("c-bom")
    raw = b"\xef\xbb\xbf" + json.dumps({**adjustment("c-bom"), "reason": "caf\u00e9"}, ensure_ascii=False).encode()
    r = await tenant.client.post("/v1/adjustments", content=raw,
                                 headers={**tenant.headers(idem="bom"), "content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["entry"]["description"] == "caf\u00e9"


# --- RL-9: authentication before the body ----------------------------------------------------------------------


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.mark.parametrize("raw", [b"{not json", json.dumps(adjustment("x")).encode("utf-16"), b"\xff\xfe\x00"])
async def test_every_write_without_a_key_is_401_whatever_its_body(client, db, raw):
    doc = json.loads(openapi_document())
    writes = [(m, p) for m, p, op in _operations(doc) if m in WRITE_METHODS and "401" in op["responses"]]
    assert len(writes) >= 20
    before = await table_counts(db)
    for method, path in writes:
        for headers in ({}, {"Authorization": "Bearer plk_000000000000_" + "A" * 43}):
            r = await client.request(method.upper(), _fill(path), content=raw,
                                     headers={**headers, "content-type": "application/json", "Idempotency-Key": "k"})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            problem(r, 401, "unauthorized")
    assert await table_counts(db) == before


async def test_a_key_without_the_scope_is_403_before_the_body(tenant, db):
    read_key = await tenant.key("read")
    before = await table_counts(db)
    r = await tenant.client.post("/v1/adjustments", content=b"{not json",
                                 headers={**tenant.headers(read_key, idem="s"), "content-type": "application/json"})
    problem(r, 403, "insufficient_scope")
    r = await tenant.client.post("/v1/adjustments", content=b"{not json",
                                 headers={**tenant.headers(idem="s"), "content-type": "application/json"})
    problem(r, 400, "malformed_request")
    assert await table_counts(db) == before


# --- RL-13: a literal segment beside a parameter ---------------------------------------------------------------


def literal_siblings(doc: dict[str, Any]) -> dict[str, set[str]]:
    """Paths ending in a literal segment where another path, under the same parent, has a parameter
    (``/v1/redemptions/quote`` beside ``/v1/redemptions/{redemption_id}``); each with its declared methods."""
    paths = {p: {m.upper() for m in ops} for p, ops in doc["paths"].items()}
    # (parent, segment index) of every parameter segment of every path
    parameters = {(tuple(segs[:i]), i) for segs in (p.split("/") for p in paths)
                  for i, seg in enumerate(segs) if seg.startswith("{")}
    out: dict[str, set[str]] = {}
    for path, methods in paths.items():
        segs = path.split("/")
        if not segs[-1].startswith("{") and (tuple(segs[:-1]), len(segs) - 1) in parameters:
            out[path] = methods
    return out


async def test_undeclared_methods_on_a_literal_beside_a_parameter_are_405(tenant, db):
    doc = json.loads(openapi_document())
    siblings = literal_siblings(doc)
    assert {"/v1/redemptions/quote", "/v1/purchases/quote"} <= set(siblings), siblings
    before = await table_counts(db)
    checked = 0
    for path, declared in siblings.items():
        for method in sorted(set(METHODS) - declared):
            r = await tenant.client.request(method, _fill(path), headers=tenant.headers(idem="lit"))
            body = problem(r, 405, "method_not_allowed")
            allow = {m.strip() for m in r.headers["allow"].split(",")}
            assert declared <= allow <= declared | {"HEAD"}, (method, path, allow, body)
            checked += 1
    assert checked >= 8
    assert await table_counts(db) == before


async def test_the_parameterised_sibling_still_answers(tenant):
    r = await tenant.client.get("/v1/redemptions/12345", headers=tenant.headers())
    problem(r, 404, "redemption_not_found")
    r = await tenant.client.get("/v1/purchases/quote-1", headers=tenant.headers())
    problem(r, 404, "purchase_not_found")


# --- Idempotency-Key: required in the document and in the service -----------------------------------------------


def test_the_document_declares_the_idempotency_key_required():
    doc = json.loads(openapi_document())
    declared = [(m, p, prm) for m, p, op in _operations(doc) for prm in op.get("parameters", [])
                if prm["name"].lower() == "idempotency-key"]
    assert len(declared) >= 10
    for method, path, prm in declared:
        assert prm["required"] is True and prm["in"] == "header", (method, path, prm)
        assert prm["schema"]["type"] == "string", (method, path, prm)


async def test_a_write_without_the_key_is_400_idempotency_key_missing(tenant, db):
    await tenant.member("c-idem")
    before = await table_counts(db)
    r = await tenant.client.post("/v1/adjustments", json=adjustment("c-idem"), headers=tenant.headers())
    problem(r, 400, "idempotency_key_missing")
    r = await tenant.client.post("/v1/holds/1/capture", headers=tenant.headers())
    problem(r, 400, "idempotency_key_missing")
    # Missing, with an invalid body: the validation error of the body.
    r = await tenant.client.post("/v1/adjustments", json=adjustment("c-idem", points=0), headers=tenant.headers())
    body = problem(r, 422, "validation_error")
    assert ("body", "points") in {tuple(e["loc"]) for e in body["errors"]}, body
    assert await table_counts(db) == before


# --- a value Postgres cannot represent ----------------------------------------------------------------------


async def test_a_datetime_before_year_1_in_utc_is_422_and_writes_nothing(tenant, db):
    from tests.test_tiers import LADDER

    r = await tenant.client.put("/v1/program/tiers", json={**LADDER, "effective_from": "2020-01-01T00:00:00Z"},
                                headers=tenant.headers())
    assert r.status_code == 201, r.text
    await tenant.member("c-year1")
    before = await table_counts(db)
    r = await tenant.client.post("/v1/members/c-year1/tier", headers=tenant.headers(),
                                 json={"tier": LADDER["tiers"][-1]["name"], "until": "0001-01-01T00:00:12+01:00",
                                       "reason": "contract"})
    problem(r, 422, "validation_error")
    assert await table_counts(db) == before


# --- issue 18: money is a decimal string; a body must be sent as JSON --------------------------------------------


@pytest.mark.parametrize("total", [30.5, 30, "  30.00 ", "30.00 ", "\u0663\u0660.00", "\uff13\uff10", "3e1", "+30.00",
                                   "30.", ".5", ""])
async def test_money_is_a_plain_decimal_string_and_anything_else_is_422_writing_nothing(tenant, db, total):
    await tenant.member("c-money")
    body = {"member_id": "c-money", "order_id": "o-money", "currency": "EUR", "total": total,
            "lines": [{"sku": "A", "quantity": 1, "unit_price": "30.00"}]}
    before = await table_counts(db)
    r = await tenant.client.post("/v1/purchases", json=body, headers=tenant.headers(idem=uuid.uuid4().hex))
    problem_body = problem(r, 422, "validation_error")
    assert any(e["loc"] == ["body", "total"] and e["type"] == "decimal_string" for e in problem_body["errors"]), \
        problem_body
    assert await table_counts(db) == before


async def test_money_strings_are_exact_and_currency_codes_case_insensitive(tenant):
    body = {"member_id": "c-exact", "order_id": "o-exact", "currency": "eur", "total": "30.30",
            "lines": [{"sku": "A", "quantity": 3, "unit_price": "10.10"}]}
    r = await tenant.client.post("/v1/purchases", json=body, headers=tenant.headers(idem="exact"))
    assert r.status_code == 201, r.text
    assert r.json()["purchase"]["award"]["lines"][0]["eligible_amount"] == "30.30"  # 3 x 10.10, no float
    r = await tenant.client.post("/v1/redemptions/quote", json={"member_id": "c-exact", "order_total": "10.00",
                                                                 "currency": "Eur"}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["currency"] == "EUR", r.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
async def test_a_body_not_sent_as_json_is_415_writing_nothing(tenant, db, content_type):
    await tenant.member("c-415")
    before = await table_counts(db)
    headers = tenant.headers(idem=f"415-{content_type}")
    if content_type:
        headers["content-type"] = content_type
    r = await tenant.client.post("/v1/adjustments", content=json.dumps(adjustment("c-415")).encode(),
                                 headers=headers)
    body = problem(r, 415, "unsupported_media_type")
    assert "application/json" in body["detail"]
    assert await table_counts(db) == before
    # authentication still comes first, and a write without a body (capture) needs no content type
    r = await tenant.client.post("/v1/adjustments", content=b"points=5", headers={"content-type": "text/plain"})
    problem(r, 401, "unauthorized")
    r = await tenant.client.post("/v1/holds/999999/capture", headers=tenant.headers(idem="415-capture"))
    assert r.status_code == 404, r.text


def test_the_document_declares_415_on_every_route_with_a_body():
    doc = json.loads(openapi_document())
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                assert "415" in op["responses"], (method, path)
