"""Property test: random sequences of credits, debits and reversals through the HTTP API against a
plain-Python model of lots consumed soonest-expiring first."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXPIRIES = [None, "2030-01-01T00:00:00Z", "2029-06-30T00:00:00Z", "2031-12-31T00:00:00Z"]


@dataclass
class Model:
    lots: list[dict] = field(default_factory=list)  # in creation order
    entries: dict[int, dict] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return sum(lot["remaining"] for lot in self.lots)

    def order(self) -> list[dict]:
        return sorted(self.lots, key=lambda lot: (lot["expires_at"] is None, lot["expires_at"] or "", lot["id"]))

    def consume(self, points: int, prefer: int | None = None) -> dict[int, int]:
        taken: dict[int, int] = {}
        candidates = [lot for lot in self.order() if prefer is not None and lot["entry"] == prefer]
        candidates += [lot for lot in self.order() if lot not in candidates]
        for lot in candidates:
            if points == 0:
                break
            take = min(lot["remaining"], points)
            if take:
                lot["remaining"] -= take
                taken[lot["id"]] = taken.get(lot["id"], 0) + take
                points -= take
        return taken


ops = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), st.integers(1, 50), st.sampled_from(EXPIRIES)),
        st.tuples(st.just("debit"), st.integers(1, 80), st.none()),
        st.tuples(st.just("reverse"), st.integers(0, 10), st.none()),
    ),
    min_size=1, max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=ops)
async def test_random_sequences_match_the_model(tenant, db, sequence):
    member = f"prop-{uuid.uuid4().hex[:10]}"
    await tenant.member(member)
    model = Model()
    for kind, amount, expiry in sequence:
        if kind == "credit":
            r = await tenant.adjust(member, amount, expires_at=expiry)
            assert r.status_code == 201
            entry = r.json()["entry"]["id"]
            model.lots.append({"id": len(model.lots), "entry": entry, "points": amount, "remaining": amount,
                               "expires_at": expiry})
            model.entries[entry] = {"kind": "credit", "points": amount}
        elif kind == "debit":
            r = await tenant.adjust(member, -amount)
            if amount > model.available:
                assert r.status_code == 422 and r.json()["available"] == model.available
                continue
            assert r.status_code == 201
            model.entries[r.json()["entry"]["id"]] = {"kind": "debit", "taken": model.consume(amount)}
        else:
            open_entries = [e for e, v in model.entries.items() if not v.get("reversed")]
            if not open_entries:
                continue
            target = open_entries[amount % len(open_entries)]
            info = model.entries[target]
            r = await tenant.client.post(f"/v1/entries/{target}/reverse", json={"reason": "p"},
                                         headers=tenant.headers(idem=uuid.uuid4().hex))
            if info["kind"] == "credit" and info["points"] > model.available:
                assert r.status_code == 422
                continue
            assert r.status_code == 201, r.text
            info["reversed"] = True
            if info["kind"] == "credit":
                model.consume(info["points"], prefer=target)
            else:
                for lot_id, points in info["taken"].items():
                    model.lots[lot_id]["remaining"] += points
        assert (await tenant.balance(member))["available"] == model.available

    remaining = [r["remaining"] for r in await db.fetch(
        "SELECT l.remaining FROM lots l JOIN members m ON m.id = l.member_id "
        "WHERE m.program_id = $1 AND m.external_id = $2 ORDER BY l.id", tenant.program_id, member)]
    assert remaining == [lot["remaining"] for lot in model.lots]
    assert (await tenant.verify())["ok"]
