"""The checker of the bank workload: proves, from the client log and the database, that

1. every acknowledged write (2xx) is in the ledger exactly once, with the ids its answer gave (entries tagged
   with the operation id in their metadata, purchases by order id, returns by return id, events by event id,
   holds, redemptions, refunds and reversals by their ids), and its idempotency record holds that answer;
2. no unacknowledged write is in the ledger: a refused one never, and one left in doubt (no definitive answer
   after its tries) only if its idempotency record shows it committed, so a retry would acknowledge it
   (``crash`` retries those before checking, and then none may be left in doubt);
3. every definitive answer to the same operation is identical (replays, concurrent duplicates, retries), and at
   most one of them was not marked ``Idempotent-Replayed`` (validation failures are not stored, so each retry
   answers afresh: same status and problem, its own request id); a key reused for another request is refused;
4. a hold is resolved at most once, as its acknowledged capture or void said;
5. the acknowledged answers add up to the books: per member, the sum of their movements equals
   available + pending + held, the held points equal the open holds, and lifetime_redeemed equals
   redemptions + captures - refunds;
6. every entry has >= 2 postings summing to zero, the program sums to zero, member balances equal their
   postings, lots their allocations; ``available`` never went below zero except through a return's clawback
   (neither in any answer nor in the ledger's per-member history); ``points-ledger verify`` is clean; and the
   balances the API reads equal the database.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from reliability.harness import Run, connect, run_verify, verify_in_process
from reliability.workload import definitive

MEMBER_ACCOUNTS = ("available", "pending", "held")
TAGGED_KINDS = {"adjust": "adjust", "redeem": "redeem", "hold": "hold", "refund": "refund", "reverse": "reverse"}


@dataclass
class LoggedOp:
    id: str
    kind: str
    key: str | None
    method: str
    path: str
    body: Any
    member: str | None
    ref: Any
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def definitive(self) -> list[dict[str, Any]]:
        return [a for a in self.attempts if definitive(a["status"], a["resp"])]


def load_log(path: Path) -> dict[str, LoggedOp]:
    ops: dict[str, LoggedOp] = {}
    with path.open() as f:
        for line in f:
            a = json.loads(line)
            op = ops.get(a["op"])
            if op is None:
                op = ops[a["op"]] = LoggedOp(a["op"], a["kind"], a["key"], a["method"], a["path"], a["body"],
                                             a["member"], a["ref"])
            op.attempts.append(a)
    for op in ops.values():
        op.attempts.sort(key=lambda a: a["t0"])
    return ops


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# README: "Requests that fail validation are not stored": a retry validates again and answers afresh (same
# status and problem, its own request id, no Idempotent-Replayed).
NOT_STORED = {"validation_error", "malformed_request"}


def _unstored(a: dict[str, Any]) -> bool:
    return a["status"] in (400, 422) and isinstance(a["resp"], dict) and a["resp"].get("code") in NOT_STORED


def _without_request_id(body: Any) -> Any:
    return {k: v for k, v in body.items() if k != "request_id"} if isinstance(body, dict) else body


async def check(run: Run, log_path: Path, database_url: str, program_id: str, base_url: str, admin_key: str,
                members: list[str], *, allow_in_doubt: bool = True, allowed_5xx: frozenset[str] = frozenset(),
                cli_verify: bool = True) -> dict[str, Any]:
    """``allowed_5xx``: problem codes a 5xx answer may carry (``database_unavailable`` under faults); any
    other server error is an anomaly. ``cli_verify``: run ``points-ledger verify`` (else its function)."""
    ops = load_log(log_path)
    server_errors: Counter[str] = Counter()
    for op in ops.values():
        for a in op.attempts:
            if a["status"] is not None and a["status"] >= 500:
                code = a["resp"].get("code") if isinstance(a["resp"], dict) else None
                server_errors[f"{a['status']} {code}"] += 1
                if code not in allowed_5xx:
                    run.anomaly("server_error", op=op.id, kind=op.kind, purpose=a["purpose"], status=a["status"],
                                code=code, at=a["t0"])
    conn = await connect(database_url)
    try:
        db = await _load_db(conn, program_id)
        figures = _check_operations(run, ops, db, allow_in_doubt)
        await _check_ledger(run, conn, program_id)
    finally:
        await conn.close()
    _check_model(run, ops, db, figures)
    if cli_verify:
        rc, report, output = await asyncio.to_thread(run_verify, database_url, program_id)
    else:
        rc, report, output = await verify_in_process(database_url, program_id)
    if rc != 0 or not report or not report.get("ok"):
        found = sorted({d["check"] for d in (report or {}).get("discrepancies", [])})
        run.anomaly("verify_not_clean", subject=",".join(found) or "no report", exit_code=rc,
                    discrepancies=(report or {}).get("discrepancies", [])[:10], output=output[-600:])
    figures["verify"] = {"exit_code": rc, "checked": report.get("checked") if report else None}
    figures["server_errors"] = dict(server_errors)
    await _check_api_balances(run, base_url, admin_key, members, db)
    return figures


# --- the database's view -------------------------------------------------------------------------------------


async def _load_db(conn: asyncpg.Connection, program_id: str) -> dict[str, Any]:
    # One snapshot: the scheduler may release an expired hold between two reads.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _read_db(conn, program_id)


async def _read_db(conn: asyncpg.Connection, program_id: str) -> dict[str, Any]:
    p = program_id
    tagged: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for r in await conn.fetch(
            "SELECT ledger.public_id('ent', id) AS id, kind, metadata->>'op' AS op, "
            "ledger.public_id('ent', reverses_entry_id) AS reverses_entry_id FROM entries "
            "WHERE program_id = $1::uuid AND metadata ? 'op'", p):
        tagged[r["op"]].append(r)
    keys = {r["key"]: r for r in await conn.fetch(
        "SELECT key, status_code, response_body::json AS response_body FROM idempotency_keys "
        "WHERE program_id = $1::uuid", p)}
    purchases = {r["order_id"]: r for r in await conn.fetch(
        "SELECT order_id, ledger.public_id('ent', entry_id) AS entry_id, points, clawed_back_points FROM purchases "
        "WHERE program_id = $1::uuid", p)}
    earn_entries = Counter(r["external_ref"] for r in await conn.fetch(
        "SELECT external_ref FROM entries WHERE program_id = $1::uuid AND kind = 'earn'", p))
    returns = {(r["order_id"], r["return_id"]): r for r in await conn.fetch(
        "SELECT p.order_id, r.return_id, ledger.public_id('ent', r.entry_id) AS entry_id, r.points "
        "FROM purchase_returns r "
        "JOIN purchases p ON p.id = r.purchase_id WHERE p.program_id = $1::uuid", p)}
    events = {r["event_id"]: r for r in await conn.fetch(
        "SELECT event_id, ledger.public_id('ent', entry_id) AS entry_id, points FROM member_events "
        "WHERE program_id = $1::uuid", p)}
    holds = {r["id"]: r for r in await conn.fetch(
        "SELECT ledger.public_id('hold', h.id) AS id, h.status, h.points, h.captured_points, "
        "ledger.public_id('ent', h.hold_entry_id) AS hold_entry_id, "
        "ledger.public_id('ent', h.resolve_entry_id) AS resolve_entry_id, "
        "m.external_id AS member FROM holds h JOIN members m ON m.id = h.member_id WHERE h.program_id = $1::uuid",
        p)}
    redemptions = {r["id"]: r for r in await conn.fetch(
        "SELECT ledger.public_id('rdm', id) AS id, points, refunded_points, "
        "ledger.public_id('ent', entry_id) AS entry_id, ledger.public_id('hold', hold_id) AS hold_id "
        "FROM redemptions WHERE program_id = $1::uuid", p)}
    refunds = {r["id"]: r for r in await conn.fetch(
        "SELECT ledger.public_id('rfd', f.id) AS id, ledger.public_id('rdm', f.redemption_id) AS redemption_id, "
        "ledger.public_id('ent', f.entry_id) AS entry_id, f.points FROM redemption_refunds f "
        "JOIN redemptions r ON r.id = f.redemption_id WHERE r.program_id = $1::uuid", p)}
    reversals: dict[str, list[str]] = defaultdict(list)
    for r in await conn.fetch("SELECT ledger.public_id('ent', id) AS id, "
                              "ledger.public_id('ent', reverses_entry_id) AS reverses_entry_id FROM entries "
                              "WHERE program_id = $1::uuid AND reverses_entry_id IS NOT NULL", p):
        reversals[r["reverses_entry_id"]].append(r["id"])
    balances = {r["member"]: r for r in await conn.fetch(
        "SELECT m.external_id AS member, b.available, b.pending, b.held, b.lifetime_earned, b.lifetime_redeemed "
        "FROM member_balances b JOIN members m ON m.id = b.member_id WHERE b.program_id = $1::uuid", p)}
    return {"tagged": tagged, "keys": keys, "purchases": purchases, "earn_entries": earn_entries,
            "returns": returns, "events": events, "holds": holds, "redemptions": redemptions, "refunds": refunds,
            "reversals": reversals, "balances": balances}


# --- per operation -------------------------------------------------------------------------------------------


def _check_operations(run: Run, ops: dict[str, LoggedOp], db: dict[str, Any], allow_in_doubt: bool
                      ) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    per_kind: dict[str, Counter[str]] = defaultdict(Counter)
    purposes: Counter[str] = Counter()
    replays_checked = 0
    committed: dict[str, dict[str, Any]] = {}  # op id -> the answer that stands (acknowledged or stored)
    hold_resolutions: dict[str, list[tuple[str, LoggedOp]]] = defaultdict(list)
    returns_started: dict[str, float] = {}
    for op in ops.values():
        if op.kind == "return":
            first = min(a["t0"] for a in op.attempts)
            returns_started[op.member or ""] = min(first, returns_started.get(op.member or "", first))
    for op in ops.values():
        for a in op.attempts:
            purposes[a["purpose"]] += 1
            _check_balance_in_answer(run, op, a, returns_started)
        if op.kind == "read":
            continue
        answers = op.definitive
        stored = db["keys"].get(op.key) if op.key else None
        # 3. identical answers, at most one not marked as a replay
        if answers:
            first = answers[0]
            for a in answers[1:]:
                replays_checked += 1
                unstored = _unstored(first) and _unstored(a)
                same = (_same(_without_request_id(a["resp"]), _without_request_id(first["resp"])) if unstored
                        else _same(a["resp"], first["resp"]))
                if a["status"] != first["status"] or not same:
                    run.anomaly("replay_differs", op=op.id, kind=op.kind, first_status=first["status"],
                                status=a["status"], purpose=a["purpose"], first=str(first["resp"])[:300],
                                other=str(a["resp"])[:300])
            fresh = [a for a in answers if not a["replayed"] and not _unstored(a)]
            if len(fresh) > 1:
                run.anomaly("executed_twice", op=op.id, kind=op.kind, answers=len(fresh),
                            statuses=[a["status"] for a in fresh])
            for a in answers:
                if a["purpose"] == "replay" and not a["replayed"] and a is not answers[0] and not _unstored(a):
                    run.anomaly("replay_not_marked", op=op.id, kind=op.kind, status=a["status"])
        if op.kind == "misuse":
            _check_misuse(run, op, answers, db)
            outcomes["misuse"] += 1
            continue
        # 1./2. outcome, and the answer that stands
        if answers and 200 <= answers[0]["status"] < 300:
            outcome, answer = "acknowledged", answers[0]["resp"]
            if stored is None or stored["status_code"] != answers[0]["status"] or not _same(
                    stored["response_body"], answer):
                run.anomaly("idempotency_record_differs", op=op.id, kind=op.kind,
                            stored=None if stored is None else stored["status_code"])
        elif answers:
            outcome, answer = "refused", None
        elif stored is not None and stored["status_code"] is not None and 200 <= stored["status_code"] < 300:
            outcome, answer = "in_doubt_committed", stored["response_body"]
        else:
            outcome, answer = "in_doubt_not_committed", None
        if outcome.startswith("in_doubt") and not allow_in_doubt:
            run.anomaly("left_in_doubt", op=op.id, kind=op.kind, committed=outcome == "in_doubt_committed",
                        statuses=[a["status"] or a["error"] for a in op.attempts][-5:])
        outcomes[outcome] += 1
        per_kind[op.kind][outcome] += 1
        if answer is not None:
            committed[op.id] = answer
        _check_effect(run, op, answer, db)
        if op.kind in ("capture", "void") and answer is not None:
            hold_resolutions[op.ref].append((op.kind, op))
    # 4. holds resolve at most once, as acknowledged
    for hold_id, resolutions in hold_resolutions.items():
        hold = db["holds"].get(hold_id)
        if len(resolutions) > 1:
            run.anomaly("hold_resolved_twice", hold=hold_id, by=[(k, o.id) for k, o in resolutions])
        kind, op = resolutions[0]
        want = {"capture": "captured", "void": "voided"}[kind]
        if hold is None or hold["status"] != want:
            run.anomaly("hold_state_differs", hold=hold_id, acknowledged=kind, status=hold and hold["status"])
    resolved = set(hold_resolutions)
    for hold_id, hold in db["holds"].items():
        if hold["status"] in ("captured", "voided") and hold_id not in resolved:
            run.anomaly("hold_resolved_without_acknowledgement", hold=hold_id, status=hold["status"])
    return {"operations": sum(outcomes.values()), "outcomes": dict(outcomes),
            "per_kind": {k: dict(v) for k, v in sorted(per_kind.items())}, "requests_by_purpose": dict(purposes),
            "answers_compared": replays_checked, "committed": committed}


def _check_misuse(run: Run, op: LoggedOp, answers: list[dict[str, Any]], db: dict[str, Any]) -> None:
    if not answers or answers[0]["status"] != 422 or answers[0]["resp"].get("code") != "idempotency_key_reused":
        run.anomaly("key_reuse_not_refused", op=op.id, answers=[(a["status"], str(a["resp"])[:200])
                                                                 for a in answers])
    if db["tagged"].get(op.id):
        run.anomaly("key_reuse_wrote", op=op.id, entries=[r["id"] for r in db["tagged"][op.id]])


def _check_effect(run: Run, op: LoggedOp, answer: Any, db: dict[str, Any]) -> None:
    """``answer`` is the 2xx answer that stands (acknowledged, or stored for an in-doubt commit), else None:
    then the operation must have left nothing in the ledger."""
    tagged = db["tagged"].get(op.id, [])
    if op.kind in TAGGED_KINDS:
        if answer is None:
            if tagged:
                run.anomaly("unacknowledged_write_in_ledger", op=op.id, kind=op.kind, entries=[r["id"] for r in tagged])
            return
        expected_entry = {
            "adjust": lambda: answer["entry"]["id"], "reverse": lambda: answer["entry"]["id"],
            "redeem": lambda: answer["redemption"]["entry_id"], "hold": lambda: answer["hold"]["hold_entry_id"],
            "refund": lambda: answer["refund"]["entry_id"],
        }[op.kind]()
        if len(tagged) != 1:
            run.anomaly("acknowledged_write_lost" if not tagged else "write_duplicated", op=op.id, kind=op.kind,
                        entries=[r["id"] for r in tagged])
        elif tagged[0]["id"] != expected_entry or tagged[0]["kind"] != TAGGED_KINDS[op.kind]:
            run.anomaly("acknowledged_entry_differs", op=op.id, kind=op.kind, answered=expected_entry,
                        ledger=(tagged[0]["id"], tagged[0]["kind"]))
        if op.kind == "redeem" and answer["redemption"]["id"] not in db["redemptions"]:
            run.anomaly("redemption_missing", op=op.id, redemption=answer["redemption"]["id"])
        if op.kind == "hold" and answer["hold"]["id"] not in db["holds"]:
            run.anomaly("hold_missing", op=op.id, hold=answer["hold"]["id"])
        if op.kind == "refund":
            row = db["refunds"].get(answer["refund"]["id"])
            if row is None or row["points"] != answer["refund"]["points"] or row["redemption_id"] != op.ref:
                run.anomaly("refund_differs", op=op.id, refund=answer["refund"]["id"])
        if op.kind == "reverse" and db["reversals"].get(op.ref) != [answer["entry"]["id"]]:
            run.anomaly("reversal_differs", op=op.id, entry=op.ref, reversals=db["reversals"].get(op.ref))
        return
    if op.kind == "purchase":
        order_id = op.body["order_id"]
        row = db["purchases"].get(order_id)
        if answer is None:
            if row is not None:
                run.anomaly("unacknowledged_write_in_ledger", op=op.id, kind=op.kind, order_id=order_id)
            return
        p = answer["purchase"]
        if row is None:
            run.anomaly("acknowledged_write_lost", op=op.id, kind=op.kind, order_id=order_id)
        elif row["entry_id"] != p["entry_id"] or row["points"] != p["points"]:
            run.anomaly("acknowledged_purchase_differs", op=op.id, kind=op.kind, order_id=order_id,
                        ledger=row and (row["entry_id"], row["points"]), answered=(p["entry_id"], p["points"]))
        if p["points"] > 0 and db["earn_entries"].get(order_id) != 1:
            run.anomaly("acknowledged_write_lost" if not db["earn_entries"].get(order_id) else "write_duplicated",
                        op=op.id, order_id=order_id, count=db["earn_entries"].get(order_id))
        return
    if op.kind == "purchase_retry":
        if answer is None:
            return
        original = db["purchases"].get(op.body["order_id"])
        if not answer.get("replayed") or original is None or original["entry_id"] != answer["purchase"]["entry_id"]:
            run.anomaly("natural_key_retry_differs", op=op.id, order_id=op.body["order_id"],
                        replayed=answer.get("replayed"))
        return
    if op.kind == "return":
        row = db["returns"].get((op.ref, op.body["return_id"]))
        if answer is None:
            if row is not None:
                run.anomaly("unacknowledged_write_in_ledger", op=op.id, kind=op.kind, return_id=op.body["return_id"])
            return
        if row is None or row["points"] != answer["points"]:
            run.anomaly("acknowledged_write_lost" if row is None else "acknowledged_return_differs", op=op.id,
                        kind=op.kind, return_id=op.body["return_id"],
                        ledger=row and row["points"], answered=answer["points"])
        return
    if op.kind == "event":
        row = db["events"].get(op.body["event_id"])
        if answer is None:
            if row is not None:
                run.anomaly("unacknowledged_write_in_ledger", op=op.id, kind=op.kind, event_id=op.body["event_id"])
            return
        if row is None or row["entry_id"] != answer["entry_id"] or row["points"] != answer["points"]:
            run.anomaly("acknowledged_write_lost" if row is None else "acknowledged_event_differs", op=op.id,
                        kind=op.kind, event_id=op.body["event_id"])
        return
    if op.kind in ("capture", "void") and answer is not None:
        hold = db["holds"].get(op.ref)
        h = answer["hold"]
        if hold is None or hold["resolve_entry_id"] != h["resolve_entry_id"] or (
                op.kind == "capture" and hold["captured_points"] != h["captured_points"]):
            run.anomaly("hold_resolution_differs", op=op.id, kind=op.kind, hold=op.ref)


def _check_balance_in_answer(run: Run, op: LoggedOp, a: dict[str, Any], returns_started: dict[str, float]) -> None:
    """``available`` below zero in any answer only after a return for that member had been sent."""
    resp = a["resp"]
    if not isinstance(resp, dict) or a["status"] is None or not 200 <= a["status"] < 300:
        return
    balance = resp if op.kind == "read" else resp.get("balance")
    if not isinstance(balance, dict) or balance.get("available", 0) >= 0:
        return
    member = balance.get("member_id")
    if member not in returns_started or returns_started[member] > a["t1"]:
        run.anomaly("negative_available_without_return", op=op.id, kind=op.kind, member=member,
                    available=balance["available"])


# --- the model: acknowledged answers add up to the books -----------------------------------------------------


def _check_model(run: Run, ops: dict[str, LoggedOp], db: dict[str, Any], figures: dict[str, Any]) -> None:
    committed: dict[str, Any] = figures.pop("committed")
    total: Counter[str] = Counter()
    held: Counter[str] = Counter()
    redeemed: Counter[str] = Counter()
    hold_points: dict[int, tuple[str, int]] = {}
    for op_id, answer in committed.items():
        if ops[op_id].kind == "hold":
            h = answer["hold"]
            hold_points[h["id"]] = (h["member_id"], h["points"])
    moved = 0
    for op_id, answer in committed.items():
        op = ops[op_id]
        if op.kind in ("adjust", "reverse"):
            entry = answer["entry"]
            member = entry["member_id"]
            total[member] += sum(p["points"] for p in entry["postings"] if p["account"] in MEMBER_ACCOUNTS)
        elif op.kind == "purchase":
            total[answer["purchase"]["member_id"]] += answer["purchase"]["points"]
        elif op.kind == "return":
            total[answer["balance"]["member_id"]] -= answer["points"]
        elif op.kind == "event":
            total[answer["member_id"]] += answer["points"]
        elif op.kind == "redeem":
            r = answer["redemption"]
            total[r["member_id"]] -= r["points"]
            redeemed[r["member_id"]] += r["points"]
        elif op.kind == "hold":
            h = answer["hold"]
            held[h["member_id"]] += h["points"]
        elif op.kind in ("capture", "void"):
            h = answer["hold"]
            held[h["member_id"]] -= h["points"]
            if op.kind == "capture":
                total[h["member_id"]] -= h["captured_points"]
                redeemed[h["member_id"]] += h["captured_points"]
        elif op.kind == "refund":
            f, r = answer["refund"], answer["redemption"]
            total[r["member_id"]] += f["available_points"]
            redeemed[r["member_id"]] -= f["points"]
        else:
            continue
        moved += 1
    # Holds released by the scheduler (none expire during a run: they last an hour) would leave held.
    released = {h_id for h_id, h in db["holds"].items() if h["status"] == "expired"}
    for h_id in released:
        if h_id in hold_points:
            member, points = hold_points[h_id]
            held[member] -= points
    for member, b in db["balances"].items():
        actual_total = b["available"] + b["pending"] + b["held"]
        if actual_total != total[member]:
            run.anomaly("books_differ_from_answers", member=member, ledger_total=actual_total,
                        answers_total=total[member], difference=actual_total - total[member])
        if b["held"] != held[member]:
            run.anomaly("held_differs_from_answers", member=member, ledger_held=b["held"], answers_held=held[member])
        if b["lifetime_redeemed"] != redeemed[member]:
            run.anomaly("redeemed_differs_from_answers", member=member, ledger=b["lifetime_redeemed"],
                        answers=redeemed[member])
    figures["movements_summed"] = moved
    figures["points_in_members"] = sum(total.values())


# --- the ledger's own invariants -----------------------------------------------------------------------------


LEDGER_CHECKS = {
    "entry_unbalanced": """
        SELECT e.id, count(p.id) AS postings, coalesce(sum(p.points), 0) AS sum
        FROM entries e LEFT JOIN postings p ON p.entry_id = e.id WHERE e.program_id = $1::uuid
        GROUP BY e.id HAVING count(p.id) < 2 OR coalesce(sum(p.points), 0) <> 0""",
    "program_unbalanced": """
        SELECT sum(points) AS sum FROM postings WHERE program_id = $1::uuid HAVING sum(points) <> 0""",
    "balance_differs_from_postings": """
        SELECT m.external_id, b.available, b.pending, b.held, a.available AS p_available, a.pending AS p_pending,
               a.held AS p_held
        FROM member_balances b JOIN members m ON m.id = b.member_id
        LEFT JOIN (SELECT member_id,
                          coalesce(sum(points) FILTER (WHERE account = 'available'), 0) AS available,
                          coalesce(sum(points) FILTER (WHERE account = 'pending'), 0) AS pending,
                          coalesce(sum(points) FILTER (WHERE account = 'held'), 0) AS held
                   FROM postings WHERE program_id = $1::uuid GROUP BY member_id) a ON a.member_id = b.member_id
        WHERE b.program_id = $1::uuid
          AND (b.available, b.pending, b.held) IS DISTINCT FROM
              (coalesce(a.available, 0), coalesce(a.pending, 0), coalesce(a.held, 0))""",
    "lot_differs_from_allocations": """
        SELECT l.id, l.points, l.remaining, coalesce(sum(a.points), 0) AS allocated
        FROM lots l LEFT JOIN lot_allocations a ON a.lot_id = l.id WHERE l.program_id = $1::uuid
        GROUP BY l.id HAVING l.remaining <> l.points - coalesce(sum(a.points), 0)""",
    "negative_available_without_clawback": """
        SELECT m.external_id, b.available FROM member_balances b JOIN members m ON m.id = b.member_id
        WHERE b.program_id = $1::uuid AND b.available < 0
          AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.member_id = b.member_id AND e.kind = 'clawback')""",
}

HISTORY = """
SELECT e.id, e.kind, m.external_id AS member, sum(p.points) AS delta
FROM entries e JOIN postings p ON p.entry_id = e.id AND p.account = 'available'
JOIN members m ON m.id = p.member_id
WHERE e.program_id = $1::uuid GROUP BY e.id, e.kind, m.external_id ORDER BY e.id
"""


async def _check_ledger(run: Run, conn: asyncpg.Connection, program_id: str) -> None:
    for check_name, sql in LEDGER_CHECKS.items():
        for row in await conn.fetch(sql + " LIMIT 50", program_id):
            run.anomaly(check_name, **{k: (int(v) if hasattr(v, "as_integer_ratio") else v) for k, v in row.items()})
    # Each member's available, replayed in entry order (a member's writes serialise on its balance row and
    # take their entry id inside that lock): only a clawback may take it below zero, or further below.
    running: Counter[str] = Counter()
    for row in await conn.fetch(HISTORY, program_id):
        before = running[row["member"]]
        running[row["member"]] += int(row["delta"])
        if row["delta"] < 0 and running[row["member"]] < 0 and row["kind"] != "clawback":
            run.anomaly("available_below_zero_in_history", entry=row["id"], kind=row["kind"], member=row["member"],
                        before=before, after=running[row["member"]])


async def _check_api_balances(run: Run, base_url: str, admin_key: str, members: list[str], db: dict[str, Any]
                              ) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for member in members:
            r = await client.get(f"/v1/members/{member}/balance", headers={"Authorization": f"Bearer {admin_key}"})
            b = db["balances"].get(member)
            # Reads move points at read time (pending past its window to available, an expired hold back to
            # available) before the jobs post it, so compare the member's total and lifetime figures.
            api = r.json() if r.status_code == 200 else {}
            if r.status_code != 200 or b is None or any(api[k] != b[k] for k in (
                    "lifetime_earned", "lifetime_redeemed")) or (
                    api["available"] + api["pending"] + api["held"] != b["available"] + b["pending"] + b["held"]):
                run.anomaly("api_balance_differs", member=member, status=r.status_code, api=r.text[:300],
                            db=dict(b) if b else None)
