"""The dashboard's SVG charts (app/dashboard/charts.py): well-formed SVG, one mark per value at the right place,
escaped labels, no style attributes (the CSP forbids inline styles)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.dashboard.charts import Series, bar_chart, line_chart, nice_ticks

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    for el in root.iter():
        assert "style" not in el.attrib, el.tag
        assert el.tag not in (f"{NS}style", f"{NS}script"), el.tag
    return root


def test_line_chart_has_one_point_per_value_and_the_largest_on_top():
    svg = line_chart(["Jan", "Feb", "Mar"], [Series("issued", [0, 50, 100]), Series("redeemed", [10, 20, 30])],
                     title="Points")
    root = _parse(svg)
    assert root.get("aria-label") == "Points"
    circles = list(root.iter(f"{NS}circle"))
    assert [c.get("data-value") for c in circles] == ["0", "50", "100", "10", "20", "30"]
    ys = {c.get("data-value"): float(c.get("cy", "nan")) for c in circles}
    assert ys["100"] < ys["50"] < ys["0"]  # SVG y grows downwards
    assert ys["30"] > ys["50"]
    xs = [float(c.get("cx", "nan")) for c in circles[:3]]
    assert xs == sorted(xs) and xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])
    assert len(list(root.iter(f"{NS}polyline"))) == 2
    assert {g.get("data-series") for g in root.iter(f"{NS}g")} == {"issued", "redeemed"}


def test_line_chart_zero_is_on_the_axis_and_decimals_keep_their_text():
    root = _parse(line_chart(["a", "b"], [Series("money", [Decimal("0.00"), Decimal("12.50")])], title="EUR"))
    values = [c.get("data-value") for c in root.iter(f"{NS}circle")]
    assert values == ["0.00", "12.50"]
    titles = [t.text for t in root.iter(f"{NS}title")]
    assert "money, b: 12.50" in titles


def test_line_chart_with_one_period_and_with_no_data():
    root = _parse(line_chart(["only"], [Series("s", [7])], title="one"))
    assert len(list(root.iter(f"{NS}circle"))) == 1
    assert not list(root.iter(f"{NS}polyline"))
    _parse(line_chart([], [], title="empty"))


def test_line_chart_refuses_series_of_the_wrong_length():
    with pytest.raises(ValueError):
        line_chart(["a", "b"], [Series("s", [1])], title="bad")


def test_labels_are_escaped():
    svg = line_chart(["<b>&"], [Series('"><script>', [1])], title="</svg><script>alert(1)</script>")
    root = _parse(svg)
    assert "<script>" not in svg
    assert root.get("aria-label") == "</svg><script>alert(1)</script>"
    bars = _parse(bar_chart([("<img src=x>", 3)], title="t"))
    assert [g.get("data-label") for g in bars.iter(f"{NS}g")] == ["<img src=x>"]


def test_bar_chart_lengths_are_proportional_and_negatives_go_left():
    root = _parse(bar_chart([("champions", 40), ("lost", 10), ("moved out", -20)], title="Segments"))
    rects = {g.get("data-label"): g.find(f"{NS}rect") for g in root.iter(f"{NS}g")}
    width = {k: float(r.get("width", "nan")) for k, r in rects.items() if r is not None}
    assert width["champions"] == pytest.approx(4 * width["lost"])
    assert width["moved out"] == pytest.approx(2 * width["lost"])
    x = {k: float(r.get("x", "nan")) for k, r in rects.items() if r is not None}
    assert x["moved out"] < x["champions"] == x["lost"]  # bars start at the zero line, negatives end there
    assert x["moved out"] + width["moved out"] == pytest.approx(x["champions"])


def test_bar_chart_of_zeros_and_of_nothing():
    root = _parse(bar_chart([("a", 0), ("b", 0)], title="zeros"))
    assert [float(r.get("width", "nan")) for r in root.iter(f"{NS}rect")] == [0.0, 0.0]
    _parse(bar_chart([], title="nothing"))


@given(st.floats(-1e9, 1e9), st.floats(-1e9, 1e9))
def test_nice_ticks_cover_the_range_evenly(a: float, b: float):
    ticks = nice_ticks(a, b)
    lo, hi = min(a, b), max(a, b)
    assert ticks[0] <= lo + 1e-6 * max(1.0, abs(lo)) and ticks[-1] >= hi - 1e-6 * max(1.0, abs(hi))
    assert 2 <= len(ticks) <= 12
    steps = {round(t2 - t1, 6) for t1, t2 in zip(ticks, ticks[1:], strict=False)}
    assert max(steps) - min(steps) <= 1e-6 * max(steps)


@given(st.integers(-10**9, 10**9), st.integers(-10**9, 10**9))
def test_integer_ticks_are_whole_numbers(a: int, b: int):
    ticks = nice_ticks(a, b, integer=True)
    assert all(float(t).is_integer() for t in ticks)
    assert ticks[0] <= min(a, b) and ticks[-1] >= max(a, b)


def test_a_chart_of_counts_has_whole_ticks():
    root = _parse(line_chart(["a", "b"], [Series("zero", [0, 0])], title="zeros"))
    labels = [t.text for t in root.iter(f"{NS}text") if t.get("text-anchor") == "end"]
    assert labels == ["0", "1"]
