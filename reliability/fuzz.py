"""Bad input: schemathesis against the committed ``openapi/openapi.json``, then explicit hostile cases.

1. Schemathesis (``schemathesis run`` with the hooks of ``reliability/st_hooks.py``) on every operation of the
   committed document, with a real admin API key, against the running service: its examples, coverage
   (boundary values) and fuzzing phases, and in the long run the stateful phase. Checks: no server error, and
   no response that violates the document (status code, content type, headers, schema), no schema-violating
   request accepted, undeclared methods answered 405 with ``Allow``, no write accepted without auth.
   ``positive_data_acceptance`` is left out on purpose: a schema-valid request may still be refused by the
   ledger's rules (``insufficient_points``, ``member_not_found``), which is a documented answer. Every
   response schemathesis saw (its HAR report) is also scanned for 5xx and for stack traces or SQL.
2. Explicit cases, each on a quiet database with the row count of every table taken before and after: points
   beyond int64, negative or zero points, money with too many decimals, NaN and infinities, an unknown
   currency, bodies over the 1 MiB limit (with and without Content-Length), deeply nested bodies, invalid
   UTF-8, NUL characters and lone surrogates, timestamps without a zone. Each must be a 4xx problem+json with
   a ``code`` and no internals, and must write nothing (an idempotency record only for a refusal the README
   says is remembered, never for a validation failure).

The scheduler is off in this service so that no background job writes while rows are counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from reliability.harness import (
    BIN,
    ROOT,
    FreshDatabase,
    Run,
    Service,
    common_parser,
    connect,
    create_program,
    execute,
    leaks,
    open_server,
    run_verify,
    table_counts,
)

OPENAPI = ROOT / "openapi" / "openapi.json"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,"
          "ignored_auth,use_after_free,ensure_resource_availability")
QUICK = {"max_examples": 3, "phases": "examples,fuzzing", "max_time": 12}
FULL = {"max_examples": 100, "phases": "examples,coverage,fuzzing,stateful", "max_time": 900}
# Refusals the README says are remembered under the Idempotency-Key (a retry gets the same answer).
# Business refusals, remembered under the key. Ids are opaque strings, so an id that is not one of the program's
# (a number, a negative one, another kind's) is not found: a refusal like any other 404 of a write.
REMEMBERED = {"insufficient_points", "currency_mismatch", "invalid_redeem_amount", "hold_not_open",
              "refund_exceeds_redemption", "capture_exceeds_hold", "member_not_found", "hold_not_found",
              "redemption_not_found", "entry_not_found"}
INT64 = 2**63
_ZERO_AMOUNT = re.compile(r'"amount":\s*"?0*(\.0*)?"?\s*[,}]')
_NUL_OR_SURROGATE = re.compile(r"\\u0000|\\ud[89a-f][0-9a-f]{2}|\x00", re.IGNORECASE)


def parse(argv: list[str] | None) -> Any:
    parser = common_parser("fuzz", __doc__ or "")
    parser.add_argument("--max-examples", type=int, help="schemathesis cases per operation and phase "
                        "(default 100; --quick 3)")
    parser.add_argument("--phases", help="schemathesis phases (default examples,coverage,fuzzing,stateful; "
                        "--quick without stateful)")
    parser.add_argument("--max-time", type=float, help="time budget of the schemathesis run in seconds")
    parser.add_argument("--st-workers", default="2", help="schemathesis workers (default 2)")
    parser.add_argument("--skip-schemathesis", action="store_true", help="only the explicit cases")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# --- explicit cases ------------------------------------------------------------------------------------------


@dataclass
class Bad:
    name: str
    method: str
    path: str
    body: Any = None  # JSON (NaN allowed), or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    key: bool = True
    field: tuple[Any, ...] | None = None  # the field the bad value is in: its validation error must name it
    expect: tuple[int, ...] = ()  # the statuses it must get, when a particular one is documented


def _purchase(**change: Any) -> dict[str, Any]:
    body = {"member_id": "cust-1001", "order_id": "fuzz-order", "currency": "EUR", "total": "10.00",
            "lines": [{"sku": "A", "quantity": 1, "unit_price": "10.00"}]}
    body.update(change)
    return body


def _line(**change: Any) -> dict[str, Any]:
    return _purchase(lines=[{"sku": "A", "quantity": 1, "unit_price": "10.00", **change}])


def _adjust(**change: Any) -> dict[str, Any]:
    return {"member_id": "cust-1001", "points": 5, "reason": "fuzz", **change}


def _nested(depth: int, kind: str = "object") -> str:
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


def explicit_cases(hold_id: int, redemption_id: int) -> list[Bad]:
    cases: list[Bad] = []
    add = cases.append
    # Points beyond int64, out of range, negative or zero, not whole.
    for points in (INT64, INT64 + 1, 2**64, 10**30, -INT64 - 1, 10**12 + 1, -(10**12) - 1, 0, 1.5, "1e3", True):
        add(Bad(f"adjustment points={points!r}", "POST", "/v1/adjustments", _adjust(points=points)))
    for points in (0, -5, INT64, 10**19):
        add(Bad(f"redeem points={points}", "POST", "/v1/redemptions", {"member_id": "cust-1001", "points": points}))
        add(Bad(f"hold points={points}", "POST", "/v1/holds", {"member_id": "cust-1001", "points": points}))
        add(Bad(f"refund points={points}", "POST", f"/v1/redemptions/{redemption_id}/refunds", {"points": points}))
    for points in (-1, INT64, 10**12 + 1):
        add(Bad(f"capture points={points}", "POST", f"/v1/holds/{hold_id}/capture", {"points": points}))
    for quantity in (0, -1, INT64):
        add(Bad(f"purchase quantity={quantity}", "POST", "/v1/purchases", _line(quantity=quantity)))
    add(Bad("entry id a number beyond int64", "GET", f"/v1/entries/{INT64}", key=False))
    add(Bad("hold id a number beyond int64", "POST", f"/v1/holds/{2**64}/capture", {}))
    add(Bad("redemption id a negative number", "POST", "/v1/redemptions/-1/refunds", {"points": 1}))
    add(Bad("hold id of another kind", "POST", "/v1/holds/rdm_0000000000000001/capture", {}))
    add(Bad("activity limit beyond int64", "GET", f"/v1/members/cust-1001/activity?limit={INT64}", key=False))
    # Money: too many decimals, NaN, infinities, exponents, negatives.
    for total in ("10.001", "10.0000001", "NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "1e400", "-1.00",
                  "1e-7", "", "ten"):
        add(Bad(f"purchase total={total!r}", "POST", "/v1/purchases", _purchase(total=total)))
    for price in ("0.001", "1.0000001", "NaN", "Infinity"):
        add(Bad(f"purchase unit_price={price!r}", "POST", "/v1/purchases", _line(unit_price=price)))
    add(Bad("purchase total=NaN (JSON literal)", "POST", "/v1/purchases",
            json.dumps(_purchase(total=float("nan"))).encode()))
    add(Bad("purchase total=Infinity (JSON literal)", "POST", "/v1/purchases",
            json.dumps(_purchase(total=float("inf"))).encode()))
    add(Bad("return amount=0.001", "POST", "/v1/purchases/order-seed/returns",
            {"return_id": "fuzz-ret", "amount": "0.001"}))
    add(Bad("return amount=NaN", "POST", "/v1/purchases/order-seed/returns", {"return_id": "fuzz-ret",
                                                                              "amount": "NaN"}))
    for amount in ("0", "0.00", 0):
        add(Bad(f"return amount={amount!r}", "POST", "/v1/purchases/order-seed/returns",
                {"return_id": f"fuzz-ret-zero-{amount!r}", "amount": amount}))
    add(Bad("return with neither lines nor amount", "POST", "/v1/purchases/order-seed/returns",
            {"return_id": "fuzz-ret-empty"}))
    for total in ("NaN", "Infinity", "0.001", "-5"):
        add(Bad(f"redemption quote order_total={total!r}", "POST", "/v1/redemptions/quote",
                {"member_id": "cust-1001", "order_total": total}, key=False))
    # Money is a decimal string of ASCII digits: a JSON number, padding or other digits are refused.
    for total in (30.5, 30, "  30.00 ", "\u0663\u0660.00", "3e1", "+30.00"):
        add(Bad(f"redemption quote order_total={total!r}", "POST", "/v1/redemptions/quote",
                {"member_id": "cust-1001", "order_total": total}, key=False))
    add(Bad("hold order_total=NaN", "POST", "/v1/holds", {"member_id": "cust-1001", "points": 5,
                                                         "order_total": "NaN"}))
    add(Bad("program settings max share NaN", "PATCH", "/v1/program",
            {"settings": {"max_redeem_share_of_order": "NaN"}}, key=False))
    # Unknown or malformed currencies.
    # (Codes are case-insensitive: "eur" is EUR, so a lowercase code of another currency is the mismatch.)
    for currency in ("XXX", "ZZZ", "usd", "EURO", "€", ""):
        add(Bad(f"purchase currency={currency!r}", "POST", "/v1/purchases", _purchase(currency=currency)))
    add(Bad("redemption quote currency=ZZZ", "POST", "/v1/redemptions/quote",
            {"member_id": "cust-1001", "order_total": "10.00", "currency": "ZZZ"}, key=False))
    # Bodies over the limit, with and without Content-Length; many lines under it.
    big = json.dumps(_adjust(metadata={"blob": "x" * (1 << 20)})).encode()
    add(Bad("body > 1 MiB with Content-Length", "POST", "/v1/adjustments", big, expect=(413,)))
    add(Bad("body > 1 MiB chunked (no Content-Length)", "POST", "/v1/adjustments", big, chunked=True, expect=(413,)))
    add(Bad("body of 8 MiB chunked", "POST", "/v1/purchases", b'{"lines": [' + b'{"sku": "A"},' * 700_000 + b"{}]}",
            chunked=True, expect=(413,)))
    # Found by an outside audit (issue 12): 500s, or accepted and never readable.
    add(Bad("paid_with_points above total", "POST", "/v1/purchases", _purchase(paid_with_points="10.01"),
            field=("body", "paid_with_points"), expect=(422,)))
    for order_id in ("a/b", "..", "a\\b"):
        add(Bad(f"order_id {order_id!r} (unreadable as a path)", "POST", "/v1/purchases",
                _purchase(order_id=order_id), field=("body", "order_id"), expect=(422,)))
    add(Bad("member attributes nested 255 deep", "PUT", "/v1/members/cust-fuzz-deep",
            ('{"attributes": ' + _nested(255) + "}").encode(), key=False, expect=(422,)))
    add(Bad("5001 purchase lines", "POST", "/v1/purchases",
            _purchase(lines=[{"sku": "A", "quantity": 1, "unit_price": "0.01"}] * 5001, total="50.01")))
    # Deeply nested bodies.
    for depth, kind in ((33, "object"), (255, "object"), (300, "array"), (1000, "object"), (5000, "array"),
                        (100_000, "array"), (30_000, "object")):
        raw = ('{"member_id": "cust-1001", "points": 5, "reason": "fuzz", "metadata": {"n": '
               + _nested(depth, kind) + "}}")
        add(Bad(f"metadata nested {depth} deep ({kind}s)", "POST", "/v1/adjustments", raw.encode()))
    # Invalid UTF-8, NUL, lone surrogates.
    add(Bad("invalid UTF-8 in a string", "POST", "/v1/adjustments",
            b'{"member_id": "cust-1001", "points": 5, "reason": "bad \xff\xfe byte"}'))
    add(Bad("overlong UTF-8 encoding", "POST", "/v1/adjustments",
            b'{"member_id": "cust-1001", "points": 5, "reason": "\xc0\xaf"}'))
    add(Bad("invalid UTF-8 in member id", "POST", "/v1/adjustments",
            b'{"member_id": "cust-\xff", "points": 5, "reason": "x"}'))
    add(Bad("UTF-16 body", "POST", "/v1/adjustments", json.dumps(_adjust()).encode("utf-16")))
    add(Bad("UTF-16LE body without BOM", "POST", "/v1/adjustments", json.dumps(_adjust()).encode("utf-16-le")))
    add(Bad("UTF-32 body", "POST", "/v1/adjustments", json.dumps(_adjust()).encode("utf-32")))
    add(Bad("NUL in reason", "POST", "/v1/adjustments", _adjust(reason="a\u0000b")))
    add(Bad("NUL in metadata", "POST", "/v1/adjustments", _adjust(metadata={"note": "a\u0000b"})))
    add(Bad("NUL in a metadata key", "POST", "/v1/adjustments", _adjust(metadata={"a\u0000": 1})))
    add(Bad("lone surrogate in reason", "POST", "/v1/adjustments",
            b'{"member_id": "cust-1001", "points": 5, "reason": "x\\ud800y"}'))
    add(Bad("lone surrogate in metadata", "POST", "/v1/adjustments",
            b'{"member_id": "cust-1001", "points": 5, "reason": "x", "metadata": {"k": "\\udfff"}}'))
    add(Bad("NUL in a member profile", "PUT", "/v1/members/cust-fuzz-nul", {"name": "a\u0000b"}, key=False))
    add(Bad("lone surrogate in a member profile", "PUT", "/v1/members/cust-fuzz-sur",
            b'{"name": "x\\ud800"}', key=False))
    add(Bad("invalid UTF-8 in the path", "GET", "/v1/members/%FF%FE/balance", key=False))
    add(Bad("Idempotency-Key of 300 characters", "POST", "/v1/adjustments", _adjust(),
            headers={"Idempotency-Key": "k" * 300}, key=False))
    add(Bad("empty Idempotency-Key", "POST", "/v1/adjustments", _adjust(), headers={"Idempotency-Key": ""}, key=False))
    # Timestamps without a zone, or not timestamps at all.
    for ts in ("2026-11-23T10:00:00", "2026-11-23 10:00:00", "2026-11-23", "2026-13-45T99:00:00Z", "yesterday"):
        add(Bad(f"adjustment occurred_at={ts!r}", "POST", "/v1/adjustments", _adjust(occurred_at=ts)))
    add(Bad("adjustment expires_at without zone", "POST", "/v1/adjustments", _adjust(expires_at="2027-01-01T00:00:00")))
    add(Bad("purchase occurred_at without zone", "POST", "/v1/purchases", _purchase(occurred_at="2026-11-23T09:30:00")))
    add(Bad("event occurred_at without zone", "POST", "/v1/events",
            {"member_id": "cust-1001", "event_id": "fuzz-ev", "name": "x", "occurred_at": "2026-11-23T09:30:00"}))
    add(Bad("earn rules effective_from without zone", "PUT", "/v1/program/earn-rules",
            {"base": {"points_per_unit": "1"}, "effective_from": "2026-12-01T00:00:00"}, key=False))
    add(Bad("expiration policy effective_from without zone", "PUT", "/v1/program/expiration-policy",
            {"kind": "none", "effective_from": "2026-12-01T00:00:00"}, key=False))
    add(Bad("tier assignment until without zone", "POST", "/v1/members/cust-1001/tier",
            {"tier": "gold", "until": "2027-01-01T00:00:00", "reason": "fuzz"}, key=False))
    # Lax coercions: a number as a date, numbers or strings as booleans.
    for birthday in (0, "0", "1990-12-10T00:00:00"):
        add(Bad(f"member birthday={birthday!r}", "PUT", "/v1/members/cust-fuzz-bday", {"birthday": birthday},
                key=False, expect=(422,)))
    for flag in (0, 1, "true"):
        add(Bad(f"expiration policy round_to_end_of_month={flag!r}", "PUT", "/v1/program/expiration-policy",
                {"kind": "fixed", "months": 12, "round_to_end_of_month": flag}, key=False, expect=(422,)))
    # A literal path segment beside a parameter: an undeclared method is 405, not the parameter's route.
    add(Bad("GET /v1/redemptions/quote", "GET", "/v1/redemptions/quote", key=False, expect=(405,)))
    add(Bad("GET /v1/purchases/quote", "GET", "/v1/purchases/quote", key=False, expect=(405,)))
    # Not JSON at all, or not the media type.
    add(Bad("not JSON", "POST", "/v1/adjustments", b"points=5&member_id=cust-1001"))
    add(Bad("JSON as text/plain", "POST", "/v1/adjustments", json.dumps(_adjust()).encode(),
            headers={"Content-Type": "text/plain"}))
    add(Bad("a JSON array body", "POST", "/v1/adjustments", b"[1, 2, 3]"))
    add(Bad("an empty body", "POST", "/v1/adjustments", b""))
    return cases


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _leaves(schema: dict[str, Any], components: dict[str, Any], path: tuple[Any, ...], depth: int = 0
            ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(path, schema) of every scalar property of a request body, through nested objects and arrays."""
    schema = _resolve(schema, components)
    options = [_resolve(o, components) for o in schema.get("anyOf", [])] or [schema]
    out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for option in options:
        if depth < 4 and option.get("type") == "object" and "properties" in option:
            for name, sub in option["properties"].items():
                out += _leaves(sub, components, (*path, name), depth + 1)
        elif depth < 4 and option.get("type") == "array" and "items" in option:
            out += _leaves(option["items"], components, (*path, 0), depth + 1)
        elif option.get("type") in ("integer", "string"):
            out.append((path, option))
    return out


