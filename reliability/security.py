"""Security, generated from the app's route table (``create_app()``'s routes, so a new route is covered the day
it is added): authentication, scopes, tenant isolation, key storage, revocation, CORS, rate limiting, logs and
error bodies.

For every route of the table:

* without a key, with a malformed key, with a wrong secret under a real prefix and with another scheme: 401
  (only ``/healthz``, ``/readyz`` and ``/metrics`` may be public, and no other route may lack an auth
  dependency);
* the scopes it accepts are *derived by trying* a key with only ``read``, ``earn``, ``redeem`` and with
  ``admin`` (403 ``insufficient_scope`` means refused) and must equal the scopes its ``require(...)``
  dependency declares, plus ``admin`` (which implies every other); a write is always refused to a read-only
  key;
* with the admin key of *another* program, every resource id of this program (member, entry, hold,
  redemption, order, API key: in the path, or a ``member_id`` in the body) answers 404, never 403 or 2xx;
  upserts and enrolling writes create the other program's own member instead; afterwards nothing of this
  program has changed.

And across the run: keys are only hashed at rest (every table dumped and searched for every key issued, the
stored hash checked to be the SHA-256 of the key) and never in the service logs, nor is a member's personal data
or member id; a revoked key is refused at once by every process (two workers and a second service on the
same database, their key caches warmed first, asked right after the DELETE returns); CORS preflights get
no ``Access-Control-Allow-Origin``; rate limiting is off by default and, when configured, answers 429
``rate_limited`` with ``Retry-After`` per key; every error body is problem+json with a ``code`` and a
``request_id`` and shows no stack trace or SQL; no 5xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from reliability.harness import (
    FreshDatabase,
    Run,
    Service,
    common_parser,
    connect,
    create_program,
    execute,
    leaks,
    open_server,
)

PUBLIC = {"/healthz", "/readyz", "/metrics"}
SCOPES = ("read", "earn", "redeem", "admin")
TIERS = {"tiers": [{"name": "base", "threshold": "0"}, {"name": "gold", "threshold": "1000"}],
         "window": {"kind": "calendar_year"}, "retention": {"kind": "end_of_next_year"}}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
QUICK = {"revocation_rounds": 3}
FULL = {"revocation_rounds": 30}


def parse(argv: list[str] | None) -> Any:
    parser = common_parser("security", __doc__ or "")
    parser.add_argument("--revocation-rounds", type=int, help="revoke-then-use races (default 30; --quick 3)")
    parser.set_defaults(workers=None)
    args = parser.parse_args(argv)
    if args.workers is None:  # quick: one worker (the second service is the other process); else two
        args.workers = 1 if args.quick else 2
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# --- the route table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    declared: frozenset[str]  # scopes of its require(...) dependency; empty: no auth dependency
    params: tuple[str, ...]
    body_member: bool  # its request body names a member_id


def _api_routes(routes: list[Any], prefix: str = "") -> Any:
    """Every APIRoute, through included routers (FastAPI wraps them) and mounts."""
    from fastapi.routing import APIRoute

    for r in routes:
        if isinstance(r, APIRoute):
            yield prefix + r.path, r
        elif hasattr(r, "original_router"):
            extra = getattr(getattr(r, "include_context", None), "prefix", "") or ""
            yield from _api_routes(r.original_router.routes, prefix + extra)
        elif hasattr(r, "routes"):
            yield from _api_routes(r.routes, prefix + getattr(r, "path", ""))


def route_table() -> tuple[list[Route], list[str]]:
    """The routes with their declared scopes; and what the OpenAPI document lists that the walk missed."""
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(database_url="postgresql://unused"))
    schemas = app.openapi()
    components = schemas.get("components", {}).get("schemas", {})
    routes: list[Route] = []
    for path, r in _api_routes(app.routes):
        if path.startswith("/dashboard"):
            continue  # HTML pages behind a session cookie, not the API's keys: tests/test_dashboard*.py
        declared: set[str] = set()
        stack = [r.dependant]
        while stack:
            d = stack.pop()
            name = getattr(d.call, "__name__", "") or ""
            if name.startswith("require_"):
                declared |= set(name.removeprefix("require_").split("_or_"))
            stack.extend(d.dependencies)
        for method in sorted(r.methods - {"HEAD", "OPTIONS"}):
            op = schemas["paths"].get(path, {}).get(method.lower(), {})
            ref = (op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
                   .get("$ref", ""))
            props = components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}) if ref else {}
            routes.append(Route(method, path, frozenset(declared), tuple(p.name for p in r.dependant.path_params),
                                "member_id" in props))
    walked = {(r.method, r.path) for r in routes}
    missed = [f"{m.upper()} {p}" for p, ops in schemas["paths"].items() for m in ops if (m.upper(), p) not in walked]
    return routes, missed


# --- requests, every one of them checked ---------------------------------------------------------------------


@dataclass
class Probe:
    run: Run
    clients: dict[str, httpx.AsyncClient]
    log: Any
    statuses: Counter[str] = field(default_factory=Counter)
    error_bodies: int = 0

    async def call(self, method: str, path: str, *, key: str | None = None, body: Any = None, service: str = "s1",
                   headers: dict[str, str] | None = None, purpose: str = "", fresh: bool = False,
                   raw: bytes | None = None) -> httpx.Response:
        h = {"Idempotency-Key": f"sec-{uuid.uuid4().hex}"} if method in WRITE_METHODS else {}
        if key is not None:
            h["Authorization"] = key if " " in key else f"Bearer {key}"
        h.update(headers or {})
        client = self.clients[service]
        content = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if content is not None:
            h["Content-Type"] = "application/json"
        if fresh:  # a new connection: lets the kernel hand it to any worker
            async with httpx.AsyncClient(base_url=client.base_url, timeout=30,
                                         limits=httpx.Limits(max_keepalive_connections=0)) as one:
                r = await one.request(method, path, content=content, headers=h)
        else:
            r = await client.request(method, path, content=content, headers=h)
        self.statuses[str(r.status_code)] += 1
        self.log.write(json.dumps({"purpose": purpose, "service": service, "method": method, "path": path,
                                   "status": r.status_code, "body": r.text[:500]}) + "\n")
        self._check_answer(method, path, r, purpose)
        return r

    def _check_answer(self, method: str, path: str, r: httpx.Response, purpose: str) -> None:
        if r.status_code >= 500:
            self.run.anomaly("server_error", request=f"{method} {path}", purpose=purpose, status=r.status_code,
                             body=r.text[:300])
        if r.status_code < 400 or method == "OPTIONS" and r.status_code == 405 and not r.content:
            return
        self.error_bodies += 1
        try:
            body = r.json()
        except ValueError:
            body = None
        if not r.headers.get("content-type", "").startswith("application/problem+json") or not isinstance(
                body, dict) or not body.get("code"):
            self.run.anomaly("error_not_problem_json", request=f"{method} {path}", status=r.status_code,
                             content_type=r.headers.get("content-type"), body=r.text[:200])
        elif not body.get("request_id"):
            self.run.anomaly("error_without_request_id", subject=body.get("code"), request=f"{method} {path}",
                             status=r.status_code)
        if "x-request-id" not in r.headers:
            self.run.anomaly("no_request_id_header", subject=str(r.status_code), request=f"{method} {path}")
        found = leaks(r.text)
        if found:
            self.run.anomaly("internals_in_error_body", request=f"{method} {path}", patterns=found,
                             body=r.text[:300])


def fill(path: str, values: dict[str, Any]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", str(value))
    return path


# --- the checks ----------------------------------------------------------------------------------------------


@dataclass
class Tenant:
    program_id: str
    admin: str
    keys: dict[str, str] = field(default_factory=dict)  # scope -> key
    key_ids: dict[str, str] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)  # path parameter -> a real resource id
    member: str = ""
    pii: dict[str, str] = field(default_factory=dict)


async def make_key(p: Probe, admin: str, scopes: list[str], name: str = "sec") -> tuple[str, str]:
    r = await p.call("POST", "/v1/api-keys", key=admin, body={"name": name, "scopes": scopes}, purpose="setup")
    r.raise_for_status()
    return r.json()["key"], r.json()["id"]


async def seed(p: Probe, t: Tenant, tag: str) -> None:
    """A member with personal data and a resource of every kind a path can name."""
    a = t.admin
    for scope in ("read", "earn", "redeem"):
        t.keys[scope], t.key_ids[scope] = await make_key(p, a, [scope])
    t.keys["admin"] = a
    t.member = f"sec-{tag}-member"
    t.pii = {"name": f"Ada Secret {tag}", "email": f"ada.{tag}@secret.example", "phone": "+49 30 5550199"}
    (await p.call("PUT", f"/v1/members/{t.member}", key=a, body=t.pii, purpose="setup")).raise_for_status()
    (await p.call("PUT", "/v1/program/tiers", key=a, body=TIERS, purpose="setup")).raise_for_status()
    r = await p.call("POST", "/v1/adjustments", key=a, body={"member_id": t.member, "points": 5000, "reason": "seed"},
                     purpose="setup")
    t.ids["entry_id"] = r.json()["entry"]["id"]
    order = f"sec-{tag}-order"
    r = await p.call("POST", "/v1/purchases", key=a, purpose="setup", body={
        "member_id": t.member, "order_id": order, "currency": "EUR", "total": "20.00",
        "lines": [{"sku": "A", "quantity": 2, "unit_price": "10.00"}]})
    r.raise_for_status()
    t.ids["order_id"] = order
    r = await p.call("POST", "/v1/holds", key=a, body={"member_id": t.member, "points": 100,
                                                      "expires_in_seconds": 3600}, purpose="setup")
    t.ids["hold_id"] = r.json()["hold"]["id"]
    r = await p.call("POST", "/v1/redemptions", key=a, body={"member_id": t.member, "points": 100}, purpose="setup")
    t.ids["redemption_id"] = r.json()["redemption"]["id"]
    t.ids["member_id"] = t.member
    _, t.ids["key_id"] = await make_key(p, a, ["read"], "victim")
    r = await p.call("POST", "/v1/webhook-endpoints", key=a, body={"url": f"http://127.0.0.1:9/sec-{tag}"},
                     purpose="setup")
    r.raise_for_status()
    t.ids["endpoint_id"] = r.json()["id"]
    t.ids["delivery_id"] = "dlv_0000000000000001"
    # issue-14: a partner-code reward with codes, and a voucher exchanged for it
    r = await p.call("POST", "/v1/rewards", key=a, body={"name": "Cinema", "kind": "partner_code", "cost_points": 10},
                     purpose="setup")
    t.ids["reward_id"] = r.json()["id"]
    await p.call("POST", f"/v1/rewards/{t.ids['reward_id']}/codes", key=a, body={"codes": [f"{tag}-1", f"{tag}-2"]},
                 purpose="setup")
    r = await p.call("POST", f"/v1/rewards/{t.ids['reward_id']}/exchanges", key=a, body={"member_id": t.member},
                     purpose="setup")
    t.ids["code"] = r.json()["voucher"]["code"]
    # issue-17: a saved audience; a segment is a name every program has (its own members in it), not a resource
    r = await p.call("POST", "/v1/audiences", key=a, body={"name": f"sec-{tag}", "filter": {"tiers": ["gold"]}},
                     purpose="setup")
    r.raise_for_status()
    t.ids["audience_id"] = r.json()["id"]
    t.ids["segment"] = "champions"


NOWHERE = {"member_id": "sec-nobody", "entry_id": 9_000_000_001, "hold_id": 9_000_000_001,
           "redemption_id": 9_000_000_001, "order_id": "sec-no-order", "key_id": "00000000-0000-4000-8000-00000000dead",
           "endpoint_id": "00000000-0000-4000-8000-00000000beef", "delivery_id": "dlv_0000000000000001",
           "reward_id": "rwd_0000000000000000", "code": "2222-2222-2222", "audience_id": "aud_0000000000000000",
           "segment": "champions"}


def valid_body(route: Route, member: str) -> Any:
    """A body that passes validation, so that what answers is the lookup of the resource."""
    examples: dict[tuple[str, str], Any] = {
        ("PUT", "/v1/members/{member_id}"): {"name": "intruder"},
        ("POST", "/v1/members/{member_id}/tier"): {"tier": "gold", "until": "2030-01-01T00:00:00Z", "reason": "x"},
        ("POST", "/v1/members/{member_id}/merge"): {"from": member},
        ("POST", "/v1/entries/{entry_id}/reverse"): {"reason": "intruder"},
        ("POST", "/v1/holds/{hold_id}/capture"): {},
        ("POST", "/v1/holds/{hold_id}/void"): {},
        ("POST", "/v1/redemptions/{redemption_id}/refunds"): {"points": 1},
        ("POST", "/v1/purchases/{order_id}/returns"): {"return_id": "intruder", "amount": "1.00"},
        ("POST", "/v1/adjustments"): {"member_id": member, "points": 5, "reason": "intruder"},
        ("POST", "/v1/redemptions"): {"member_id": member, "points": 1},
        ("POST", "/v1/holds"): {"member_id": member, "points": 1},
        ("POST", "/v1/redemptions/quote"): {"member_id": member, "order_total": "10.00"},
        ("POST", "/v1/purchases"): {"member_id": member, "order_id": "intruder-order", "currency": "EUR",
                                    "total": "1.00", "lines": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}]},
        ("POST", "/v1/purchases/quote"): {"member_id": member, "order_id": "intruder-quote", "currency": "EUR",
                                          "total": "1.00",
                                          "lines": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}]},
        ("POST", "/v1/events"): {"member_id": member, "event_id": "intruder-event", "name": "none"},
        ("PATCH", "/v1/webhook-endpoints/{endpoint_id}"): {"description": "intruder"},
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/recover"): {"since": "2020-01-01T00:00:00Z"},
        ("POST", "/v1/rewards/{reward_id}/codes"): {"codes": ["intruder"]},
        ("POST", "/v1/rewards/{reward_id}/exchanges"): {"member_id": member},
        ("POST", "/v1/vouchers/{code}/redeem"): {"reference": "intruder"},
        ("PUT", "/v1/audiences/{audience_id}"): {"name": "intruder", "filter": {}},
    }
    return examples.get((route.method, route.path), {} if route.method in WRITE_METHODS else None)


# Writes that create the caller's own member instead of touching another program's (upsert, enrolment).
# A segment's pages name a segment every program has: the other program is shown its own members in it (that none of
# this program's appear there is tests/test_insight.py's).
OWN_NAMESPACE = {("PUT", "/v1/members/{member_id}"), ("POST", "/v1/purchases"), ("POST", "/v1/events"),
                 ("POST", "/v1/purchases/quote"), ("GET", "/v1/segments/{segment}/members"),
                 ("GET", "/v1/segments/{segment}/members/export")}


async def check_authentication(p: Probe, routes: list[Route], a: Tenant) -> dict[str, Any]:
    bad_keys = {"none": None, "malformed": "Bearer not-a-key", "wrong secret": a.admin[:17] + "x" * 43,
                "basic scheme": "Basic YWRtaW46YWRtaW4=", "prefix only": "Bearer plk_",
                "revoked-looking": "Bearer plk_000000000000_" + "A" * 43}
    checked = 0
    for route in routes:
        path = fill(route.path, NOWHERE)
        body = {} if route.method in WRITE_METHODS else None
        if not route.declared:
            if route.path not in PUBLIC:
                p.run.anomaly("route_without_auth", route=f"{route.method} {route.path}")
            continue
        for label, key in bad_keys.items():
            r = await p.call(route.method, path, key=key, body=body, purpose=f"auth:{label}")
            checked += 1
            if r.status_code != 401 or r.json().get("code") != "unauthorized":
                p.run.anomaly("not_401_without_valid_key", route=f"{route.method} {route.path}", key=label,
                              status=r.status_code, body=r.text[:200])
    # A write without a key and with a body that is not JSON: still 401 first, the body unread.
    parsed_first = []
    for route in routes:
        if route.declared and route.method in WRITE_METHODS:
            r = await p.clients["s1"].request(route.method, fill(route.path, NOWHERE), content=b"{not json",
                                              headers={"Content-Type": "application/json"})
            p.statuses[str(r.status_code)] += 1
            if r.status_code != 401:
                parsed_first.append(f"{route.method} {route.path}: {r.status_code}")
    if parsed_first:
        p.run.anomaly("body_parsed_before_authentication", routes=len(parsed_first), examples=parsed_first[:5])
    return {"auth_requests": checked, "unauthenticated_bodies_parsed_first": len(parsed_first)}


async def check_scopes(p: Probe, routes: list[Route], a: Tenant) -> dict[str, Any]:
    table: dict[str, list[str]] = {}
    for route in routes:
        if not route.declared:
            continue
        path = fill(route.path, NOWHERE)
        allowed = set()
        for scope in SCOPES:
            r = await p.call(route.method, path, key=a.keys[scope], body={} if route.method in WRITE_METHODS else None,
                             purpose=f"scope:{scope}")
            if r.status_code == 401:
                p.run.anomaly("valid_key_refused", route=f"{route.method} {route.path}", scope=scope)
            if r.status_code != 403:
                allowed.add(scope)
            elif r.json().get("code") != "insufficient_scope":
                p.run.anomaly("403_without_insufficient_scope", route=f"{route.method} {route.path}",
                              body=r.text[:200])
        name = f"{route.method} {route.path}"
        table[name] = sorted(allowed)
        if route.method in WRITE_METHODS:
            # A key without the scope is refused before the body is read, whatever the body is.
            for scope in sorted(set(SCOPES) - allowed):
                r = await p.call(route.method, path, key=a.keys[scope], raw=b"{not json",
                                 purpose=f"scope-before-body:{scope}")
                if r.status_code != 403:
                    p.run.anomaly("body_parsed_before_scope_check", route=name, scope=scope, status=r.status_code,
                                  body=r.text[:200])
        expected = set(route.declared) | {"admin"}
        if allowed != expected:
            p.run.anomaly("scopes_differ_from_declared", route=name, derived=sorted(allowed),
                          declared=sorted(route.declared))
        if route.method in WRITE_METHODS and "read" in allowed and route.path != "/v1/admin/verify":
            p.run.anomaly("read_key_may_write", route=name)
    return {"scopes_by_route": table}


async def snapshot(p: Probe, a: Tenant, db_url: str) -> dict[str, Any]:
    conn = await connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT 'entries' AS t, count(*) AS n FROM entries WHERE program_id = $1::uuid UNION ALL "
            "SELECT 'members', count(*) FROM members WHERE program_id = $1::uuid UNION ALL "
            "SELECT 'holds_open', count(*) FROM holds WHERE program_id = $1::uuid AND status = 'open' UNION ALL "
            "SELECT 'keys_live', count(*) FROM api_keys WHERE program_id = $1::uuid AND revoked_at IS NULL UNION ALL "
            "SELECT 'refunds', count(*) FROM redemption_refunds f JOIN redemptions r ON r.id = f.redemption_id "
            "WHERE r.program_id = $1::uuid UNION ALL "
            "SELECT 'returns', count(*) FROM purchase_returns x JOIN purchases y ON y.id = x.purchase_id "
            "WHERE y.program_id = $1::uuid", a.program_id)
    finally:
        await conn.close()
    balance = (await p.call("GET", f"/v1/members/{a.member}/balance", key=a.admin, purpose="snapshot")).json()
    member = (await p.call("GET", f"/v1/members/{a.member}", key=a.admin, purpose="snapshot")).json()
    return {"counts": {r["t"]: r["n"] for r in rows}, "balance": balance,
            "member": {k: member.get(k) for k in ("name", "email", "phone", "birthday", "attributes", "tier")}}


async def check_isolation(p: Probe, routes: list[Route], a: Tenant, b: Tenant, db_url: str) -> dict[str, Any]:
    before = await snapshot(p, a, db_url)
    checked = 0
    # Upserts and enrolling writes last: they create the other program's own member under the same member
    # id (ids are per program), after which reading that id shows the other program its own member.
    ordered = sorted(routes, key=lambda r: (r.method, r.path) in OWN_NAMESPACE)
    for route in ordered:
        if not route.declared or not (route.params or route.body_member):
            continue
        name = f"{route.method} {route.path}"
        path = fill(route.path, a.ids)
        body = valid_body(route, a.member)
        if route.method == "GET" and route.params:  # control: the id is real for its own program
            own = await p.call(route.method, path, key=a.admin, purpose="isolation:control")
            if own.status_code != 200:
                p.run.anomaly("isolation_control_failed", route=name, status=own.status_code, body=own.text[:200])
        r = await p.call(route.method, path, key=b.admin, body=body, purpose="isolation")
        checked += 1
        code = r.json().get("code") if r.content and r.headers.get("content-type", "").endswith("json") else None
        if (route.method, route.path) in OWN_NAMESPACE:
            if r.status_code >= 500 or r.status_code in (401, 403):
                p.run.anomaly("isolation_unexpected", route=name, status=r.status_code, body=r.text[:200])
            continue
        if r.status_code == 404:
            continue
        if 200 <= r.status_code < 300:
            p.run.anomaly("other_program_resource_reached", route=name, status=r.status_code, body=r.text[:300])
        elif r.status_code in (401, 403):
            p.run.anomaly("other_program_not_404", route=name, status=r.status_code, code=code)
        else:
            p.run.anomaly("isolation_unchecked", route=name, status=r.status_code, code=code,
                          hint="add a valid example body for this route in reliability/security.py",
                          body=r.text[:200])
    after = await snapshot(p, a, db_url)
    if after != before:
        p.run.anomaly("other_program_changed_this_one", before=before, after=after)
    # The other program's listings show none of this one.
    listed = (await p.call("GET", "/v1/api-keys", key=b.admin, purpose="isolation:list")).json()
    mine = {a.key_ids[s] for s in ("read", "earn", "redeem")} | {a.ids["key_id"]}
    if any(k["id"] in mine for k in listed.get("data", [])):
        p.run.anomaly("other_program_keys_listed")
    program = (await p.call("GET", "/v1/program", key=b.admin, purpose="isolation:program")).json()
    if program.get("id") != b.program_id:
        p.run.anomaly("other_program_shown", program=program.get("id"))
    return {"isolation_requests": checked}


async def check_revocation(p: Probe, a: Tenant, rounds: int) -> dict[str, Any]:
    """Warm every cache with the key, revoke it through one process, and ask all of them at once."""
    accepted: list[dict[str, Any]] = []
    for i in range(rounds):
        key, key_id = await make_key(p, a.admin, ["read"], f"revoke-{i}")
        warm = [p.call("GET", "/v1/program", key=key, fresh=True, purpose="revocation:warm") for _ in range(6)]
        warm += [p.call("GET", "/v1/program", key=key, service="s2", fresh=True, purpose="revocation:warm")
                 for _ in range(2)]
        if any(r.status_code != 200 for r in await asyncio.gather(*warm)):
            p.run.anomaly("revocation_setup_failed", round=i)
            continue
        r = await p.call("DELETE", f"/v1/api-keys/{key_id}", key=a.admin, purpose="revocation:revoke")
        revoked_at = time.monotonic()
        if r.status_code != 204:
            p.run.anomaly("revocation_failed", status=r.status_code)
            continue
        after = [p.call("GET", "/v1/program", key=key, fresh=True, purpose="revocation:after") for _ in range(8)]
        after += [p.call("GET", "/v1/program", key=key, service="s2", fresh=True, purpose="revocation:after")
                  for _ in range(4)]
        for j, r in enumerate(await asyncio.gather(*after)):
            if r.status_code != 401:
                accepted.append({"round": i, "service": "s1" if j < 8 else "s2", "status": r.status_code,
                                 "ms_after_revoke": round((time.monotonic() - revoked_at) * 1000, 1)})
    if accepted:
        p.run.anomaly("revoked_key_accepted", times=len(accepted), of=rounds * 12, examples=accepted[:8])
    return {"revocation_rounds": rounds, "revoked_key_accepted": len(accepted)}


async def check_cors(p: Probe, routes: list[Route], a: Tenant) -> dict[str, Any]:
    origin = "https://evil.example"
    leaky = []
    for route in routes:
        path = fill(route.path, NOWHERE)
        r = await p.call("OPTIONS", path, headers={"Origin": origin, "Access-Control-Request-Method": route.method,
                                                   "Access-Control-Request-Headers": "authorization,content-type"},
                         purpose="cors:preflight")
        if r.headers.get("access-control-allow-origin") or r.headers.get("access-control-allow-credentials"):
            leaky.append(f"OPTIONS {route.path}")
    r = await p.call("GET", "/v1/program", key=a.admin, headers={"Origin": origin}, purpose="cors:simple")
    if r.headers.get("access-control-allow-origin"):
        leaky.append("GET /v1/program")
    if leaky:
        p.run.anomaly("cors_open", origin=origin, routes=leaky[:20])
    return {"cors_preflights": len(routes)}


async def check_rate_limits(p: Probe, a: Tenant) -> dict[str, Any]:
    key, _ = await make_key(p, a.admin, ["read"], "rate-default")
    default = await asyncio.gather(*(p.call("GET", "/v1/program", key=key, purpose="rate:default")
                                     for _ in range(150)))
    if any(r.status_code == 429 for r in default):
        p.run.anomaly("rate_limited_by_default", of=len(default))
    # s2 runs with PL_RATE_LIMIT_PER_SECOND=5, PL_RATE_LIMIT_BURST=10.
    busy, _ = await make_key(p, a.admin, ["read"], "rate-busy")
    calm, _ = await make_key(p, a.admin, ["read"], "rate-calm")
    burst = await asyncio.gather(*(p.call("GET", "/v1/program", key=busy, service="s2", purpose="rate:burst")
                                   for _ in range(40)))
    limited = [r for r in burst if r.status_code == 429]
    out: dict[str, Any] = {"rate_default_requests": len(default), "rate_burst_requests": len(burst),
                           "rate_burst_429": len(limited)}
    if not limited:
        p.run.anomaly("rate_limit_not_applied", requests=len(burst), statuses=Counter(r.status_code for r in burst))
        return out
    retry = limited[0].headers.get("retry-after")
    if not retry or not retry.isdigit() or int(retry) < 1 or limited[0].json().get("code") != "rate_limited":
        p.run.anomaly("rate_limit_answer_wrong", retry_after=retry, body=limited[0].text[:200])
    other = await p.call("GET", "/v1/program", key=calm, service="s2", purpose="rate:other key")
    if other.status_code != 200:
        p.run.anomaly("rate_limit_not_per_key", status=other.status_code)
    await asyncio.sleep(min(int(retry or 1), 3) + 0.2)
    again = await p.call("GET", "/v1/program", key=busy, service="s2", purpose="rate:after retry-after")
    if again.status_code != 200:
        p.run.anomaly("rate_limit_not_lifted_after_retry_after", status=again.status_code, retry_after=retry)
    out["rate_retry_after"] = retry
    return out


async def check_storage_and_logs(p: Probe, db_url: str, keys: list[str], tenants: list[Tenant],
                                 logs: list[Any]) -> dict[str, Any]:
    conn = await connect(db_url)
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        rows: list[str] = []
        for t in tables:
            rows += [str(r[0]) for r in await conn.fetch(f'SELECT x::text FROM "{t}" x')]
        dump = "\n".join(rows)
        hashes = {bytes(r["key_hash"]): r["prefix"] for r in await conn.fetch("SELECT key_hash, prefix FROM api_keys")}
    finally:
        await conn.close()
    secrets = [k.split("_", 2)[-1] for k in keys]
    for key, secret in zip(keys, secrets, strict=True):
        if key in dump or secret in dump:
            p.run.anomaly("plaintext_key_in_database", key_prefix=key[:17])
        if hashlib.sha256(key.encode()).digest() not in hashes:
            p.run.anomaly("key_hash_not_sha256_of_key", key_prefix=key[:17])
    text = "\n".join(log.read_text(errors="replace") for log in logs if log.exists())
    for key, secret in zip(keys, secrets, strict=True):
        if key in text or secret in text:
            p.run.anomaly("key_in_service_log", key_prefix=key[:17])
    for t in tenants:
        for what, value in {**t.pii, "member_id": t.member}.items():
            if value in text:
                p.run.anomaly("personal_data_in_service_log", field=what)
    return {"tables_dumped": len(tables), "keys_searched": len(keys), "service_log_bytes": len(text)}


# --- the run -------------------------------------------------------------------------------------------------


async def security(args: Any, run: Run) -> str:
    server_url, close_server = await asyncio.to_thread(open_server, args, run)
    db = await FreshDatabase(server_url, "security").create()
    # Webhook endpoints on loopback (refused by default) so that each program has one to probe.
    s1 = Service(db.url, run.dir / "service.log", workers=args.workers, env={"PL_WEBHOOK_ALLOW_PRIVATE_URLS": "true"})
    s2 = Service(db.url, run.dir / "service-ratelimited.log", workers=1,
                 env={"PL_RATE_LIMIT_PER_SECOND": "5", "PL_RATE_LIMIT_BURST": "10", "PL_SCHEDULER_ENABLED": "false"})
    try:
        s1.start()  # they boot while the route table is read and the programs are created
        s2.start()
        routes, missed = await asyncio.to_thread(route_table)
        if missed or len(routes) < 10:
            run.anomaly("route_table_incomplete", routes=len(routes), missed=missed)
        (pa, ka), (pb, kb) = await create_program(db.url, "security A"), await create_program(db.url, "security B")
        await asyncio.gather(asyncio.to_thread(s1.wait_ready), asyncio.to_thread(s2.wait_ready))
        a, b = Tenant(pa, ka), Tenant(pb, kb)
        with (run.dir / "requests.jsonl").open("w") as log:
            async with httpx.AsyncClient(base_url=s1.base_url, timeout=30) as c1, \
                    httpx.AsyncClient(base_url=s2.base_url, timeout=30) as c2:
                p = Probe(run, {"s1": c1, "s2": c2}, log)
                run.note(f"{len(routes)} routes from the app's route table; two programs on {s1.base_url} "
                         f"({args.workers} workers) and {s2.base_url}")
                await seed(p, a, "a" + uuid.uuid4().hex[:6])
                await seed(p, b, "b" + uuid.uuid4().hex[:6])
                run.figures["routes"] = len(routes)
                run.figures["public_routes"] = sorted(f"{r.method} {r.path}" for r in routes if not r.declared)
                run.figures.update(await check_authentication(p, routes, a))
                run.figures.update(await check_scopes(p, routes, a))
                run.figures.update(await check_isolation(p, routes, a, b, db.url))
                run.figures.update(await check_revocation(p, a, args.revocation_rounds))
                run.figures.update(await check_cors(p, routes, a))
                run.figures.update(await check_rate_limits(p, a))
                keys = [k for t in (a, b) for k in t.keys.values()]
                run.figures.update(await check_storage_and_logs(p, db.url, keys, [a, b],
                                                                [s1.log_path, s2.log_path]))
                run.figures["requests"] = sum(p.statuses.values())
                run.figures["statuses"] = dict(sorted(p.statuses.items()))
                run.figures["error_bodies_checked"] = p.error_bodies
        run.figures["service_log_warnings_and_errors"] = s1.errors()
        run.check_service_log(s1.log_path)
        run.check_service_log(s2.log_path)
        return (f"routes={len(routes)} requests={run.figures['requests']} "
                f"error_bodies_checked={run.figures['error_bodies_checked']}")
    finally:
        s1.stop()
        s2.stop()
        if not args.keep_database:
            await db.drop()
        await asyncio.to_thread(close_server)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run = Run("security", args.out, args.seed)
    headline = execute(run, args, security)
    for route, scopes in run.figures.get("scopes_by_route", {}).items():
        print(f"  {route:55s} {','.join(scopes)}")
    return run.finish(headline)


if __name__ == "__main__":
    sys.exit(main())
