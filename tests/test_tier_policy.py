"""Tier qualification: pure unit and property tests (no database, no HTTP)."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.tiers.policy import (
    TierConfig,
    TierDecision,
    TierState,
    evaluate,
    on_activity,
    progress,
    qualifying_tier,
    tier_multiplier,
    valid_until,
    window_bounds,
)

D = Decimal
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

GGP = [
    {"name": "Green", "threshold": "0", "benefits": ["member prices"]},
    {"name": "Gold", "threshold": "500", "benefits": ["free shipping"], "earn_multiplier": "1.25"},
    {"name": "Platinum", "threshold": "2000", "benefits": ["free shipping", "lounge"], "earn_multiplier": "1.5"},
]
FOUR = [
    {"name": "Bronze", "threshold": 0},
    {"name": "Silver", "threshold": 100},
    {"name": "Gold", "threshold": 500},
    {"name": "Platinum", "threshold": 2000},
]


def config(
    *,
    tiers: list[dict[str, Any]] | None = None,
    window: dict[str, Any] | None = None,
    retention: dict[str, Any] | None = None,
    **extra: Any,
) -> TierConfig:
    return TierConfig.model_validate(
        {
            "tiers": GGP if tiers is None else tiers,
            "window": window or {"kind": "rolling_months", "months": 12},
            "retention": retention or {"kind": "end_of_next_year"},
            **extra,
        }
    )


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def state(tier: str, until: datetime | None = None, **manual: Any) -> TierState:
    return TierState(tier=tier, valid_until=until, **manual)


def decision(tier: str, until: datetime | None, direction: str, reason: str, changed: bool = True) -> TierDecision:
    return TierDecision.model_validate(
        {"tier": tier, "valid_until": until, "changed": changed, "direction": direction, "reason": reason}
    )


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


def test_config_round_trips_through_json_with_defaults() -> None:
    cfg = config()
    assert cfg.metric == "points" and cfg.downgrade == "to_qualifying" and cfg.include_bonuses is False
    assert cfg.tiers[0].earn_multiplier == D(1) and cfg.tiers[1].earn_multiplier == D("1.25")
    assert TierConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert [cfg.rank(name) for name in ("Green", "Gold", "Platinum", "Diamond")] == [0, 1, 2, None]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiers": []}, "at least 1 item"),
        ({"tiers": [{"name": f"T{i}", "threshold": i} for i in range(21)]}, "at most 20 items"),
        ({"tiers": [{"name": "Gold", "threshold": 10}]}, "base tier: its threshold must be 0"),
        ({"tiers": [{"name": "A", "threshold": 0}, {"name": "A", "threshold": 5}]}, "duplicate tier name 'A'"),
        (
            {"tiers": [{"name": "A", "threshold": 0}, {"name": "B", "threshold": 5}, {"name": "C", "threshold": 5}]},
            "thresholds must strictly increase: tier 'C' (5) follows tier 'B' (5)",
        ),
        ({"tiers": [{"name": "", "threshold": 0}]}, "at least 1 character"),
        ({"tiers": [{"name": "x" * 65, "threshold": 0}]}, "at most 64 characters"),
        ({"tiers": [{"name": "A", "threshold": 0}, {"name": "B", "threshold": -1}]}, "greater than or equal to 0"),
        ({"tiers": [{"name": "A", "threshold": 0, "earn_multiplier": "-1"}]}, "greater than or equal to 0"),
        ({"tiers": [{"name": "A", "threshold": 0, "colour": "green"}]}, "Extra inputs are not permitted"),
        (
            {"tiers": [{"name": "A", "threshold": 0}, {"name": "B", "threshold": "10.5"}]},
            "tier 'B': threshold 10.5 must be a whole number for metric 'points'",
        ),
        ({"metric": "spend", "include_bonuses": True}, "include_bonuses applies only to metric 'points'"),
        ({"metric": "miles"}, "'points', 'spend' or 'purchases'"),
        ({"window": {"kind": "rolling_months"}}, "window.months is required for kind 'rolling_months'"),
        ({"window": {"kind": "calendar_year", "months": 12}}, "window.months is not allowed"),
        ({"window": {"kind": "rolling_months", "months": 61}}, "less than or equal to 60"),
        ({"window": {"kind": "rolling_months", "months": 0}}, "greater than or equal to 1"),
        ({"retention": {"kind": "months"}}, "retention.months is required for kind 'months'"),
        ({"retention": {"kind": "end_of_next_year", "months": 3}}, "retention.months is not allowed"),
        ({"downgrade": "two_steps"}, "'one_step' or 'to_qualifying'"),
        ({"grace_days": 30}, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_with_a_clear_message(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(**change)
    assert message in str(info.value)


def test_spend_thresholds_may_have_cents() -> None:
    cfg = config(tiers=[{"name": "A", "threshold": 0}, {"name": "B", "threshold": "99.99"}], metric="spend")
    assert qualifying_tier(cfg, D("99.98")).name == "A"
    assert qualifying_tier(cfg, D("99.99")).name == "B"


def test_state_validates_its_datetimes_and_manual_pair() -> None:
    with pytest.raises(ValueError, match="manual_tier and manual_until must be given together"):
        TierState(tier="Gold", valid_until=None, manual_tier="Gold")
    with pytest.raises(ValueError, match="valid_until must be a timezone-aware datetime"):
        TierState(tier="Gold", valid_until=datetime(2025, 1, 1))


def test_naive_times_and_non_finite_metrics_are_rejected() -> None:
    cfg = config()
    with pytest.raises(ValueError, match="as_of must be a timezone-aware datetime"):
        evaluate(cfg, None, 0, datetime(2025, 1, 1), BERLIN)
    with pytest.raises(ValueError, match="at must be a timezone-aware datetime"):
        on_activity(cfg, None, 0, datetime(2025, 1, 1), BERLIN)
    with pytest.raises(ValueError, match="as_of must be"):
        window_bounds(cfg, datetime(2025, 1, 1), BERLIN)
    with pytest.raises(ValueError, match="finite"):
        qualifying_tier(cfg, D("NaN"))


# --------------------------------------------------------------------------------------------------------------
# Qualification, multipliers
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        (-5, "Green"),
        (0, "Green"),
        (499, "Green"),
        (500, "Gold"),
        (D("1999"), "Gold"),
        (2000, "Platinum"),
        (10**9, "Platinum"),
    ],
)
def test_qualifying_tier_is_the_highest_threshold_reached(value: Decimal | int, tier: str) -> None:
    assert qualifying_tier(config(), value).name == tier


def test_tier_multiplier() -> None:
    cfg = config()
    assert tier_multiplier(cfg, "Gold") == D("1.25")
    assert tier_multiplier(cfg, "Platinum") == D("1.5")
    assert tier_multiplier(cfg, "Green") == D(1)
    assert tier_multiplier(cfg, "Diamond") == D(1)
    assert tier_multiplier(cfg, None) == D(1)


# --------------------------------------------------------------------------------------------------------------
# Windows and valid_until: calendar arithmetic in the programme time zone
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("months", "as_of", "start"),
    [
        (12, berlin(2024, 6, 15, 9, 30), berlin(2023, 6, 15, 9, 30)),
        (12, berlin(2024, 2, 29, 12), berlin(2023, 2, 28, 12)),  # leap day clamps to 28 Feb
        (12, berlin(2025, 2, 28, 12), berlin(2024, 2, 28, 12)),  # ... and is not "end of month" the other way
        (1, berlin(2024, 3, 31, 10), berlin(2024, 2, 29, 10)),  # month-end clamp, leap year
        (1, berlin(2023, 3, 31, 10), berlin(2023, 2, 28, 10)),  # month-end clamp, common year
        (3, berlin(2024, 5, 31, 0), berlin(2024, 2, 29, 0)),
        (24, berlin(2024, 1, 1, 0), berlin(2022, 1, 1, 0)),
        (6, berlin(2024, 10, 27, 12), berlin(2024, 4, 27, 12)),  # same wall time across DST (CET vs CEST)
    ],
)
def test_rolling_window(months: int, as_of: datetime, start: datetime) -> None:
    cfg = config(window={"kind": "rolling_months", "months": months})
    got_start, got_end = window_bounds(cfg, as_of, BERLIN)
    assert got_start == start and got_start.utcoffset() == start.utcoffset()
    assert got_end == as_of


def test_rolling_window_keeps_local_wall_time_not_utc() -> None:
    cfg = config(window={"kind": "rolling_months", "months": 6})
    start, _ = window_bounds(cfg, utc(2024, 10, 27, 11), BERLIN)  # 12:00 CET
    assert start.replace(tzinfo=None) == datetime(2024, 4, 27, 12)
    assert start == utc(2024, 4, 27, 10)  # 12:00 CEST


def test_calendar_year_window_uses_the_local_year() -> None:
    cfg = config(window={"kind": "calendar_year"})
    new_years_eve_utc = utc(2024, 12, 31, 23, 30)  # already 2025-01-01 00:30 in Berlin
    start, end = window_bounds(cfg, new_years_eve_utc, BERLIN)
    assert start == berlin(2025, 1, 1) == utc(2024, 12, 31, 23)
    assert end == new_years_eve_utc
    assert window_bounds(cfg, new_years_eve_utc, UTC)[0] == utc(2024, 1, 1)
    assert window_bounds(cfg, new_years_eve_utc, NEW_YORK)[0] == datetime(2024, 1, 1, tzinfo=NEW_YORK)


def test_calendar_year_window_boundaries() -> None:
    cfg = config(window={"kind": "calendar_year"})
    assert window_bounds(cfg, berlin(2024, 12, 31, 23, 59, 59), BERLIN)[0] == berlin(2024, 1, 1)
    assert window_bounds(cfg, berlin(2025, 1, 1), BERLIN) == (berlin(2025, 1, 1), berlin(2025, 1, 1))  # empty
    assert window_bounds(cfg, berlin(2024, 2, 29, 8), BERLIN)[0] == berlin(2024, 1, 1)


def test_valid_until_end_of_next_year_in_local_time() -> None:
    cfg = config()
    assert valid_until(cfg, berlin(2024, 1, 1), BERLIN) == berlin(2026, 1, 1)
    assert valid_until(cfg, berlin(2024, 12, 31, 23, 59), BERLIN) == berlin(2026, 1, 1)
    new_years_eve_utc = utc(2024, 12, 31, 23, 30)
    assert valid_until(cfg, new_years_eve_utc, BERLIN) == berlin(2027, 1, 1)  # local year is 2025
    assert valid_until(cfg, new_years_eve_utc, UTC) == utc(2026, 1, 1)


@pytest.mark.parametrize(
    ("months", "qualified_at", "until"),
    [
        (1, berlin(2024, 1, 31, 18), berlin(2024, 2, 29, 18)),
        (1, berlin(2023, 1, 31, 18), berlin(2023, 2, 28, 18)),
        (13, berlin(2024, 1, 31, 18), berlin(2025, 2, 28, 18)),
        (12, berlin(2024, 2, 29, 18), berlin(2025, 2, 28, 18)),
        (48, berlin(2024, 2, 29, 18), berlin(2028, 2, 29, 18)),
        (6, berlin(2024, 8, 31, 23, 30), berlin(2025, 2, 28, 23, 30)),
        (2, berlin(2024, 1, 31, 2, 30), utc(2024, 3, 31, 1, 30)),  # 02:30 does not exist: 03:30 CEST
        (1, berlin(2024, 9, 27, 2, 30), utc(2024, 10, 27, 0, 30)),  # 02:30 twice: the first (CEST)
    ],
)
def test_valid_until_months(months: int, qualified_at: datetime, until: datetime) -> None:
    cfg = config(retention={"kind": "months", "months": months})
    got = valid_until(cfg, qualified_at, BERLIN)
    assert inst(got) == inst(until)  # (== never holds across zones for a time in a repeated hour: PEP 495)
    assert got.tzinfo is BERLIN


def test_skipped_local_time_reads_as_the_wall_clock_after_the_gap() -> None:
    cfg = config(retention={"kind": "months", "months": 2})
    got = valid_until(cfg, berlin(2024, 1, 31, 2, 30), BERLIN)
    assert got.replace(tzinfo=None) == datetime(2024, 3, 31, 3, 30)


# --------------------------------------------------------------------------------------------------------------
# on_activity: upgrade at once, requalify, never downgrade
# --------------------------------------------------------------------------------------------------------------

T2024 = berlin(2024, 5, 10, 14)
T2025 = berlin(2025, 3, 3, 9)


def test_new_member_gets_the_base_tier() -> None:
    assert on_activity(config(), None, 120, T2024, BERLIN) == decision("Green", None, "same", "initial")
    assert evaluate(config(), None, 0, T2024, BERLIN) == decision("Green", None, "same", "initial")


def test_new_member_already_qualifying_starts_higher() -> None:
    got = on_activity(config(), None, 600, T2024, BERLIN)
    assert got == decision("Gold", berlin(2026, 1, 1), "up", "qualified")


def test_green_gold_platinum_journey() -> None:
    cfg = config()
    green = state("Green")
    assert on_activity(cfg, green, 499, T2024, BERLIN) == decision("Green", None, "same", "unchanged", False)
    crossing = on_activity(cfg, green, 500, T2024, BERLIN)  # the purchase that crosses 500 upgrades at once
    assert crossing == decision("Gold", berlin(2026, 1, 1), "up", "qualified")
    gold = state("Gold", crossing.valid_until)
    assert on_activity(cfg, gold, 900, berlin(2024, 11, 2), BERLIN).changed is False  # same year: no extension
    platinum = on_activity(cfg, gold, 2000, berlin(2024, 11, 2), BERLIN)
    assert platinum == decision("Platinum", berlin(2026, 1, 1), "up", "qualified")
    # the window has emptied by 2026: Platinum lapses to what the window supports
    lapsed = evaluate(cfg, state("Platinum", berlin(2026, 1, 1)), 700, berlin(2026, 1, 1), BERLIN)
    assert lapsed == decision("Gold", berlin(2028, 1, 1), "down", "lapsed")
    assert tier_multiplier(cfg, lapsed.tier) == D("1.25")


def test_upgrade_can_jump_several_tiers() -> None:
    got = on_activity(config(), state("Green"), 2500, T2024, BERLIN)
    assert got == decision("Platinum", berlin(2026, 1, 1), "up", "qualified")


def test_upgrade_valid_until_counts_from_the_purchase_with_months_retention() -> None:
    cfg = config(retention={"kind": "months", "months": 12})
    got = on_activity(cfg, state("Green"), 500, berlin(2024, 2, 29, 10), BERLIN)
    assert got == decision("Gold", berlin(2025, 2, 28, 10), "up", "qualified")


def test_requalification_extends_valid_until() -> None:
    cfg = config()
    gold = state("Gold", berlin(2026, 1, 1))
    got = on_activity(cfg, gold, 650, T2025, BERLIN)
    assert got == decision("Gold", berlin(2027, 1, 1), "same", "requalified")
    assert evaluate(cfg, gold, 650, T2025, BERLIN) == got


def test_requalification_never_shortens_valid_until() -> None:
    cfg = config(retention={"kind": "months", "months": 6})
    gold = state("Gold", berlin(2026, 1, 1))  # e.g. from an earlier, longer retention
    assert on_activity(cfg, gold, 650, T2025, BERLIN) == decision(
        "Gold", berlin(2026, 1, 1), "same", "unchanged", False
    )
    # with months retention every later requalification moves the date out
    got = on_activity(cfg, gold, 650, berlin(2025, 8, 1), BERLIN)
    assert got == decision("Gold", berlin(2026, 2, 1), "same", "requalified")


def test_a_lapsed_tier_is_requalified_not_dropped() -> None:
    got = evaluate(config(), state("Gold", berlin(2025, 1, 1)), 500, T2025, BERLIN)
    assert got == decision("Gold", berlin(2027, 1, 1), "same", "requalified")


def test_on_activity_keeps_a_lapsed_tier() -> None:
    cfg = config()
    lapsed = state("Platinum", berlin(2025, 1, 1))
    assert on_activity(cfg, lapsed, 0, T2025, BERLIN) == decision(
        "Platinum", berlin(2025, 1, 1), "same", "unchanged", False
    )
    assert on_activity(cfg, lapsed, 700, T2025, BERLIN).tier == "Platinum"


def test_the_base_tier_never_lapses_and_a_stale_date_is_cleared() -> None:
    cfg = config()
    assert evaluate(cfg, state("Green"), 0, berlin(2099, 1, 1), BERLIN).changed is False
    got = evaluate(cfg, state("Green", berlin(2024, 1, 1)), 0, T2025, BERLIN)
    assert got == decision("Green", None, "same", "requalified")


# --------------------------------------------------------------------------------------------------------------
# evaluate: downgrade only at or after valid_until
# --------------------------------------------------------------------------------------------------------------


def test_downgrade_only_at_or_after_valid_until() -> None:
    cfg = config()
    gold = state("Gold", berlin(2026, 1, 1))
    assert evaluate(cfg, gold, 0, berlin(2025, 12, 31, 23, 59, 59), BERLIN).changed is False
    at_end = evaluate(cfg, gold, 0, utc(2025, 12, 31, 23), BERLIN)  # = 2026-01-01 00:00 Berlin
    assert at_end == decision("Green", None, "down", "lapsed")
    assert evaluate(cfg, gold, 0, berlin(2026, 3, 1), BERLIN) == at_end


def test_valid_until_is_compared_as_an_instant() -> None:
    gold = state("Gold", utc(2025, 12, 31, 23))  # stored as UTC, = 2026-01-01 00:00 Berlin
    assert evaluate(config(), gold, 0, berlin(2025, 12, 31, 23, 59), BERLIN).changed is False
    assert evaluate(config(), gold, 0, berlin(2026, 1, 1), BERLIN).tier == "Green"


def test_to_qualifying_drops_straight_to_the_qualifying_tier() -> None:
    cfg = config(tiers=FOUR)
    platinum = state("Platinum", berlin(2025, 1, 1))
    assert evaluate(cfg, platinum, 0, T2025, BERLIN) == decision("Bronze", None, "down", "lapsed")
    assert evaluate(cfg, platinum, 150, T2025, BERLIN) == decision("Silver", berlin(2027, 1, 1), "down", "lapsed")


def test_one_step_drops_one_tier_per_retention_period() -> None:
    cfg = config(tiers=FOUR, downgrade="one_step", retention={"kind": "months", "months": 12})
    first = evaluate(cfg, state("Platinum", berlin(2025, 1, 1)), 0, T2025, BERLIN)
    assert first == decision("Gold", berlin(2026, 3, 3, 9), "down", "lapsed")
    gold = state(first.tier, first.valid_until)
    assert evaluate(cfg, gold, 0, T2025, BERLIN).changed is False  # rerun: idempotent
    assert evaluate(cfg, gold, 0, berlin(2026, 3, 3, 8, 59), BERLIN).changed is False
    second = evaluate(cfg, gold, 0, berlin(2026, 3, 3, 9), BERLIN)
    assert second == decision("Silver", berlin(2027, 3, 3, 9), "down", "lapsed")
    third = evaluate(cfg, state(second.tier, second.valid_until), 0, berlin(2027, 3, 3, 9), BERLIN)
    assert third == decision("Bronze", None, "down", "lapsed")


def test_one_step_never_goes_below_the_qualifying_tier() -> None:
    cfg = config(tiers=FOUR, downgrade="one_step")
    got = evaluate(cfg, state("Platinum", berlin(2025, 1, 1)), 600, T2025, BERLIN)
    assert got == decision("Gold", berlin(2027, 1, 1), "down", "lapsed")


def test_evaluate_upgrades_like_on_activity() -> None:
    got = evaluate(config(), state("Gold", berlin(2026, 1, 1)), 2000, T2025, BERLIN)
    assert got == decision("Platinum", berlin(2027, 1, 1), "up", "qualified")


def test_unknown_current_tier_becomes_the_qualifying_tier() -> None:
    cfg = config()
    diamond = state("Diamond", berlin(2030, 1, 1))
    assert evaluate(cfg, diamond, 700, T2025, BERLIN) == decision("Gold", berlin(2027, 1, 1), "down", "lapsed")
    assert evaluate(cfg, diamond, 0, T2025, BERLIN) == decision("Green", None, "down", "lapsed")
    assert on_activity(cfg, diamond, 700, T2025, BERLIN).tier == "Gold"


# --------------------------------------------------------------------------------------------------------------
# Manual assignment
# --------------------------------------------------------------------------------------------------------------

MANUAL_END = berlin(2025, 6, 1)


def test_manual_assignment_lifts_the_member_until_manual_until() -> None:
    cfg = config()
    assigned = state("Green", manual_tier="Gold", manual_until=MANUAL_END)
    lifted = evaluate(cfg, assigned, 0, T2025, BERLIN)
    assert lifted == decision("Gold", MANUAL_END, "up", "manual")
    assert on_activity(cfg, assigned, 0, T2025, BERLIN) == lifted
    held = state("Gold", lifted.valid_until, manual_tier="Gold", manual_until=MANUAL_END)
    assert evaluate(cfg, held, 0, T2025, BERLIN).changed is False
    assert evaluate(cfg, held, 0, berlin(2025, 5, 31, 23, 59), BERLIN).changed is False
    assert evaluate(cfg, held, 0, MANUAL_END, BERLIN) == decision("Green", None, "down", "lapsed")
    assert evaluate(cfg, held, 800, MANUAL_END, BERLIN) == decision("Gold", berlin(2027, 1, 1), "same", "requalified")


def test_manual_assignment_holds_a_tier_past_its_valid_until() -> None:
    cfg = config()
    gold = state("Gold", berlin(2025, 1, 1), manual_tier="Gold", manual_until=MANUAL_END)
    assert evaluate(cfg, gold, 0, T2025, BERLIN) == decision("Gold", MANUAL_END, "same", "manual")


def test_manual_assignment_is_a_floor_for_a_lapsing_higher_tier() -> None:
    cfg = config()
    platinum = state("Platinum", berlin(2025, 1, 1), manual_tier="Gold", manual_until=MANUAL_END)
    assert evaluate(cfg, platinum, 0, T2025, BERLIN) == decision("Gold", MANUAL_END, "down", "manual")


def test_manual_assignment_never_lowers_and_does_not_block_upgrades() -> None:
    cfg = config()
    platinum = state("Platinum", berlin(2026, 1, 1), manual_tier="Green", manual_until=MANUAL_END)
    assert evaluate(cfg, platinum, 0, T2025, BERLIN).changed is False
    gold = state("Gold", MANUAL_END, manual_tier="Gold", manual_until=MANUAL_END)
    assert on_activity(cfg, gold, 2000, T2025, BERLIN) == decision("Platinum", berlin(2027, 1, 1), "up", "qualified")


def test_ended_or_unknown_manual_assignments_are_ignored() -> None:
    cfg = config()
    ended = state("Green", manual_tier="Gold", manual_until=berlin(2025, 1, 1))
    assert evaluate(cfg, ended, 0, T2025, BERLIN).changed is False
    unknown = state("Green", manual_tier="Diamond", manual_until=MANUAL_END)
    assert evaluate(cfg, unknown, 0, T2025, BERLIN).changed is False


# --------------------------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------------------------


def test_progress_of_a_base_tier_member() -> None:
    got = progress(config(), state("Green"), 120, T2025, BERLIN)
    assert got.tier == "Green" and got.valid_until is None
    assert (got.metric, got.metric_value) == ("points", D(120))
    assert (got.window_start, got.window_end) == (berlin(2024, 3, 3, 9), T2025)
    assert (got.next_tier, got.missing_to_next, got.needed_to_keep) == ("Gold", D(380), None)
    assert (got.benefits, got.earn_multiplier) == (["member prices"], D(1))


@pytest.mark.parametrize(
    ("tier", "value", "next_tier", "missing", "needed"),
    [
        ("Gold", 300, "Platinum", D(1700), D(200)),
        ("Gold", 800, "Platinum", D(1200), D(0)),
        ("Gold", D("499.5"), "Platinum", D("1500.5"), D("0.5")),
        ("Platinum", 2500, None, None, D(0)),
        ("Platinum", 10, None, None, D(1990)),
    ],
)
def test_progress_numbers(tier: str, value: Decimal | int, next_tier: str | None, missing: Any, needed: Any) -> None:
    got = progress(config(), state(tier, berlin(2026, 1, 1)), value, T2025, BERLIN)
    assert got.tier == tier
    assert (got.next_tier, got.missing_to_next, got.needed_to_keep) == (next_tier, missing, needed)
    assert got.earn_multiplier == tier_multiplier(config(), tier)


def test_progress_shows_the_tier_evaluate_would_give() -> None:
    cfg = config(window={"kind": "calendar_year"})
    lapsed = progress(cfg, state("Gold", berlin(2025, 1, 1)), 100, T2025, BERLIN)
    assert (lapsed.tier, lapsed.valid_until, lapsed.next_tier, lapsed.needed_to_keep) == ("Green", None, "Gold", None)
    assert lapsed.window_start == berlin(2025, 1, 1)
    newcomer = progress(cfg, None, 600, T2025, BERLIN)
    assert (newcomer.tier, newcomer.valid_until, newcomer.missing_to_next) == ("Gold", berlin(2027, 1, 1), D(1400))


# --------------------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------------------

ZONES: list[tzinfo] = [UTC, BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kathmandu")]
REMOVED = "Removed"


@st.composite
def configs(draw: st.DrawFn) -> TierConfig:
    steps = draw(st.lists(st.integers(1, 800), max_size=4))
    thresholds = [sum(steps[:i]) for i in range(len(steps) + 1)]
    window = draw(
        st.one_of(
            st.just({"kind": "calendar_year"}),
            st.integers(1, 60).map(lambda m: {"kind": "rolling_months", "months": m}),
        )
    )
    retention = draw(
        st.one_of(
            st.just({"kind": "end_of_next_year"}),
            st.integers(1, 120).map(lambda m: {"kind": "months", "months": m}),
        )
    )
    return config(
        tiers=[{"name": f"T{i}", "threshold": t} for i, t in enumerate(thresholds)],
        window=window,
        retention=retention,
        downgrade=draw(st.sampled_from(["one_step", "to_qualifying"])),
    )


moments = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2060, 12, 31), timezones=st.sampled_from(ZONES)
)


def metrics(cfg: TierConfig) -> st.SearchStrategy[Decimal]:
    thresholds = [t.threshold for t in cfg.tiers]
    return st.one_of(
        st.integers(-10, int(thresholds[-1]) + 100).map(Decimal),
        st.sampled_from(thresholds),
        st.sampled_from(thresholds).map(lambda t: t - 1),
    )


def around(moment: datetime) -> st.SearchStrategy[datetime]:
    return st.one_of(
        st.just(moment),
        st.integers(-900 * 86_400, 900 * 86_400).map(lambda s: moment + timedelta(seconds=s)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[TierConfig, TierState | None, Decimal, datetime, tzinfo]:
    cfg = draw(configs())
    as_of = draw(moments)
    tz = draw(st.sampled_from(ZONES))
    names = [t.name for t in cfg.tiers]
    member: TierState | None = None
    if draw(st.integers(0, 9)) > 0:
        name = draw(st.sampled_from([*names, REMOVED]))
        until = None if name == names[0] and draw(st.booleans()) else draw(around(as_of))
        manual: dict[str, Any] = {}
        if draw(st.booleans()):
            manual = {"manual_tier": draw(st.sampled_from([*names, REMOVED])), "manual_until": draw(around(as_of))}
        member = TierState(tier=name, valid_until=until, **manual)
    return cfg, member, draw(metrics(cfg)), as_of, tz


def inst(moment: datetime) -> datetime:
    """Compare as instants: aware datetimes sharing a tzinfo compare by wall time."""
    return moment.astimezone(UTC)


def rank(cfg: TierConfig, name: str) -> int:
    found = cfg.rank(name)
    assert found is not None, name
    return found


def manual_rank(cfg: TierConfig, member: TierState | None, now: datetime) -> int | None:
    if (
        member is None
        or member.manual_tier is None
        or member.manual_until is None
        or inst(now) >= inst(member.manual_until)
    ):
        return None
    return cfg.rank(member.manual_tier)


def same(a: datetime | None, b: datetime | None) -> bool:
    return a is b if a is None or b is None else inst(a) == inst(b)


def check_decision(cfg: TierConfig, member: TierState | None, got: TierDecision, now: datetime) -> None:
    """Invariants every decision satisfies."""
    assert got.changed == (got.reason != "unchanged")
    if got.tier == cfg.tiers[0].name:
        assert got.valid_until is None
    elif got.changed:
        assert got.valid_until is not None and inst(got.valid_until) > inst(now)
    if member is None:
        assert got.changed
    elif got.changed:
        assert got.tier != member.tier or not same(got.valid_until, member.valid_until)
        before = cfg.rank(member.tier)
        expected = "down" if before is None or rank(cfg, got.tier) < before else "same"
        if before is not None and rank(cfg, got.tier) > before:
            expected = "up"
        assert got.direction == expected
    else:
        assert got.direction == "same" and got.tier == member.tier and got.valid_until is member.valid_until
    floor = manual_rank(cfg, member, now)
    if floor is not None:
        assert rank(cfg, got.tier) >= floor


FAST = settings(max_examples=150, deadline=None)


@FAST
@given(scenarios())
def test_evaluate_is_idempotent(scenario: tuple[TierConfig, TierState | None, Decimal, datetime, tzinfo]) -> None:
    cfg, member, value, as_of, tz = scenario
    first = evaluate(cfg, member, value, as_of, tz)
    check_decision(cfg, member, first, as_of)
    manual: dict[str, Any] = {}
    if member is not None:
        manual = {"manual_tier": member.manual_tier, "manual_until": member.manual_until}
    again = evaluate(cfg, TierState(tier=first.tier, valid_until=first.valid_until, **manual), value, as_of, tz)
    assert (again.changed, again.reason, again.tier, again.valid_until) == (
        False,
        "unchanged",
        first.tier,
        first.valid_until,
    )


@FAST
@given(scenarios())
def test_evaluate_never_returns_a_tier_below_the_qualifying_one(
    scenario: tuple[TierConfig, TierState | None, Decimal, datetime, tzinfo],
) -> None:
    cfg, member, value, as_of, tz = scenario
    got = evaluate(cfg, member, value, as_of, tz)
    assert rank(cfg, got.tier) >= rank(cfg, qualifying_tier(cfg, value).name)


@FAST
@given(scenarios())
def test_on_activity_never_downgrades(scenario: tuple[TierConfig, TierState | None, Decimal, datetime, tzinfo]) -> None:
    cfg, member, value, at, tz = scenario
    got = on_activity(cfg, member, value, at, tz)
    check_decision(cfg, member, got, at)
    assert rank(cfg, got.tier) >= rank(cfg, qualifying_tier(cfg, value).name)
    if member is not None and cfg.rank(member.tier) is not None:
        assert rank(cfg, got.tier) >= rank(cfg, member.tier)
        if got.tier == member.tier and member.valid_until is not None:
            assert got.valid_until is None or inst(got.valid_until) >= inst(member.valid_until)
        if got.tier == member.tier and member.valid_until is None:
            assert got.valid_until is None


@FAST
@given(scenarios())
def test_no_tier_is_lowered_before_its_valid_until(
    scenario: tuple[TierConfig, TierState | None, Decimal, datetime, tzinfo],
) -> None:
    cfg, member, value, as_of, tz = scenario
    got = evaluate(cfg, member, value, as_of, tz)
    if member is None or cfg.rank(member.tier) is None:
        return
    if member.valid_until is None or inst(as_of) < inst(member.valid_until):
        assert rank(cfg, got.tier) >= rank(cfg, member.tier)
    if got.direction == "down":
        assert member.valid_until is not None and inst(as_of) >= inst(member.valid_until)
        assert got.reason in ("lapsed", "manual")


@FAST
@given(scenarios())
def test_progress_agrees_with_evaluate(
    scenario: tuple[TierConfig, TierState | None, Decimal, datetime, tzinfo],
) -> None:
    cfg, member, value, as_of, tz = scenario
    got = progress(cfg, member, value, as_of, tz)
    decided = evaluate(cfg, member, value, as_of, tz)
    assert (got.tier, got.valid_until) == (decided.tier, decided.valid_until)
    assert (got.window_start, got.window_end) == window_bounds(cfg, as_of, tz)
    assert inst(got.window_start) <= inst(got.window_end) == inst(as_of)
    position = rank(cfg, got.tier)
    if position + 1 < len(cfg.tiers):
        assert got.missing_to_next is not None and got.missing_to_next > 0  # else evaluate would have upgraded
        assert got.missing_to_next == cfg.tiers[position + 1].threshold - value
    else:
        assert got.next_tier is None and got.missing_to_next is None
    if position == 0:
        assert got.needed_to_keep is None
    else:
        assert got.needed_to_keep == max(D(0), cfg.tiers[position].threshold - value)


@FAST
@given(configs(), moments, st.sampled_from(ZONES))
def test_calendar_helpers(cfg: TierConfig, as_of: datetime, tz: tzinfo) -> None:
    start, end = window_bounds(cfg, as_of, tz)
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    if cfg.window.kind == "calendar_year":
        assert inst(start) <= inst(end)
        assert local_start.replace(tzinfo=None) == datetime(local_end.year, 1, 1)
    else:
        assert cfg.window.months is not None
        assert inst(start) < inst(end)
        year, month0 = divmod(local_end.year * 12 + local_end.month - 1 - cfg.window.months, 12)
        day = min(local_end.day, calendar.monthrange(year, month0 + 1)[1])
        assert local_start.date() == date(year, month0 + 1, day)
        if local_start.utcoffset() == local_start.replace(fold=1).utcoffset():  # not next to a DST change
            assert local_start.time() == local_end.time()
    until = valid_until(cfg, as_of, tz)
    assert inst(until) > inst(as_of)
    if cfg.retention.kind == "end_of_next_year":
        assert until.astimezone(tz).year == as_of.astimezone(tz).year + 2


@settings(max_examples=60, deadline=None)
@given(configs(), moments, st.sampled_from(ZONES), st.data())
def test_a_simulated_member_keeps_every_invariant(
    cfg: TierConfig, start: datetime, tz: tzinfo, data: st.DataObject
) -> None:
    """A year or so of purchases and nightly evaluations: a tier above the qualifying one is always backed."""
    now = start.astimezone(UTC)
    member: TierState | None = None
    for _ in range(data.draw(st.integers(1, 25))):
        now += timedelta(days=data.draw(st.integers(0, 120)), seconds=data.draw(st.integers(0, 86_399)))
        value = data.draw(metrics(cfg))
        decide = on_activity if data.draw(st.booleans()) else evaluate
        got = decide(cfg, member, value, now, tz)
        check_decision(cfg, member, got, now)
        if decide is evaluate and rank(cfg, got.tier) > rank(cfg, qualifying_tier(cfg, value).name):
            assert got.valid_until is not None and inst(got.valid_until) > inst(now)
        member = TierState(tier=got.tier, valid_until=got.valid_until)
