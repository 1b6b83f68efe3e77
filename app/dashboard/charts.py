"""Charts drawn on the server as inline SVG: a line chart (trends over periods) and a horizontal bar chart
(sizes by category, with negative bars for movement). Pure functions, no I/O, no JavaScript.

The markup uses SVG presentation attributes only (no ``style`` attribute, no ``<style>`` element), so the
dashboard's Content-Security-Policy (``style-src 'self'``) does not block any of it. Every point and bar
carries its exact value in ``data-value`` and a ``<title>`` (the browser shows it on hover), and the chart has
an ``aria-label``. Values may be ints, floats or Decimals (money): they are turned into floats for the
coordinates only; the labels show them as given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape

Number = int | float | Decimal

# A palette that stays distinguishable for the common forms of colour blindness (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
NEGATIVE = "#D55E00"
AXIS = "#555555"
GRID = "#dddddd"
FONT = "system-ui, sans-serif"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[Number]


def _fmt(value: Number) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    if isinstance(value, Decimal):
        return f"{value:,}"
    return f"{int(value):,}"


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) from at most ``lo`` to at least ``hi``; with
    ``integer``, whole numbers only (a step of at least 1, never 2.5)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("ticks need finite bounds")
    if lo > hi:
        lo, hi = hi, lo
    if hi == lo:
        hi = lo + 1
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw and not (integer and m == 2.5 and power == 1))
    if integer:
        step = max(step, 1.0)
    start = math.floor(lo / step) * step
    ticks = []
    for k in range(count + 3):  # step >= (hi - lo) / (count - 1): at most count + 2 ticks reach hi
        value = start + k * step
        ticks.append(round(value, 10))
        if value >= hi:
            break
    return ticks


def _frame(width: int, height: int, label: str, body: list[str], kind: str) -> str:
    # Scales to its container's width (the stylesheet sets height: auto; the viewBox keeps the proportions).
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" width="100%" '
            f'viewBox="0 0 {width} {height}" preserveAspectRatio="xMidYMid meet" role="img" '
            f'aria-label="{escape(label)}" font-family="{FONT}" font-size="11">'
            f"<title>{escape(label)}</title>" + "".join(body) + "</svg>")


def line_chart(labels: Sequence[str], series: Sequence[Series], *, title: str, width: int = 640,
               height: int = 240, formatter: Callable[[Number], str] = _fmt) -> str:
    """One line per series over the periods ``labels`` (every series has one value per label)."""
    for s in series:
        if len(s.values) != len(labels):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(labels)} labels")
    left, right, top, bottom = 56, 30, 12, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [float(v) for s in series for v in s.values]
    whole = all(isinstance(v, int) for s in series for v in s.values)
    ticks = nice_ticks(min([0.0, *values]), max([0.0, *values]), integer=whole)
    lo, hi = ticks[0], ticks[-1]

    def x(i: int) -> float:
        return left + (plot_w / 2 if len(labels) == 1 else plot_w * i / (len(labels) - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    body: list[str] = []
    for t in ticks:
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" fill="{AXIS}">'
                    f"{escape(formatter(int(t) if float(t).is_integer() else t))}</text>")
    body.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="{AXIS}"/>')
    every = max(1, math.ceil(len(labels) / 8))  # at most ~8 period labels under the axis
    for i, label in enumerate(labels):
        if i % every == 0 or i == len(labels) - 1:
            body.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="{AXIS}">'
                        f"{escape(label)}</text>")
    for n, s in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(float(v)):.1f}" for i, v in enumerate(s.values))
        body.append(f'<g class="series" data-series="{escape(s.name)}">')
        if len(s.values) > 1:
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        for i, v in enumerate(s.values):
            body.append(f'<circle cx="{x(i):.1f}" cy="{y(float(v)):.1f}" r="3" fill="{colour}" '
                        f'data-label="{escape(labels[i])}" data-value="{escape(str(v))}">'
                        f"<title>{escape(s.name)}, {escape(labels[i])}: {escape(formatter(v))}</title></circle>")
        body.append("</g>")
    # legend, under the period labels
    lx = left
    for n, s in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        body.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
                    f'<text x="{lx + 14}" y="{height - 5}" fill="{AXIS}">{escape(s.name)}</text>')
        lx += 24 + 7 * len(s.name)
    return _frame(width, height, title, body, "line")


def bar_chart(items: Sequence[tuple[str, Number]], *, title: str, width: int = 640, bar_height: int = 20,
              label_width: int = 150, formatter: Callable[[Number], str] = _fmt) -> str:
    """Horizontal bars, one per (label, value); negative values extend left of the zero line."""
    gap, top, right = 6, 6, 70
    height = top * 2 + max(len(items), 1) * (bar_height + gap)
    plot_w = width - label_width - right
    values = [float(v) for _, v in items]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return label_width + plot_w * (v - lo) / span

    zero = x(0.0)
    body: list[str] = []
    for i, (label, value) in enumerate(items):
        v = float(value)
        y = top + i * (bar_height + gap)
        x0, x1 = sorted((zero, x(v)))
        colour = NEGATIVE if v < 0 else PALETTE[0]
        body.append(f'<g class="bar" data-label="{escape(label)}" data-value="{escape(str(value))}">'
                    f'<text x="{label_width - 8}" y="{y + bar_height * 0.7:.1f}" text-anchor="end" fill="{AXIS}">'
                    f"{escape(label)}</text>"
                    f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 0.0):.1f}" height="{bar_height}" '
                    f'fill="{colour}"><title>{escape(label)}: {escape(formatter(value))}</title></rect>'
                    f'<text x="{x1 + 4:.1f}" y="{y + bar_height * 0.7:.1f}" fill="{AXIS}">'
                    f"{escape(formatter(value))}</text></g>")
    body.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{top}" y2="{height - top}" stroke="{AXIS}"/>')
    return _frame(width, height, title, body, "bar")
