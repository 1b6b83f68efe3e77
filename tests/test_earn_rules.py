"""Earn rules engine: pure unit and property tests (no database, no HTTP)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.earning.rules import (
    Award,
    ClawbackResult,
    MemberFacts,
    Purchase,
    PurchaseLine,
    ReturnedLine,
    ReturnRequest,
    RuleSet,
    applied_rule_ids,
    clawback,
    evaluate,
    evaluate_event,
    event_periods_needed,
    local_date,
    personal_rule_ids,
    redact_award,
    redact_clawback,
    rule_periods_needed,
)
from app.errors import DomainError

D = Decimal
BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_NOON = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)  # 2024-03-04 is a Monday
TUESDAY_NOON = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)


def ruleset(ppu: str = "1", rounding: str = "floor", round_per: str = "line", **extra: Any) -> RuleSet:
    return RuleSet.model_validate(
        {"base": {"points_per_unit": ppu, "rounding": rounding, "round_per": round_per}, **extra}
    )


def line(
    sku: str = "a", price: str = "10", qty: int = 1, category: str | None = None, discount: str = "0"
) -> PurchaseLine:
    return PurchaseLine(sku=sku, category=category, quantity=qty, unit_price=D(price), discount=D(discount))


def purchase(
    *lines: PurchaseLine,
    at: datetime = MONDAY_NOON,
    channel: str = "pos",
    store_id: str | None = None,
    paid: str = "0",
    total: str | None = None,
) -> Purchase:
    amount = D(total) if total is not None else sum((ln.quantity * ln.unit_price - ln.discount for ln in lines), D(0))
    return Purchase.model_validate(
        {
            "occurred_at": at,
            "channel": channel,
            "store_id": store_id,
            "total": amount,
            "paid_with_points": D(paid),
            "lines": list(lines),
        }
    )


def member(
    tier: str | None = None,
    birthday: date | None = None,
    first: bool = False,
    today: int = 0,
    month: int = 0,
    counts: dict[str, dict[str, int]] | None = None,
) -> MemberFacts:
    return MemberFacts(tier=tier, birthday=birthday, first_purchase=first, earned_today=today, earned_this_month=month,
                       rule_counts=counts or {})


def earn(rules: RuleSet, p: Purchase, m: MemberFacts | None = None, tz: Any = UTC) -> Award:
    return evaluate(rules, p, m or member(), tz)


def check_breakdown(award: Award) -> None:
    """Every point of the award is explained, exactly."""
    assert award.points >= 0
    for ln in award.lines:
        assert ln.points >= 0 and ln.capped_points >= 0
        assert ln.base_points + sum(c.points for c in ln.contributions) - ln.capped_points == ln.points
    for bonus in award.order_bonuses:
        assert bonus.points >= 0 and bonus.capped_points >= 0
    assert sum(ln.points for ln in award.lines) + sum(b.points for b in award.order_bonuses) == award.points
    removed = sum(ln.capped_points for ln in award.lines) + sum(b.capped_points for b in award.order_bonuses)
    assert sum(c.points_removed for c in award.capped) == removed
    assert sum(ln.eligible_amount for ln in award.lines) == award.eligible_amount
    assert sum(ln.base_points for ln in award.lines) == award.base_points
    applied = applied_rule_ids(award)
    assert not applied & {s.rule_id for s in award.skipped}  # a skipped rule never applied


# --------------------------------------------------------------------------------------------------------------
# Base rate, rounding, exclusions, paid with points
# --------------------------------------------------------------------------------------------------------------


def test_base_points_are_eligible_amount_times_rate_floored():
    award = earn(ruleset("2"), purchase(line("a", "10", qty=2, discount="0.30")))
    assert award.lines[0].eligible_amount == D("19.70")
    assert award.lines[0].base_points == 39  # floor(39.4)
    assert award.points == 39 and award.rounding == "floor"
    check_breakdown(award)


@pytest.mark.parametrize(
    ("rounding", "round_per", "expected"),
    [
        ("floor", "line", [1, 1]),
        ("half_up", "line", [1, 1]),
        ("ceil", "line", [2, 2]),
        ("floor", "order", [1, 1]),  # floor(2.8) = 2, split evenly
        ("half_up", "order", [2, 1]),  # round(2.8) = 3; the tie goes to the smaller SKU
        ("ceil", "order", [2, 1]),
    ],
)
def test_rounding_modes_per_line_and_per_order(rounding: str, round_per: str, expected: list[int]):
    award = earn(ruleset("1", rounding, round_per), purchase(line("a", "1.40"), line("b", "1.40")))
    assert [ln.base_points for ln in award.lines] == expected
    assert award.points == sum(expected)
    check_breakdown(award)


def test_half_up_rounds_halves_up_not_to_even():
    assert earn(ruleset("1", "half_up"), purchase(line("a", "2.50"))).points == 3
    assert earn(ruleset("1", "half_up"), purchase(line("a", "2.49"))).points == 2
    assert earn(ruleset("1", "half_up"), purchase(line("a", "3.50"))).points == 4


def test_excluded_categories_and_skus_never_earn():
    rules = ruleset("1", exclusions={"categories": ["tobacco"], "skus": ["GIFT-25"]})
    award = earn(rules, purchase(line("cig", "8", category="tobacco"), line("GIFT-25", "25"), line("bread", "3")))
    assert [ln.excluded_by for ln in award.lines] == ["category", "sku", None]
    assert [ln.eligible_amount for ln in award.lines] == [D("0.00"), D("0.00"), D("3.00")]
    assert award.points == 3
    check_breakdown(award)


def test_paid_with_points_is_taken_off_proportionally_to_the_cent():
    award = earn(ruleset("1"), purchase(line("a", "10"), line("b", "10"), line("c", "10"), paid="10"))
    # 10.00 over three equal lines: 3.34 + 3.33 + 3.33; the extra cent goes to the smallest SKU.
    assert [ln.eligible_amount for ln in award.lines] == [D("6.66"), D("6.67"), D("6.67")]
    assert award.eligible_amount == D("20.00")
    assert award.points == 6 + 6 + 6


def test_paid_with_points_only_reduces_eligible_lines_and_never_below_zero():
    rules = ruleset("1", exclusions={"categories": ["tobacco"]})
    award = earn(rules, purchase(line("cig", "50", category="tobacco"), line("a", "30"), line("b", "10"), paid="20"))
    assert [ln.eligible_amount for ln in award.lines] == [D("0.00"), D("15.00"), D("5.00")]
    everything = earn(rules, purchase(line("cig", "50", category="tobacco"), line("a", "30"), paid="45"))
    assert everything.points == 0 and everything.eligible_amount == 0


def test_sub_cent_prices_are_allocated_exactly():
    award = earn(ruleset("10"), purchase(line("fuel", "1.799", qty=3), line("wash", "5"), paid="0.001"))
    assert sum(ln.eligible_amount for ln in award.lines) == D("5.397") + D("5") - D("0.001")
    check_breakdown(award)


# --------------------------------------------------------------------------------------------------------------
# Multipliers
# --------------------------------------------------------------------------------------------------------------


def test_stacking_multipliers_multiply_with_cumulative_rounding():
    rules = ruleset(
        "1",
        rules=[
            {"id": "double", "kind": "multiplier", "factor": "2", "priority": 2},
            {"id": "gold", "kind": "multiplier", "factor": "1.5", "priority": 1},
        ],
    )
    award = earn(rules, purchase(line("a", "3")))
    ln = award.lines[0]
    assert ln.base_points == 3
    # gold first: floor(3 * 1.5) = 4 (+1); then double: floor(3 * 3) = 9 (+5), not floor(4 * 2) = 8.
    assert [(c.rule_id, c.points) for c in ln.contributions] == [("gold", 1), ("double", 5)]
    assert award.points == 9
    check_breakdown(award)


def test_exclusive_multiplier_replaces_stacking_ones_and_highest_priority_wins():
    rules = ruleset(
        "1",
        rules=[
            {"id": "double", "kind": "multiplier", "factor": "2"},
            {"id": "triple", "kind": "multiplier", "factor": "3", "stacking": "exclusive", "priority": 5,
             "conditions": {"channels": ["app"]}},
            {"id": "quad", "kind": "multiplier", "factor": "4", "stacking": "exclusive", "priority": 9},
            {"id": "bonus", "kind": "fixed_bonus", "points": 1},  # another kind group: not suppressed
        ],
    )  # fmt: skip
    in_app = earn(rules, purchase(line("a", "10"), channel="app"))
    assert [c.rule_id for c in in_app.lines[0].contributions] == ["triple"] and in_app.points == 30 + 1
    at_pos = earn(rules, purchase(line("a", "10"), channel="pos"))  # triple does not apply: quad is next
    assert [c.rule_id for c in at_pos.lines[0].contributions] == ["quad"] and at_pos.points == 40 + 1


def test_multiplier_line_conditions_and_factor_below_one():
    rules = ruleset(
        "1",
        rules=[
            {"id": "coffee2x", "kind": "multiplier", "factor": "2", "conditions": {"categories": ["coffee"]}},
            {"id": "half", "kind": "multiplier", "factor": "0.5", "conditions": {"skus": ["water"]}},
        ],
    )
    award = earn(rules, purchase(line("latte", "5", category="coffee"), line("water", "3"), line("cake", "4")))
    assert [ln.points for ln in award.lines] == [10, 1, 4]
    assert award.lines[1].contributions[0].points == -2  # floor(1.5) - 3
    check_breakdown(award)


# --------------------------------------------------------------------------------------------------------------
# Bonuses
# --------------------------------------------------------------------------------------------------------------


def test_fixed_bonus_per_order_per_line_and_per_unit():
    rules = ruleset(
        "1",
        rules=[
            {"id": "order", "kind": "fixed_bonus", "points": 7},
            {"id": "perline", "kind": "fixed_bonus", "points": 5, "per": "line", "conditions": {"categories": ["x"]}},
            {"id": "perunit", "kind": "fixed_bonus", "points": 2, "per": "unit", "conditions": {"skus": ["b"]}},
        ],
    )
    award = earn(rules, purchase(line("a", "1", qty=3, category="x"), line("b", "1", qty=4, category="x")))
    assert [(b.rule_id, b.points) for b in award.order_bonuses] == [("order", 7)]
    assert [[(c.rule_id, c.points) for c in ln.contributions] for ln in award.lines] == [
        [("perline", 5)],
        [("perline", 5), ("perunit", 8)],
    ]
    assert award.points == 3 + 4 + 7 + 5 + 5 + 8
    check_breakdown(award)


def test_order_bonus_needs_an_eligible_line():
    rules = ruleset("1", rules=[{"id": "order", "kind": "fixed_bonus", "points": 7}], exclusions={"skus": ["gift"]})
    assert earn(rules, purchase(line("gift", "25"))).points == 0
    assert earn(rules, purchase(line("a", "10"), paid="10")).points == 0  # fully paid with points


def test_exclusive_bonus_suppresses_the_other_bonuses():
    rules = ruleset(
        "1",
        rules=[
            {"id": "welcome", "kind": "first_purchase_bonus", "points": 500, "stacking": "exclusive"},
            {"id": "bday", "kind": "birthday_bonus", "points": 50},
            {"id": "every", "kind": "fixed_bonus", "points": 5, "per": "line"},
        ],
    )
    bday = date(1990, 3, 4)
    first = earn(rules, purchase(line("a", "10")), member(birthday=bday, first=True))
    assert [b.rule_id for b in first.order_bonuses] == ["welcome"] and first.points == 510
    later = earn(rules, purchase(line("a", "10")), member(birthday=bday, first=False))
    assert [b.rule_id for b in later.order_bonuses] == ["bday"] and later.points == 10 + 50 + 5


def test_first_purchase_bonus():
    rules = ruleset("1", rules=[{"id": "welcome", "kind": "first_purchase_bonus", "points": 100}])
    assert earn(rules, purchase(line("a", "10")), member(first=True)).points == 110
    assert earn(rules, purchase(line("a", "10")), member(first=False)).points == 10


@pytest.mark.parametrize(
    ("birthday", "on", "match", "expected"),
    [
        (date(1990, 3, 5), date(2024, 3, 5), "same_day", True),
        (date(1990, 3, 5), date(2024, 3, 6), "same_day", False),
        (date(1990, 3, 5), date(2024, 3, 31), "same_month", True),
        (date(1990, 3, 5), date(2024, 4, 1), "same_month", False),
        (date(1992, 2, 29), date(2023, 2, 28), "same_day", True),  # non-leap year: celebrated on 28 February
        (date(1992, 2, 29), date(2023, 3, 1), "same_day", False),
        (date(1992, 2, 29), date(2024, 2, 28), "same_day", False),  # leap year: on the 29th
        (date(1992, 2, 29), date(2024, 2, 29), "same_day", True),
        (date(1992, 2, 28), date(2024, 2, 29), "same_day", False),
    ],
)
def test_birthday_bonus(birthday: date, on: date, match: str, expected: bool):
    rules = ruleset("1", rules=[{"id": "bday", "kind": "birthday_bonus", "points": 50, "birthday_match": match}])
    at = datetime.combine(on, time(12), UTC)
    award = earn(rules, purchase(line("a", "10"), at=at), member(birthday=birthday))
    assert award.points == (60 if expected else 10)


def test_birthday_default_is_same_day_and_no_birthday_never_matches():
    rules = ruleset("1", rules=[{"id": "bday", "kind": "birthday_bonus", "points": 50}])
    assert rules.rules[0].birthday_match == "same_day"
    assert earn(rules, purchase(line("a", "10")), member(birthday=None)).points == 10


def test_threshold_bonus_at_or_above_the_eligible_total():
    rules = ruleset("1", rules=[{"id": "big", "kind": "threshold_bonus", "points": 100, "min_total": "20"}])
    assert earn(rules, purchase(line("a", "19.99"))).points == 19
    at = earn(rules, purchase(line("a", "20.00")))
    assert at.points == 120 and at.order_bonuses[0].min_total == D("20")
    assert earn(rules, purchase(line("a", "25"), paid="5.01")).points == 19  # eligible 19.99: below
    rules_cat = ruleset(
        "1",
        rules=[{"id": "c", "kind": "threshold_bonus", "points": 100, "min_total": "20",
                "conditions": {"categories": ["coffee"]}}],
    )  # fmt: skip
    below = earn(rules_cat, purchase(line("beans", "15", category="coffee"), line("mug", "10")))
    assert below.points == 25
    above = earn(rules_cat, purchase(line("beans", "15", category="coffee"), line("cup", "5", category="coffee")))
    assert above.points == 120 and above.order_bonuses[0].line_indexes == [0, 1]


# --------------------------------------------------------------------------------------------------------------
# Conditions and time zones
# --------------------------------------------------------------------------------------------------------------


def test_late_evening_utc_is_the_next_day_in_berlin():
    rules = ruleset(
        "1", rules=[{"id": "tue", "kind": "multiplier", "factor": "2", "conditions": {"days_of_week": [2]}}]
    )
    monday_late_utc = datetime(2024, 3, 4, 23, 30, tzinfo=UTC)  # 2024-03-05 00:30 in Berlin: a Tuesday
    p = purchase(line("a", "10"), at=monday_late_utc)
    assert earn(rules, p, tz=UTC).points == 10
    berlin = earn(rules, p, tz=BERLIN)
    assert berlin.points == 20
    assert berlin.occurred_at_local.isoformat() == "2024-03-05T00:30:00+01:00"
    assert local_date(monday_late_utc, BERLIN) == date(2024, 3, 5)
    bday = ruleset("1", rules=[{"id": "b", "kind": "birthday_bonus", "points": 5}])
    assert earn(bday, p, member(birthday=date(1990, 3, 5)), tz=BERLIN).points == 15
    assert earn(bday, p, member(birthday=date(1990, 3, 5)), tz=UTC).points == 10


@pytest.mark.parametrize(
    ("window", "local_time", "expected"),
    [
        (("07:00", "10:00"), time(7, 0), True),
        (("07:00", "10:00"), time(9, 59), True),
        (("07:00", "10:00"), time(10, 0), False),
        (("22:00", "02:00"), time(23, 0), True),
        (("22:00", "02:00"), time(1, 59), True),
        (("22:00", "02:00"), time(2, 0), False),
        (("22:00", "02:00"), time(12, 0), False),
        ((None, "10:00"), time(0, 0), True),
        (("18:00", None), time(17, 59), False),
    ],
)
def test_hours_window_in_programme_time(window: tuple[str | None, str | None], local_time: time, expected: bool):
    cond = {k: v for k, v in (("time_from", window[0]), ("time_to", window[1])) if v is not None}
    rules = ruleset("1", rules=[{"id": "h", "kind": "fixed_bonus", "points": 5, "conditions": cond}])
    at = datetime.combine(date(2024, 7, 1), local_time, BERLIN)
    assert earn(rules, purchase(line("a", "10"), at=at), tz=BERLIN).points == (15 if expected else 10)


def test_date_range_is_inclusive_in_programme_time():
    cond = {"date_from": "2024-03-01", "date_to": "2024-03-04"}
    rules = ruleset("1", rules=[{"id": "promo", "kind": "fixed_bonus", "points": 5, "conditions": cond}])
    last_day = datetime(2024, 3, 4, 22, 59, tzinfo=UTC)  # 23:59 in Berlin
    after = last_day + timedelta(minutes=1)  # 00:00 on the 5th in Berlin
    assert earn(rules, purchase(line("a", "10"), at=last_day), tz=BERLIN).points == 15
    assert earn(rules, purchase(line("a", "10"), at=after), tz=BERLIN).points == 10
    before = datetime(2024, 2, 29, 22, 59, tzinfo=UTC)
    assert earn(rules, purchase(line("a", "10"), at=before), tz=BERLIN).points == 10


def test_store_channel_and_tier_conditions_all_must_hold():
    cond = {"store_ids": ["s1"], "channels": ["pos"], "tiers": ["gold"]}
    rules = ruleset("1", rules=[{"id": "m", "kind": "multiplier", "factor": "2", "conditions": cond}])
    assert earn(rules, purchase(line("a", "10"), store_id="s1"), member(tier="gold")).points == 20
    assert earn(rules, purchase(line("a", "10"), store_id="s2"), member(tier="gold")).points == 10
    assert earn(rules, purchase(line("a", "10"), store_id="s1", channel="app"), member(tier="gold")).points == 10
    assert earn(rules, purchase(line("a", "10"), store_id="s1"), member(tier="silver")).points == 10
    assert earn(rules, purchase(line("a", "10"), store_id="s1"), member(tier=None)).points == 10


# --------------------------------------------------------------------------------------------------------------
# Caps
# --------------------------------------------------------------------------------------------------------------


def test_caps_remove_order_bonuses_last_first_then_lines_proportionally():
    rules = ruleset(
        "1",
        rules=[
            {"id": "first", "kind": "fixed_bonus", "points": 10, "priority": 1},
            {"id": "second", "kind": "fixed_bonus", "points": 10, "priority": 2},
        ],
        caps={"per_order": 55, "per_member_per_day": 100, "per_member_per_month": 1000},
    )
    p = purchase(line("a", "30"), line("b", "10"))  # 40 line points + 20 bonus points = 60
    award = earn(rules, p, member(today=50, month=0))
    assert [(c.cap, c.limit, c.allowance, c.points_removed) for c in award.capped] == [
        ("per_order", 55, 55, 5),
        ("per_member_per_day", 100, 50, 5),
    ]
    assert award.points == 50
    assert [(b.rule_id, b.points, b.capped_points) for b in award.order_bonuses] == [
        ("first", 10, 0),
        ("second", 0, 10),
    ]
    assert [ln.points for ln in award.lines] == [30, 10]
    check_breakdown(award)

    tighter = earn(rules, p, member(today=80, month=0))  # allowance 20: bonuses go, then 20 of 40 line points
    assert [b.points for b in tighter.order_bonuses] == [0, 0]
    assert [(ln.points, ln.capped_points) for ln in tighter.lines] == [(15, 15), (5, 5)]
    assert tighter.points == 20
    check_breakdown(tighter)


def test_monthly_cap_and_a_cap_already_exceeded_award_zero_not_negative():
    rules = ruleset("1", caps={"per_member_per_month": 100})
    award = earn(rules, purchase(line("a", "30")), member(today=0, month=90))
    assert award.points == 10 and award.capped[0].cap == "per_member_per_month"
    over = earn(rules, purchase(line("a", "30")), member(today=0, month=150))
    assert over.points == 0 and over.capped[0].allowance == 0 and over.capped[0].points_removed == 30
    check_breakdown(over)
    assert earn(rules, purchase(line("a", "30")), member(month=10)).capped == []


# --------------------------------------------------------------------------------------------------------------
# A worked example: a coffee-chain programme
# --------------------------------------------------------------------------------------------------------------

COFFEE_CHAIN = {
    "base": {"points_per_unit": "2"},
    "rules": [
        {"id": "double-tuesday", "kind": "multiplier", "factor": "2", "conditions": {"days_of_week": [2]}},
        {"id": "birthday", "kind": "birthday_bonus", "points": 50, "birthday_match": "same_day"},
    ],
    "exclusions": {"categories": ["gift_card"]},
}


def test_coffee_chain_worked_example():
    rules = RuleSet.model_validate(COFFEE_CHAIN)
    lines = [
        line("latte", "4.95", qty=2, category="drink"),  # 9.90
        line("croissant", "3.25", category="food", discount="0.25"),  # 3.00
        line("card-25", "25", category="gift_card"),  # excluded
    ]
    tuesday_morning = datetime(2024, 3, 5, 8, 15, tzinfo=BERLIN)
    p = purchase(*lines, at=tuesday_morning, paid="2.00")
    award = evaluate(rules, p, member(birthday=date(1988, 3, 5)), BERLIN)
    # 2.00 paid with points over 9.90 and 3.00: 1.53 and 0.47 (largest remainder).
    assert [ln.eligible_amount for ln in award.lines] == [D("8.37"), D("2.53"), D("0.00")]
    assert [ln.base_points for ln in award.lines] == [16, 5, 0]  # floor(16.74), floor(5.06)
    assert [ln.points for ln in award.lines] == [32, 10, 0]  # double Tuesday
    assert [(b.rule_id, b.points) for b in award.order_bonuses] == [("birthday", 50)]
    assert award.points == 92
    check_breakdown(award)

    wednesday = purchase(*lines, at=tuesday_morning + timedelta(days=1), paid="2.00")
    assert evaluate(rules, wednesday, member(birthday=date(1988, 3, 5)), BERLIN).points == 21

    # The croissant comes back: its 10 points and its share of the birthday bonus, floor(50 * 2.53 / 10.90).
    result = clawback(award, p, ReturnRequest(lines=[ReturnedLine(sku="croissant", quantity=1)]))
    assert result.points == 10 + 11
    assert [(c.rule_id, c.points) for c in result.order_bonuses] == [("birthday", 11)]
    assert result.remaining_points == 92 - 21


def test_award_round_trips_through_json():
    rules = RuleSet.model_validate(COFFEE_CHAIN)
    award = earn(
        rules, purchase(line("latte", "4.95", qty=2), at=TUESDAY_NOON, paid="1"), member(birthday=date(1, 3, 5))
    )
    assert Award.model_validate_json(award.model_dump_json()) == award
    assert '"eligible_amount":"8.90"' in award.model_dump_json()  # money as a string, never a float
    assert RuleSet.model_validate_json(rules.model_dump_json()) == rules


# --------------------------------------------------------------------------------------------------------------
# Validation of the rule set and purchase
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"base": {"points_per_unit": "0"}}, "greater than 0"),
        ({"base": {"points_per_unit": "NaN"}}, "decimal string of ASCII digits"),
        ({"base": {"points_per_unit": "1"}, "colour": "red"}, "Extra inputs are not permitted"),
        ({"base": {"points_per_unit": "1", "rounding": "bankers"}}, "'floor', 'half_up' or 'ceil'"),
        ({"base": {"points_per_unit": "1"}, "rules": [{"id": "m", "kind": "multiplier"}]}, "factor is required"),
        ({"base": {"points_per_unit": "1"}, "rules": [{"id": "m", "kind": "multiplier", "factor": "2", "points": 3}]},
         "points is not allowed for kind 'multiplier'"),
        ({"base": {"points_per_unit": "1"}, "rules": [{"id": "t", "kind": "threshold_bonus", "points": 3}]},
         "min_total is required"),
        ({"base": {"points_per_unit": "1"}, "rules": [{"id": "b", "kind": "fixed_bonus", "points": 0}]},
         "greater than 0"),
        ({"base": {"points_per_unit": "1"}, "rules": [{"id": "m", "kind": "multiplier", "factor": "-1"}]},
         "greater than or equal to 0"),
        ({"base": {"points_per_unit": "1"},
          "rules": [{"id": "x", "kind": "fixed_bonus", "points": 1}, {"id": "x", "kind": "fixed_bonus", "points": 2}]},
         "duplicate rule id 'x'"),
        ({"base": {"points_per_unit": "1"},
          "rules": [{"id": "x", "kind": "fixed_bonus", "points": 1, "conditions": {"categories": []}}]},
         "categories must not be empty"),
        ({"base": {"points_per_unit": "1"},
          "rules": [{"id": "x", "kind": "fixed_bonus", "points": 1, "conditions": {"days_of_week": [8]}}]},
         "less than or equal to 7"),
        ({"base": {"points_per_unit": "1"},
          "rules": [{"id": "x", "kind": "fixed_bonus", "points": 1,
                     "conditions": {"date_from": "2024-02-01", "date_to": "2024-01-01"}}]},
         "date_from must not be after date_to"),
        ({"base": {"points_per_unit": "1"},
          "rules": [{"id": "x", "kind": "fixed_bonus", "points": 1, "conditions": {"time_from": "10:00+01:00"}}]},
         "drop the UTC offset"),
        ({"base": {"points_per_unit": "1"}, "events": [{"name": "e", "points": 5, "once": True, "max_ever": 2}]},
         "once contradicts max_ever"),
    ],
)  # fmt: skip
def test_rule_set_validation_messages(payload: dict[str, Any], message: str):
    with pytest.raises(ValidationError) as caught:
        RuleSet.model_validate(payload)
    assert message in str(caught.value)


def test_purchase_validation():
    with pytest.raises(ValidationError, match="discount must not exceed"):
        line("a", "1", qty=2, discount="2.01")
    with pytest.raises(ValidationError, match="paid_with_points must not exceed total"):
        purchase(line("a", "10"), paid="10.01")
    with pytest.raises(ValidationError, match="timezone"):
        purchase(line("a", "10"), at=datetime(2024, 3, 4, 12))
    with pytest.raises(ValidationError, match="at least 1 item"):
        purchase()
    with pytest.raises(ValueError, match="must not be negative"):
        member(today=-1)


def test_huge_awards_are_refused():
    rules = ruleset("1000000", rules=[{"id": "m", "kind": "multiplier", "factor": "1000"}])
    with pytest.raises(DomainError) as caught:
        earn(rules, purchase(line("a", "1000000000", qty=10)))
    assert caught.value.code == "points_out_of_range"


# --------------------------------------------------------------------------------------------------------------
# Order total: never earn on more money than was paid (issue 12 F9)
# --------------------------------------------------------------------------------------------------------------


def test_lines_worth_more_than_the_total_are_scaled_down_to_it():
    award = earn(ruleset("1"), purchase(line("tv", "100000000"), total="1.00"))
    assert award.eligible_amount == D("1.00") and award.points == 1
    assert award.lines[0].order_discount == D("99999999.00")
    check_breakdown(award)
    # pro rata over the lines, excluded lines included (the order discount is the whole order's)
    rules = ruleset("1", exclusions={"categories": ["gift"]})
    split = earn(rules, purchase(line("a", "60"), line("b", "20"), line("card", "20", category="gift"), total="50"))
    assert [ln.eligible_amount for ln in split.lines] == [D("30.00"), D("10.00"), D("0.00")]
    assert [ln.order_discount for ln in split.lines] == [D("30.00"), D("10.00"), D("10.00")]
    assert split.points == 40
    # lines below the total (tax, tips) are left as they are
    assert earn(ruleset("1"), purchase(line("a", "10"), total="12.50")).eligible_amount == D("10.00")
    # paid with points comes off what was paid: 50.00 paid, 20.00 of it in points
    paid = earn(ruleset("1"), purchase(line("a", "100"), total="50", paid="20"))
    assert paid.eligible_amount == D("30.00") and paid.points == 30


def test_amount_returns_are_bounded_by_what_was_paid():
    p = purchase(line("a", "60"), line("b", "40"), total="50")
    award = earn(ruleset("1"), p)
    assert award.points == 50
    with pytest.raises(DomainError):
        clawback(award, p, ReturnRequest(amount=D("50.01")))
    assert clawback(award, p, ReturnRequest(amount=D("25"))).points == 25
    assert clawback(award, p, ReturnRequest(amount=D("50"))).points == 50


# --------------------------------------------------------------------------------------------------------------
# Limits, exclusivity groups, birthday conditions, multipliers on the base (issue 12: rules a programme needed)
# --------------------------------------------------------------------------------------------------------------

BIRTHDAY_ONCE = {"id": "birthday", "kind": "birthday_bonus", "points": 100, "limits": [{"times": 1, "per": "year"}]}


def test_a_bonus_limited_to_once_a_year_applies_once():
    rules = ruleset("1", rules=[BIRTHDAY_ONCE])
    bday = date(1990, 3, 4)  # MONDAY_NOON is 4 March
    first = earn(rules, purchase(line("a", "10")), member(birthday=bday, counts={"birthday": {"year": 0}}))
    assert first.points == 110 and applied_rule_ids(first) == {"birthday"}
    second = earn(rules, purchase(line("a", "10")), member(birthday=bday, counts={"birthday": {"year": 1}}))
    assert second.points == 10 and second.order_bonuses == []
    assert [(s.rule_id, s.reason, s.per, s.times, s.count) for s in second.skipped] == [
        ("birthday", "limit", "year", 1, 1)]
    check_breakdown(second)
    # not the birthday: the rule does not apply, so no limit is reported either
    other = earn(rules, purchase(line("a", "10")), member(birthday=date(1990, 5, 5), counts={"birthday": {"year": 1}}))
    assert other.skipped == []
    assert rule_periods_needed(rules) == {"birthday": {"year"}}
    with pytest.raises(ValueError, match="limited per year"):
        earn(rules, purchase(line("a", "10")), member(birthday=bday))


def test_several_limits_report_the_widest_reached_first():
    rules = ruleset("1", rules=[{"id": "f", "kind": "fixed_bonus", "points": 5,
                                 "limits": [{"times": 2, "per": "day"}, {"times": 5, "per": "month"},
                                            {"times": 9, "per": "ever"}]}])
    assert earn(rules, purchase(line("a", "1")), member(counts={"f": {"day": 1, "month": 4, "ever": 8}})).points == 6
    both = earn(rules, purchase(line("a", "1")), member(counts={"f": {"day": 2, "month": 5, "ever": 8}}))
    assert [(s.per, s.count) for s in both.skipped] == [("month", 5)]
    ever = earn(rules, purchase(line("a", "1")), member(counts={"f": {"day": 0, "month": 0, "ever": 9}}))
    assert [(s.per, s.times) for s in ever.skipped] == [("ever", 9)]


def test_a_rule_at_its_limit_excludes_nothing():
    rules = ruleset("1", rules=[
        {**BIRTHDAY_ONCE, "stacking": "exclusive"},
        {"id": "visit", "kind": "fixed_bonus", "points": 5},
    ])
    bday = date(1990, 3, 4)
    first = earn(rules, purchase(line("a", "10")), member(birthday=bday, counts={"birthday": {"year": 0}}))
    assert [b.rule_id for b in first.order_bonuses] == ["birthday"]
    again = earn(rules, purchase(line("a", "10")), member(birthday=bday, counts={"birthday": {"year": 1}}))
    assert [b.rule_id for b in again.order_bonuses] == ["visit"]


STARBUCKS_LIKE = ruleset("2", rules=[
    {"id": "beans-3x", "kind": "multiplier", "factor": "3", "priority": 10, "conditions": {"categories": ["beans"]}},
    {"id": "double-tuesday", "kind": "multiplier", "factor": "2", "priority": 20, "group": "day-offer",
     "conditions": {"days_of_week": [2]}},
    {"id": "birthday", "kind": "birthday_bonus", "points": 100, "priority": 5, "group": "day-offer",
     "limits": [{"times": 1, "per": "year"}]},
])


def test_an_exclusivity_group_spans_multipliers_and_bonuses():
    """"Tuesday x2, but not on birthday orders": the birthday bonus and the Tuesday multiplier share a group."""
    p = purchase(line("beans", "10", category="beans"), line("latte", "5"), at=TUESDAY_NOON)
    tuesday = earn(STARBUCKS_LIKE, p, member(birthday=date(1990, 7, 1), counts={"birthday": {"year": 0}}))
    assert [[c.rule_id for c in ln.contributions] for ln in tuesday.lines] == [["beans-3x", "double-tuesday"],
                                                                             ["double-tuesday"]]
    assert tuesday.points == 120 + 20
    birthday = member(birthday=date(1990, 3, 5), counts={"birthday": {"year": 0}})
    on_birthday = earn(STARBUCKS_LIKE, p, birthday)
    assert [[c.rule_id for c in ln.contributions] for ln in on_birthday.lines] == [["beans-3x"], []]
    assert [b.rule_id for b in on_birthday.order_bonuses] == ["birthday"] and on_birthday.points == 60 + 10 + 100
    assert [(s.rule_id, s.reason, s.group, s.by_rule_id) for s in on_birthday.skipped] == [
        ("double-tuesday", "group", "day-offer", "birthday")]
    # the second birthday order the same year: the bonus is used up, so it excludes nothing: Tuesday x2 applies
    used = earn(STARBUCKS_LIKE, p, member(birthday=date(1990, 3, 5), counts={"birthday": {"year": 1}}))
    assert used.points == 140 and [s.reason for s in used.skipped] == ["limit"]
    check_breakdown(on_birthday)


def test_a_birthday_condition_on_any_rule():
    rules = ruleset("1", rules=[
        {"id": "bday-x3", "kind": "multiplier", "factor": "3", "conditions": {"birthday": "same_day"}},
        {"id": "bday-month", "kind": "fixed_bonus", "points": 7, "conditions": {"birthday": "same_month"}},
        {"id": "tue-not-bday", "kind": "multiplier", "factor": "2",
         "conditions": {"days_of_week": [2], "birthday": "not_same_day"}},
    ])
    p = purchase(line("a", "10"), at=TUESDAY_NOON)  # 5 March
    assert earn(rules, p, member(birthday=date(1990, 3, 5))).points == 30 + 7
    assert earn(rules, p, member(birthday=date(1990, 3, 20))).points == 20 + 7
    assert earn(rules, p, member(birthday=None)).points == 20  # no birthday: never same_*, always not_same_*
    leap = purchase(line("a", "10"), at=datetime(2023, 2, 28, 12, tzinfo=UTC))
    assert earn(rules, leap, member(birthday=date(1992, 2, 29))).points == 30 + 7
    assert personal_rule_ids(rules) == {"bday-x3", "bday-month", "tue-not-bday"}


def test_a_multiplier_on_the_base_rate_only():
    rules = ruleset("2", rules=[
        {"id": "beans-3x", "kind": "multiplier", "factor": "3", "priority": 10, "conditions": {"categories": ["b"]}},
        {"id": "tue-2x", "kind": "multiplier", "factor": "2", "priority": 20},
        {"id": "gold-on-base", "kind": "multiplier", "factor": "1.5", "applies_to": "base", "priority": 0},
    ])
    award = earn(rules, purchase(line("b", "20", category="b")))  # base 40
    # compounding ones first (40 -> 120 -> 240), then +40 x 0.5 on the base only: 260, not 360
    assert [(c.rule_id, c.points) for c in award.lines[0].contributions] == [
        ("beans-3x", 80), ("tue-2x", 120), ("gold-on-base", 20)]
    assert award.points == 260
    below_one = ruleset("1", rules=[
        {"id": "half-a", "kind": "multiplier", "factor": "0", "applies_to": "base"},
        {"id": "half-b", "kind": "multiplier", "factor": "0", "applies_to": "base"},
    ])
    never_negative = earn(below_one, purchase(line("a", "10")))
    assert [c.points for c in never_negative.lines[0].contributions] == [-10, 0] and never_negative.points == 0
    check_breakdown(never_negative)


def test_rule_options_are_validated():
    for bad in (
        {"id": "x", "kind": "fixed_bonus", "points": 1, "limits": []},
        {"id": "x", "kind": "fixed_bonus", "points": 1,
         "limits": [{"times": 1, "per": "day"}, {"times": 2, "per": "day"}]},
        {"id": "x", "kind": "fixed_bonus", "points": 1, "limits": [{"times": 0, "per": "day"}]},
        {"id": "x", "kind": "fixed_bonus", "points": 1, "limits": [{"times": 1, "per": "week"}]},
        {"id": "x", "kind": "fixed_bonus", "points": 1, "applies_to": "base"},
        {"id": "x", "kind": "multiplier", "factor": "2", "applies_to": "total"},
        {"id": "x", "kind": "multiplier", "factor": "2", "conditions": {"birthday": "today"}},
        {"id": "x", "kind": "multiplier", "factor": "2", "group": "not a valid id"},
    ):
        with pytest.raises(ValidationError):
            ruleset("1", rules=[bad])


def test_returns_release_a_rule_only_when_everything_it_gave_is_taken_back():
    rules = ruleset("1", rules=[
        BIRTHDAY_ONCE,
        {"id": "x2", "kind": "multiplier", "factor": "2", "conditions": {"skus": ["a"]}},
        {"id": "big", "kind": "threshold_bonus", "points": 30, "min_total": "25"},
    ])
    p = purchase(line("a", "10", qty=2), line("b", "10"), at=MONDAY_NOON)
    award = earn(rules, p, member(birthday=date(1990, 3, 4), counts={"birthday": {"year": 0}}))
    assert applied_rule_ids(award) == {"birthday", "x2", "big"}
    one = clawback(award, p, returned("a", 1))  # kept 20.00 < 25: the threshold bonus goes whole
    assert one.released_rule_ids == ["big"]
    two = clawback(award, p, returned("a", 1), [returned("a", 1)])  # line a fully back: x2 is released
    assert two.released_rule_ids == ["x2"]
    last = clawback(award, p, returned("b", 1), [returned("a", 1), returned("a", 1)])
    assert last.released_rule_ids == ["birthday"] and last.remaining_points == 0
    partial = clawback(award, p, ReturnRequest(amount=D("29.99")))  # almost everything: nothing fully back
    assert "birthday" not in partial.released_rule_ids


def test_redaction_removes_the_birthday_and_keeps_every_number():
    rules = ruleset("1", rules=[
        {"id": "birthday", "kind": "birthday_bonus", "points": 50},
        {"id": "bday-x2", "kind": "multiplier", "factor": "2", "conditions": {"birthday": "same_day"}},
        {"id": "bday-big", "kind": "threshold_bonus", "points": 20, "min_total": "5",
         "conditions": {"birthday": "same_month"}},
        {"id": "visit", "kind": "fixed_bonus", "points": 5},
    ])
    p = purchase(line("a", "10"))
    award = earn(rules, p, member(birthday=date(1990, 3, 4)))
    redacted = redact_award(award, personal_rule_ids(rules))
    check_breakdown(redacted)
    assert redacted.points == award.points == 10 + 10 + 50 + 20 + 5
    dump = redacted.model_dump_json()
    assert "birthday" not in dump and "bday" not in dump
    assert sorted((b.rule_id, b.kind) for b in redacted.order_bonuses) == [
        ("redacted", "redacted"), ("redacted", "threshold_bonus"), ("visit", "fixed_bonus")]
    assert redact_award(redacted, personal_rule_ids(rules)) == redacted  # idempotent
    # returns claw back the same points from the redacted award
    for request in (returned("a", 1), ReturnRequest(amount=D("6"))):
        before, after = clawback(award, p, request), clawback(redacted, p, request)
        assert (before.points, before.cumulative_points) == (after.points, after.cumulative_points)
        assert "birthday" not in redact_clawback(before, personal_rule_ids(rules)).model_dump_json()
    assert isinstance(redact_clawback(before, set()), ClawbackResult)


# --------------------------------------------------------------------------------------------------------------
# Custom events
# --------------------------------------------------------------------------------------------------------------

EVENTS = ruleset(
    "1",
    events=[
        {"name": "app_installed", "points": 200, "once": True},
        {"name": "review_written", "points": 20, "max_per_day": 2, "max_per_month": 5},
        {"name": "check_in", "points": 1},
    ],
)


def test_events_award_fixed_points_within_their_limits():
    assert evaluate_event(EVENTS, "app_installed", {"ever": 0}).points == 200
    done = evaluate_event(EVENTS, "app_installed", {"ever": 1})
    assert (done.points, done.limited_by, done.limit) == (0, "ever", 1)
    assert evaluate_event(EVENTS, "review_written", {"day": 1, "month": 4}).points == 20
    assert evaluate_event(EVENTS, "review_written", {"day": 2, "month": 2}).limited_by == "day"
    assert evaluate_event(EVENTS, "review_written", {"day": 2, "month": 5}).limited_by == "month"
    assert evaluate_event(EVENTS, "check_in", {}).points == 1
    assert event_periods_needed(EVENTS, "review_written") == {"day", "month"}
    assert EVENTS.events[0].max_ever == 1


def test_events_refuse_unknown_names_and_missing_counts():
    with pytest.raises(DomainError) as caught:
        evaluate_event(EVENTS, "nope", {})
    assert caught.value.code == "validation_error"
    with pytest.raises(ValueError, match="limited per day"):
        evaluate_event(EVENTS, "review_written", {"month": 0})
    with pytest.raises(ValueError, match="must not be negative"):
        evaluate_event(EVENTS, "app_installed", {"ever": -1})


# --------------------------------------------------------------------------------------------------------------
# Clawback
# --------------------------------------------------------------------------------------------------------------


def returned(sku: str, qty: int, index: int | None = None) -> ReturnRequest:
    return ReturnRequest(lines=[ReturnedLine(sku=sku, quantity=qty, line_index=index)])


def test_three_partial_returns_claw_back_exactly_then_an_over_return_raises():
    p = purchase(line("mug", "3.34", qty=3), line("tea", "5"))  # mug: floor(10.02) = 10 points, tea 5
    award = earn(ruleset("1"), p)
    assert [ln.points for ln in award.lines] == [10, 5]
    history: list[ReturnRequest] = []
    clawed = []
    for _ in range(3):
        result = clawback(award, p, returned("mug", 1), history)
        clawed.append(result.points)
        history.append(returned("mug", 1))
    assert clawed == [3, 3, 4]  # floor(10/3), floor(20/3) - 3, 10 - 6
    assert result.cumulative_points == 10 and result.remaining_points == 5
    assert result.lines[0].returned_quantity == 3
    with pytest.raises(DomainError) as caught:
        clawback(award, p, returned("mug", 1), history)
    assert caught.value.code == "validation_error" and "only 0 bought and not yet returned" in caught.value.detail
    with pytest.raises(DomainError):
        clawback(award, p, returned("tea", 2))


def test_threshold_bonus_is_clawed_back_only_when_falling_below():
    rules = ruleset("1", rules=[{"id": "big", "kind": "threshold_bonus", "points": 100, "min_total": "20"}])
    p = purchase(line("a", "2", qty=5), line("b", "12"))  # 22.00 eligible: 10 + 12 line points + 100
    award = earn(rules, p)
    assert award.points == 122
    first = clawback(award, p, returned("a", 1))  # keeps 20.00: still at the threshold
    assert first.points == 2 and first.order_bonuses == []
    second = clawback(award, p, returned("a", 1), [returned("a", 1)])  # keeps 18.00: below
    assert second.points == 2 + 100 and [(c.rule_id, c.points) for c in second.order_bonuses] == [("big", 100)]
    third = clawback(award, p, returned("b", 1), [returned("a", 1), returned("a", 1)])
    assert third.points == 12 and third.order_bonuses == []
    rest = clawback(award, p, returned("a", 3), [returned("a", 1), returned("a", 1), returned("b", 1)])
    assert rest.cumulative_points == award.points and rest.remaining_points == 0


def test_proportional_order_bonus_clawback():
    rules = ruleset("1", rules=[{"id": "f", "kind": "fixed_bonus", "points": 9}])
    p = purchase(line("a", "10"), line("b", "20"))
    award = earn(rules, p)
    result = clawback(award, p, returned("a", 1))
    assert result.points == 10 + 3  # a third of the eligible amount: 3 of 9 bonus points


def test_amount_returns_are_spread_over_the_kept_value():
    rules = ruleset("1", exclusions={"categories": ["gift"]})
    p = purchase(line("a", "30"), line("b", "10"), line("card", "10", category="gift"))
    award = earn(rules, p)
    assert award.points == 40
    half = clawback(award, p, ReturnRequest(amount=D("25")))  # half of the 50.00 bought
    assert half.points == 15 + 5 and [c.index for c in half.lines] == [0, 1, 2]
    history = [ReturnRequest(amount=D("25"))]
    a_back = clawback(award, p, returned("a", 1), history)  # the rest of a's points
    assert a_back.points == 15
    history.append(returned("a", 1))
    with pytest.raises(DomainError) as caught:  # kept: half of b and half of the card, 10.00
        clawback(award, p, ReturnRequest(amount=D("10.01")), history)
    assert caught.value.extra["available_amount"] == "10.00"
    last = clawback(award, p, ReturnRequest(amount=D("10")), history)
    assert last.cumulative_points == 40


def test_returns_pick_lines_of_a_sku_in_order_or_by_index():
    p = purchase(line("a", "10"), line("a", "20", qty=2))
    award = earn(ruleset("1"), p)
    first = clawback(award, p, returned("a", 2))  # line 0, then one unit of line 1
    assert [(c.index, c.points) for c in first.lines] == [(0, 10), (1, 20)]
    by_index = clawback(award, p, returned("a", 1, index=1))
    assert [(c.index, c.points) for c in by_index.lines] == [(1, 20)]
    with pytest.raises(DomainError, match="is not SKU"):
        clawback(award, p, returned("b", 1, index=1))
    with pytest.raises(DomainError, match="is not in the purchase"):
        clawback(award, p, returned("zzz", 1))
    with pytest.raises(DomainError, match="does not belong"):
        clawback(award, purchase(line("b", "10")), returned("b", 1))


def test_return_request_is_lines_or_amount():
    with pytest.raises(ValidationError, match="exactly one of lines or amount"):
        ReturnRequest()
    with pytest.raises(ValidationError, match="exactly one of lines or amount"):
        ReturnRequest(lines=[ReturnedLine(sku="a", quantity=1)], amount=D("1"))
    with pytest.raises(ValidationError, match="greater than 0"):
        ReturnRequest(amount=D("0"))


# --------------------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------------------

SKUS = ["a", "b", "c", "d"]
CATEGORIES = [None, "coffee", "food", "tobacco"]
ZONES = [UTC, BERLIN, ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Kolkata")]
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    cond: dict[str, Any] = {}
    if draw(st.booleans()):
        cond["categories"] = draw(st.lists(st.sampled_from(["coffee", "food"]), min_size=1, max_size=2, unique=True))
    if draw(st.booleans()):
        cond["skus"] = draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        cond["days_of_week"] = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4, unique=True))
    if draw(st.booleans()):
        cond["channels"] = draw(
            st.lists(st.sampled_from(["pos", "online", "app"]), min_size=1, max_size=2, unique=True)
        )
    if draw(st.booleans()):
        cond["tiers"] = ["gold"]
    if draw(st.integers(0, 3)) == 0:
        cond["birthday"] = draw(st.sampled_from(["same_day", "same_month", "not_same_day", "not_same_month"]))
    return cond


@st.composite
def earn_rules(draw: st.DrawFn, index: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["multiplier", "fixed_bonus", "first_purchase_bonus", "birthday_bonus",
                                 "threshold_bonus"]))  # fmt: skip
    rule: dict[str, Any] = {
        "id": f"r{index}",
        "kind": kind,
        "priority": draw(st.integers(0, 3)),
        "stacking": draw(st.sampled_from(["stack", "stack", "exclusive"])),
        "conditions": draw(conditions()),
    }
    if kind == "multiplier":
        rule["factor"] = draw(st.sampled_from(["0", "0.5", "1.25", "2", "3"]))
    else:
        rule["points"] = draw(st.integers(1, 200))
    if kind == "fixed_bonus":
        rule["per"] = draw(st.sampled_from(["order", "line", "unit"]))
    if kind == "birthday_bonus":
        rule["birthday_match"] = draw(st.sampled_from(["same_day", "same_month"]))
    if kind == "threshold_bonus":
        rule["min_total"] = str(draw(st.integers(1, 20000)) / 100)
    if kind == "multiplier" and draw(st.integers(0, 3)) == 0:
        rule["applies_to"] = "base"
    if draw(st.booleans()):
        rule["group"] = draw(st.sampled_from(["g1", "g2"]))
    if draw(st.integers(0, 2)) == 0:
        periods = draw(st.lists(st.sampled_from(["day", "month", "year", "ever"]), min_size=1, max_size=3,
                                unique=True))
        rule["limits"] = [{"times": draw(st.integers(1, 3)), "per": per} for per in periods]
    return rule


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    count = draw(st.integers(0, 4))
    caps = {name: draw(st.none() | st.integers(0, 400)) for name in
            ("per_order", "per_member_per_day", "per_member_per_month")}  # fmt: skip
    return RuleSet.model_validate(
        {
            "base": {
                "points_per_unit": draw(st.sampled_from(["0.1", "0.5", "1", "1.25", "2", "3"])),
                "rounding": draw(st.sampled_from(["floor", "half_up", "ceil"])),
                "round_per": draw(st.sampled_from(["line", "order"])),
            },
            "rules": [draw(earn_rules(i)) for i in range(count)],
            "exclusions": {"categories": ["tobacco"]},
            "caps": caps,
        }
    )


@st.composite
def purchase_lines(draw: st.DrawFn) -> PurchaseLine:
    quantity = draw(st.integers(1, 4))
    cents = draw(st.integers(0, 5000))
    discount = draw(st.integers(0, quantity * cents))
    return PurchaseLine(
        sku=draw(st.sampled_from(SKUS)),
        category=draw(st.sampled_from(CATEGORIES)),
        quantity=quantity,
        unit_price=D(cents) / 100,
        discount=D(discount) / 100,
    )


@st.composite
def purchases(draw: st.DrawFn) -> Purchase:
    lines = draw(st.lists(purchase_lines(), min_size=1, max_size=6))
    total = sum((ln.quantity * ln.unit_price - ln.discount for ln in lines), D(0))
    # mostly the lines' sum; sometimes less (an order-level discount), sometimes more (tax, tips)
    total = draw(st.sampled_from([total, total, D(draw(st.integers(0, int(total * 100)))) / 100,
                                  total + D(draw(st.integers(1, 1000))) / 100]))
    paid_cents = draw(st.integers(0, int(total * 100)) | st.just(0))
    at = draw(st.datetimes(datetime(2023, 1, 1), datetime(2025, 12, 31), timezones=st.just(UTC)))
    return Purchase(
        occurred_at=at,
        channel=draw(st.sampled_from(["pos", "online", "app"])),
        total=total,
        paid_with_points=D(paid_cents) / 100,
        lines=lines,
    )


@st.composite
def members(draw: st.DrawFn) -> MemberFacts:
    today = draw(st.integers(0, 300))
    return MemberFacts(
        tier=draw(st.sampled_from([None, "gold", "silver"])),
        birthday=draw(st.none() | st.dates(date(1950, 1, 1), date(2005, 12, 31))),
        first_purchase=draw(st.booleans()),
        earned_today=today,
        earned_this_month=today + draw(st.integers(0, 300)),
    )


def with_counts(rules: RuleSet, m: MemberFacts, data: st.DataObject) -> MemberFacts:
    """``m`` with a count for every limited rule and period (0 to 4: below, at or above the limits)."""
    counts = {rule_id: {per: data.draw(st.integers(0, 4)) for per in sorted(periods)}
              for rule_id, periods in rule_periods_needed(rules).items()}
    return replace(m, rule_counts=counts)


def line_outcome(award: Award, p: Purchase) -> Counter[tuple[Any, ...]]:
    return Counter(
        (p.lines[ln.index].model_dump_json(), ln.eligible_amount, ln.base_points, ln.points, ln.capped_points,
         tuple((c.rule_id, c.points) for c in ln.contributions))
        for ln in award.lines
    )  # fmt: skip


@PROPERTY_SETTINGS
@given(rules=rule_sets(), p=purchases(), m=members(), tz=st.sampled_from(ZONES), data=st.data())
def test_property_award_is_explained_never_negative_and_within_every_cap(
    rules: RuleSet, p: Purchase, m: MemberFacts, tz: Any, data: st.DataObject
):
    m = with_counts(rules, m, data)
    award = evaluate(rules, p, m, tz)
    check_breakdown(award)
    caps = rules.caps
    if caps.per_order is not None:
        assert award.points <= caps.per_order
    if caps.per_member_per_day is not None:
        assert award.points <= max(0, caps.per_member_per_day - m.earned_today)
    if caps.per_member_per_month is not None:
        assert award.points <= max(0, caps.per_member_per_month - m.earned_this_month)
    eligible_before = sum(
        (ln.quantity * ln.unit_price - ln.discount for ln in p.lines if ln.category != "tobacco"), D(0)
    )
    lines_total = sum((ln.quantity * ln.unit_price - ln.discount for ln in p.lines), D(0))
    # never earns on more money than was paid
    assert award.eligible_amount <= p.total - p.paid_with_points
    if lines_total <= p.total:
        assert award.eligible_amount == max(D(0), eligible_before - p.paid_with_points)
        assert all(ln.order_discount == 0 for ln in award.lines)
    else:
        assert sum(ln.order_discount for ln in award.lines) == lines_total - p.total
    assert Award.model_validate_json(award.model_dump_json()) == award


def award_skipped_ids(award: Award) -> set[str]:
    return {s.rule_id for s in award.skipped}


@PROPERTY_SETTINGS
@given(rules=rule_sets(), p=purchases(), m=members(), tz=st.sampled_from(ZONES), data=st.data())
def test_property_limits_and_groups_hold(rules: RuleSet, p: Purchase, m: MemberFacts, tz: Any, data: st.DataObject):
    """A rule at one of its limits never applies and is reported; of one exclusivity group at most one rule
    applies, and every rule of the group skipped names it; a rule whose birthday condition fails never applies."""
    m = with_counts(rules, m, data)
    award = evaluate(rules, p, m, tz)
    applied = applied_rule_ids(award)
    by_id = {rule.id: rule for rule in rules.rules}
    for rule in rules.rules:
        at_limit = any(m.rule_counts[rule.id][lim.per] >= lim.times for lim in rule.limits or [])
        if at_limit:
            assert rule.id not in applied
    for skipped in award.skipped:
        rule = by_id[skipped.rule_id]
        if skipped.reason == "limit":
            assert skipped.count is not None and skipped.times is not None and skipped.count >= skipped.times
            assert any(lim.per == skipped.per and lim.times == skipped.times for lim in rule.limits or [])
        else:
            # the winner applied (it may have earned nothing: a multiplier on a line worth 0 base points)
            assert skipped.by_rule_id not in award_skipped_ids(award)
            assert by_id[skipped.by_rule_id].group == rule.group == skipped.group
            winner = by_id[skipped.by_rule_id]
            assert (winner.priority, winner.id) < (rule.priority, rule.id)
    for group in {rule.group for rule in rules.rules if rule.group}:
        assert len([r for r in applied if by_id[r].group == group]) <= 1
    # with no earlier awards nothing is skipped for a limit
    fresh = {rule_id: dict.fromkeys(periods, 0) for rule_id, periods in m.rule_counts.items()}
    assert all(s.reason == "group" for s in evaluate(rules, p, replace(m, rule_counts=fresh), tz).skipped)


@PROPERTY_SETTINGS
@given(rules=rule_sets(), p=purchases(), m=members(), tz=st.sampled_from(ZONES), data=st.data())
def test_property_award_does_not_depend_on_the_order_of_lines(
    rules: RuleSet, p: Purchase, m: MemberFacts, tz: Any, data: st.DataObject
):
    m = with_counts(rules, m, data)
    shuffled = p.model_copy(update={"lines": data.draw(st.permutations(p.lines))})
    award, other = evaluate(rules, p, m, tz), evaluate(rules, shuffled, m, tz)
    assert award.points == other.points
    assert line_outcome(award, p) == line_outcome(other, shuffled)
    assert sorted((b.rule_id, b.points) for b in award.order_bonuses) == sorted(
        (b.rule_id, b.points) for b in other.order_bonuses
    )


@PROPERTY_SETTINGS
@given(rules=rule_sets(), p=purchases(), m=members(), data=st.data())
def test_property_clawbacks_never_exceed_the_award_and_a_full_return_takes_it_all(
    rules: RuleSet, p: Purchase, m: MemberFacts, data: st.DataObject
):
    m = with_counts(rules, m, data)
    award = evaluate(rules, p, m, BERLIN)
    if data.draw(st.booleans()):  # erasure redacts the award: returns claw back exactly the same
        award = redact_award(award, personal_rule_ids(rules))
        check_breakdown(award)
    released: list[str] = []
    history: list[ReturnRequest] = []
    kept_units = [ln.quantity for ln in p.lines]
    total_clawed = 0
    for _ in range(data.draw(st.integers(0, 4))):
        if data.draw(st.booleans()):
            index = data.draw(st.sampled_from([i for i, k in enumerate(kept_units) if k > 0] or [0]))
            if kept_units[index] == 0:
                continue
            qty = data.draw(st.integers(1, kept_units[index]))
            request = returned(p.lines[index].sku, qty, index)
            kept_units[index] -= qty
        else:
            request = ReturnRequest(amount=D(data.draw(st.integers(1, 10000))) / 100)
        try:
            result = clawback(award, p, request, history)
        except DomainError:
            assert request.amount is not None  # only an amount can exceed what is kept here
            continue
        assert result.points >= 0
        released += result.released_rule_ids
        total_clawed += result.points
        assert result.cumulative_points == total_clawed <= award.points
        history.append(request)
    rest = [ReturnedLine(sku=p.lines[i].sku, quantity=k, line_index=i) for i, k in enumerate(kept_units) if k > 0]
    if rest:
        final = clawback(award, p, ReturnRequest(lines=rest), history)
        total_clawed += final.points
        released += final.released_rule_ids
        assert final.remaining_points == 0
    assert total_clawed == award.points
    # everything back: every rule that applied is released, each exactly once
    assert sorted(released) == sorted(applied_rule_ids(award))
    with pytest.raises(DomainError):
        clawback(award, p, returned(p.lines[0].sku, 1, 0), [*history, ReturnRequest(lines=rest)] if rest else history)