def _nest(path: tuple[Any, ...], value: Any) -> Any:
    for part in reversed(path):
        value = [value] if isinstance(part, int) else {part: value}
    return value


PATH_VALUES = {"member_id": "cust-1001", "order_id": "order-seed", "key_id": "00000000-0000-4000-8000-000000000000"}


def spec_probes() -> list[Bad]:
    """Generated from the committed document: every integer field of every request (body and query) gets a
    value beyond int64, and every date-time field a timestamp without a zone. Each must be refused with a
    validation error naming that field (checked in ``_judge``)."""
    doc = json.loads(OPENAPI.read_text())
    components = doc.get("components", {}).get("schemas", {})
    probes: list[Bad] = []
    for path, methods in sorted(doc["paths"].items()):
        for method, op in sorted(methods.items()):
            url = path
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    kind = _resolve(p.get("schema", {}), components).get("type")
                    url = url.replace("{" + p["name"] + "}", str(PATH_VALUES.get(p["name"], 1 if kind == "integer"
                                                                                  else "x")))
            for p in op.get("parameters", []):
                if p["in"] == "query" and _resolve(p.get("schema", {}), components).get("type") == "integer":
                    probes.append(Bad(f"spec: {method.upper()} {path} ?{p['name']}={INT64}", method.upper(),
                                      f"{url}?{p['name']}={INT64}", key=False, field=("query", p["name"])))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if not body:
                continue
            for leaf, schema in _leaves(body, components, ()):
                name = ".".join(str(x) for x in leaf)
                if schema.get("type") == "integer":
                    probes.append(Bad(f"spec: {method.upper()} {path} {name}={INT64}", method.upper(), url,
                                      _nest(leaf, INT64), field=("body", *leaf)))
                elif schema.get("format") == "date-time":
                    probes.append(Bad(f"spec: {method.upper()} {path} {name} without zone", method.upper(), url,
                                      _nest(leaf, "2026-11-23T10:00:00"), field=("body", *leaf)))
    return probes


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 64 * 1024):
        yield data[i:i + 64 * 1024]


