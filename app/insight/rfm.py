"""RFM scores, the segment map and lifecycle stages: the pure rules of insight. No database, no clock.

The refresh (``app.insight.service.refresh``) computes the same thing set-based in SQL over every member of a
programme; the SQL takes the segment map from :data:`SEGMENT_MAP` (so there is one map) and the stage rules are
written twice, here and in ``app/insight/queries.py``, which ``tests/test_insight.py`` proves agree.

**Scores.** Each of recency, frequency and monetary is scored 1-5 within the programme by quintiles of the members
that have purchased at least once: ``score = 1 + floor(5 * (rank - 1) / n)`` where ``rank`` is the member's rank
(1 = worst) among the ``n`` scored members and tied values share the lowest rank. With distinct values this is
exactly ``ntile(5)``; unlike ``ntile`` tied members never get different scores (so a refresh never moves a member
for the tie-break alone). Recency is better when smaller (days since the last purchase), frequency (purchases in
the window) and monetary (eligible spend in the window) when larger.

**Segments.** From the recency score R and FM = round-half-up((F + M) / 2), by :data:`SEGMENT_MAP`:

===  ====================  ====================  ====================  ===========  ===========
R    FM 1                  FM 2                  FM 3                  FM 4         FM 5
===  ====================  ====================  ====================  ===========  ===========
5    new                   potential_loyalists   potential_loyalists   champions    champions
4    promising             potential_loyalists   potential_loyalists   loyal        champions
3    about_to_sleep        about_to_sleep        need_attention        loyal        loyal
2    hibernating           hibernating           at_risk               at_risk      cannot_lose
1    lost                  lost                  hibernating           at_risk      cannot_lose
===  ====================  ====================  ====================  ===========  ===========

A member who never purchased has no scores and no segment (``null``; counted as ``unscored``).

**Lifecycle stages**, decided in this order for the refresh's day D (UTC):

1. never purchased: ``new`` when enrolled less than ``new_days`` before D, else ``lapsed``;
2. last purchase ``lapsed_days`` or more before D: ``lapsed``;
3. last purchase ``at_risk_days`` or more before D: ``at_risk``;
4. first purchase less than ``new_days`` before D: ``new``;
5. the gap between the last purchase and the one before is ``lapsed_days`` or more: ``reactivated``;
6. otherwise ``active``.

The thresholds are programme settings; each one left unset is relative to the programme's median inter-purchase
interval I (the median over members with purchases on two days or more of (last - first) / (days - 1), in days;
30 when no member has two): ``new_days = ceil(2 I)``, ``at_risk_days = ceil(2 I)``, ``lapsed_days = ceil(4 I)``
(each at least 1, and lapsed_days above at_risk_days).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum


class Segment(StrEnum):
    CHAMPIONS = "champions"
    LOYAL = "loyal"
    POTENTIAL_LOYALISTS = "potential_loyalists"
    NEW = "new"
    PROMISING = "promising"
    NEED_ATTENTION = "need_attention"
    ABOUT_TO_SLEEP = "about_to_sleep"
    AT_RISK = "at_risk"
    CANNOT_LOSE = "cannot_lose"
    HIBERNATING = "hibernating"
    LOST = "lost"


class Stage(StrEnum):
    NEW = "new"
    ACTIVE = "active"
    AT_RISK = "at_risk"
    LAPSED = "lapsed"
    REACTIVATED = "reactivated"


_S = Segment
# SEGMENT_MAP[(r, fm)]: the grid of the module docstring, row by row from R = 5.
_GRID: dict[int, tuple[Segment, Segment, Segment, Segment, Segment]] = {
    5: (_S.NEW, _S.POTENTIAL_LOYALISTS, _S.POTENTIAL_LOYALISTS, _S.CHAMPIONS, _S.CHAMPIONS),
    4: (_S.PROMISING, _S.POTENTIAL_LOYALISTS, _S.POTENTIAL_LOYALISTS, _S.LOYAL, _S.CHAMPIONS),
    3: (_S.ABOUT_TO_SLEEP, _S.ABOUT_TO_SLEEP, _S.NEED_ATTENTION, _S.LOYAL, _S.LOYAL),
    2: (_S.HIBERNATING, _S.HIBERNATING, _S.AT_RISK, _S.AT_RISK, _S.CANNOT_LOSE),
    1: (_S.LOST, _S.LOST, _S.HIBERNATING, _S.AT_RISK, _S.CANNOT_LOSE),
}
SEGMENT_MAP: dict[tuple[int, int], Segment] = {
    (r, fm): row[fm - 1] for r, row in _GRID.items() for fm in range(1, 6)
}


def fm_score(f: int, m: int) -> int:
    """The combined frequency-monetary score: the mean of F and M, halves rounded up."""
    return (f + m + 1) // 2


def segment(r: int, f: int, m: int) -> Segment:
    """The named segment of the scores (each 1-5)."""
    if not all(1 <= s <= 5 for s in (r, f, m)):
        raise ValueError(f"scores must be 1-5, not {(r, f, m)}")
    return SEGMENT_MAP[(r, fm_score(f, m))]


def quintile_scores(values: Sequence[int | Decimal], higher_is_better: bool = True) -> list[int]:
    """Score each value 1-5 within ``values`` (see the module docstring): ties share the lowest rank's score."""
    n = len(values)
    if n == 0:
        return []
    ordered = sorted(values, reverse=not higher_is_better)  # worst first
    first_rank: dict[int | Decimal, int] = {}
    for i, v in enumerate(ordered):
        first_rank.setdefault(v, i + 1)
    return [1 + (5 * (first_rank[v] - 1)) // n for v in values]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Days that decide a lifecycle stage (see the module docstring)."""

    new_days: int
    at_risk_days: int
    lapsed_days: int


DEFAULT_INTERVAL_DAYS = Decimal(30)


def thresholds(median_interval_days: Decimal | None, new_days: int | None = None, at_risk_days: int | None = None,
               lapsed_days: int | None = None) -> Thresholds:
    """The thresholds in force: the settings given, the others relative to the median interval."""
    interval = median_interval_days if median_interval_days and median_interval_days > 0 else DEFAULT_INTERVAL_DAYS

    def times(k: int) -> int:
        return max(1, math.ceil(interval * k))

    at_risk = at_risk_days if at_risk_days is not None else times(2)
    lapsed = lapsed_days if lapsed_days is not None else max(times(4), at_risk + 1)
    return Thresholds(new_days=new_days if new_days is not None else times(2), at_risk_days=at_risk,
                      lapsed_days=lapsed)


def lifecycle_stage(t: Thresholds, days_since_enrolment: int, days_since_last: int | None,
                    days_since_first: int | None, gap_before_last: int | None) -> Stage:
    """The stage of one member on a day: ``days_since_last``/``first`` are None for a member who never purchased,
    ``gap_before_last`` is the days between the last purchase day and the one before (None: only one)."""
    if days_since_last is None or days_since_first is None:
        return Stage.NEW if days_since_enrolment < t.new_days else Stage.LAPSED
    if days_since_last >= t.lapsed_days:
        return Stage.LAPSED
    if days_since_last >= t.at_risk_days:
        return Stage.AT_RISK
    if days_since_first < t.new_days:
        return Stage.NEW
    if gap_before_last is not None and gap_before_last >= t.lapsed_days:
        return Stage.REACTIVATED
    return Stage.ACTIVE


AGE_BANDS = ("under_18", "18_24", "25_34", "35_44", "45_54", "55_64", "65_plus")


def age(birthday: date, on: date) -> int:
    """Whole years from ``birthday`` to ``on`` (a 29 February birthday counts on 1 March in other years)."""
    years = on.year - birthday.year
    if (on.month, on.day) < (birthday.month, birthday.day):
        years -= 1
    return years


def age_band(birthday: date | None, on: date) -> str | None:
    """The audience age band of a member on a day (None without a birthday)."""
    if birthday is None:
        return None
    a = age(birthday, on)
    for limit, band in ((18, "under_18"), (25, "18_24"), (35, "25_34"), (45, "35_44"), (55, "45_54"),
                        (65, "55_64")):
        if a < limit:
            return band
    return "65_plus"