async def send_bad(client: httpx.AsyncClient, key: str, case: Bad, idem: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if case.key:
        headers["Idempotency-Key"] = idem
    headers.update(case.headers)
    content: Any
    if case.body is None:
        content = None
    elif isinstance(case.body, bytes):
        content = case.body
    else:
        content = json.dumps(case.body).encode()
    if case.chunked and content is not None:
        content = _chunks(content)
    return await client.request(case.method, case.path, content=content, headers=headers)


async def run_explicit(run: Run, base_url: str, key: str, db_url: str, hold_id: int, redemption_id: int
                       ) -> dict[str, Any]:
    conn = await connect(db_url)
    results: list[dict[str, Any]] = []
    try:
        # A fresh connection per case: one case's failure must not close the next one's connection.
        async with httpx.AsyncClient(base_url=base_url, timeout=60,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for i, case in enumerate(explicit_cases(hold_id, redemption_id) + spec_probes()):
                before = await table_counts(conn)
                try:
                    r = await send_bad(client, key, case, f"fuzz-explicit-{i}")
                except httpx.HTTPError as exc:
                    run.anomaly("bad_input_no_answer", case=case.name, error=f"{type(exc).__name__}: {exc}"[:300])
                    results.append({"case": case.name, "status": None})
                    continue
                after = await table_counts(conn)
                results.append(_judge(run, case, r, before, after))
    finally:
        await conn.close()
    return {"explicit_cases": len(results),
            "explicit_values_that_passed_validation": [x["case"] for x in results if x.get("passed_validation")],
            "explicit_statuses": dict(sorted({f"{x['status']} {x.get('code')}": sum(
                1 for y in results if (y['status'], y.get('code')) == (x['status'], x.get('code')))
                for x in results}.items())),
            "explicit_results": results}


def _judge(run: Run, case: Bad, r: httpx.Response, before: dict[str, int], after: dict[str, int]
           ) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    out = {"case": case.name, "status": r.status_code, "code": code}
    if not 400 <= r.status_code < 500:
        run.anomaly("bad_input_not_4xx", case=case.name, status=r.status_code, code=code, body=r.text[:300])
    elif case.expect and r.status_code not in case.expect:
        run.anomaly("bad_input_wrong_status", case=case.name, status=r.status_code, code=code,
                    expected=list(case.expect), body=r.text[:200])
    if not r.headers.get("content-type", "").startswith("application/problem+json") or not code:
        run.anomaly("bad_input_not_problem_json", case=case.name, status=r.status_code,
                    content_type=r.headers.get("content-type"), body=r.text[:200])
    if case.field is not None and 400 <= r.status_code < 500 and code == "validation_error":
        named = [e.get("loc") for e in (body.get("errors") or [])] if isinstance(body, dict) else []
        if not any(tuple(loc or ())[:len(case.field)] == case.field for loc in named):
            # The value got through validation: harmless if the answer is still a 4xx that wrote nothing
            # (checked above and below), but the document promises a bound or a zone it does not enforce.
            out["passed_validation"] = True
    if r.status_code >= 400 and isinstance(body, dict) and code and not body.get("request_id"):
        run.anomaly("error_without_request_id", subject=code, case_name=case.name, status=r.status_code)
    if "x-request-id" not in r.headers:
        run.anomaly("no_request_id_header", subject=code or str(r.status_code), case_name=case.name)
    found = leaks(r.text)
    if found:
        run.anomaly("internals_in_error_body", case=case.name, patterns=found, body=r.text[:300])
    changed = {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}
    keys = changed.pop("idempotency_keys", 0)
    if changed:
        run.anomaly("bad_input_wrote", case=case.name, status=r.status_code, code=code, rows=changed)
    if keys and code not in REMEMBERED:
        run.anomaly("validation_failure_stored_under_key", case=case.name, status=r.status_code, code=code)
    return out


async def retry_after_validation_error(run: Run, base_url: str, key: str) -> dict[str, Any]:
    """README: 'Requests that fail validation are not stored', so a client may correct the request and send
    it again under the same key. Try it for a validation failure the service finds itself (decimals)."""
    auth = {"Authorization": f"Bearer {key}", "Idempotency-Key": "fuzz-fix-and-retry"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        first = await client.post("/v1/purchases", json=_purchase(order_id="fuzz-fix", total="10.001"), headers=auth)
        second = await client.post("/v1/purchases", json=_purchase(order_id="fuzz-fix"), headers=auth)
    out = {"first": f"{first.status_code} {first.json().get('code')}", "second": second.status_code,
           "second_code": second.json().get("code") if second.status_code >= 400 else None}
    if first.status_code == 422 and second.status_code != 201:
        run.anomaly("corrected_request_refused_after_validation_error", first=out["first"],
                    second=f"{second.status_code} {out['second_code']}")
    return out


def cli_unknown_currency(run: Run, db_url: str) -> dict[str, Any]:
    proc = subprocess.run([str(BIN / "points-ledger"), "create-program", "--name", "fuzz", "--currency", "XYZ"],
                          env={**os.environ, "DATABASE_URL": db_url}, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    if proc.returncode != 2:
        run.anomaly("cli_unknown_currency_accepted", exit_code=proc.returncode,
                    output=(proc.stdout + proc.stderr)[-300:])
    return {"create_program_unknown_currency_exit": proc.returncode}


# --- schemathesis --------------------------------------------------------------------------------------------


def run_schemathesis(run: Run, args: Any, base_url: str, key: str) -> dict[str, Any]:
    report_dir = run.dir / "schemathesis"
    report_dir.mkdir(exist_ok=True)
    cmd = [str(BIN / "schemathesis"), "run", str(OPENAPI), "--url", base_url, "-H", f"Authorization: Bearer {key}",
           "--checks", CHECKS, "--max-examples", str(args.max_examples), "--phases", args.phases,
           "--max-time", str(int(args.max_time)), "--seed", str(run.seed % 2**31), "--workers", str(args.st_workers),
           "--request-timeout", "30", "--report", "json,har", "--report-dir", str(report_dir),
           "--report-json-path", str(report_dir / "report.json"), "--report-har-path", str(report_dir / "cases.har"),
           "--no-color", "--suppress-health-check", "all", "--generation-database", "none"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "reliability.st_hooks", "PYTHONPATH": str(ROOT)}
    with (run.dir / "schemathesis.out").open("w") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=args.max_time + 180,
                              cwd=ROOT)
    try:
        report = json.loads((report_dir / "report.json").read_text())
    except (OSError, ValueError):
        run.anomaly("schemathesis_no_report", exit_code=proc.returncode,
                    output=(run.dir / "schemathesis.out").read_text()[-1500:])
        return {"schemathesis_exit": proc.returncode}
    for failure in report.get("failures", []):
        if failure["code"] == "ST101":  # server errors: each one is reported from the HAR, with its cause
            continue
        run.anomaly(f"schemathesis_{failure['code']}", title=failure["title"], count=failure["count"],
                    operations=failure.get("operations", [])[:20])
    # Errors of schemathesis itself (not of the service) are reported, not counted as anomalies.
    tool_errors = [str(e)[:300] for e in report.get("errors", [])]
    if tool_errors:
        print(f"  note: schemathesis had {len(tool_errors)} internal error(s): {tool_errors}")
    server_errors, responses, leaked = _scan_har(run, report_dir / "cases.har")
    return {"schemathesis_exit": proc.returncode, "schemathesis_cases": report["test_cases"]["generated"],
            "schemathesis_failing_cases": report["test_cases"]["with_failures"],
            "schemathesis_operations": report["operations"]["tested"], "schemathesis_phases": report["phases"],
            "schemathesis_seconds": round(report.get("running_time", 0), 1),
            "schemathesis_failures": {f["code"] + " " + f["title"]: f["count"] for f in report.get("failures", [])},
            "schemathesis_responses": responses, "server_errors": server_errors,
            "error_bodies_with_internals": leaked, "schemathesis_tool_errors": tool_errors,
            "schemathesis_output": str(run.dir / "schemathesis.out")}


def _scan_har(run: Run, path: Path) -> tuple[int, int, int]:
    try:
        entries = json.loads(path.read_text())["log"]["entries"]
    except (OSError, ValueError, KeyError):
        return 0, 0, 0
    server_errors = leaked = 0
    for e in entries:
        status = e["response"]["status"]
        text = (e["response"].get("content") or {}).get("text") or ""
        where = f"{e['request']['method']} {e['request']['url']}"
        if status >= 500:
            server_errors += 1
            sent = (e["request"].get("postData") or {}).get("text") or ""
            cause = ("nul-or-surrogate-in-body" if _NUL_OR_SURROGATE.search(sent)
                     else "return-amount-zero" if e["request"]["url"].endswith("/returns") and _ZERO_AMOUNT.search(sent)
                     else "other")
            run.anomaly("server_error", subject=cause, request=where[:200], status=status, body=text[:300],
                        sent=sent[:300])
        if status >= 400 and leaks(text):
            leaked += 1
            run.anomaly("internals_in_error_body", request=where[:200], patterns=leaks(text), body=text[:300])
    return server_errors, len(entries), leaked


# --- the run -------------------------------------------------------------------------------------------------


async def seed(base_url: str, key: str) -> tuple[int, int]:
    """A member with points, an order to return against, an open hold and a redemption to refund."""
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        (await c.put("/v1/members/cust-1001", json={"name": "Fuzz"}, headers=auth)).raise_for_status()
        (await c.post("/v1/adjustments", json=_adjust(points=100_000), headers={**auth, "Idempotency-Key": "s1"})
         ).raise_for_status()
        (await c.post("/v1/purchases", json=_purchase(order_id="order-seed"), headers={**auth, "Idempotency-Key": "s2"})
         ).raise_for_status()
        hold = await c.post("/v1/holds", json={"member_id": "cust-1001", "points": 50, "expires_in_seconds": 86400},
                            headers={**auth, "Idempotency-Key": "s3"})
        redemption = await c.post("/v1/redemptions", json={"member_id": "cust-1001", "points": 50},
                                  headers={**auth, "Idempotency-Key": "s4"})
    return hold.json()["hold"]["id"], redemption.json()["redemption"]["id"]


async def fuzz(args: Any, run: Run) -> str:
    server_url, close_server = await asyncio.to_thread(open_server, args, run)
    db = await FreshDatabase(server_url, "fuzz").create()
    service = Service(db.url, run.dir / "service.log", workers=args.workers, env={"PL_SCHEDULER_ENABLED": "false"})
    try:
        service.start()  # it boots while the program is created
        program_id, key = await create_program(db.url, "reliability fuzz")
        await asyncio.to_thread(service.wait_ready)
        hold_id, redemption_id = await seed(service.base_url, key)
        run.note(f"explicit cases against {service.base_url}")
        run.figures.update(await run_explicit(run, service.base_url, key, db.url, hold_id, redemption_id))
        run.figures["fix_and_retry"] = await retry_after_validation_error(run, service.base_url, key)
        run.figures.update(await asyncio.to_thread(cli_unknown_currency, run, db.url))
        if not args.skip_schemathesis:
            run.note(f"schemathesis: phases {args.phases}, {args.max_examples} examples, {args.max_time:.0f}s at most")
            run.figures.update(await asyncio.to_thread(run_schemathesis, run, args, service.base_url, key))
        rc, report, output = await asyncio.to_thread(run_verify, db.url, program_id)
        if rc != 0:
            run.anomaly("verify_not_clean", exit_code=rc, output=output[-1500:])
        run.figures["service_log_warnings_and_errors"] = service.errors()
        run.check_service_log(service.log_path)
        return (f"schemathesis_cases={run.figures.get('schemathesis_cases')} "
                f"server_errors={run.figures.get('server_errors', 0)} "
                f"spec_failures={sum(run.figures.get('schemathesis_failures', {}).values())} "
                f"explicit_cases={run.figures['explicit_cases']}")
    finally:
        service.stop()
        if not args.keep_database:
            await db.drop()
        await asyncio.to_thread(close_server)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run = Run("fuzz", args.out, args.seed)
    headline = execute(run, args, fuzz)
    for name, count in run.figures.get("schemathesis_failures", {}).items():
        print(f"  schemathesis {name}: {count}")
    return run.finish(headline)


if __name__ == "__main__":
    sys.exit(main())
