"""The audit report's plots, laid out as ``svg.Chart`` shapes (the template draws and escapes them).

Each chart has a title, an accessible label that states what it shows and its main number, and a caption
and, where a table would not already say it, a data table on the page: the text alternatives.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from .fmt import compact, count, num, pct, period_label
from .measures import CATEGORIES
from .runchart import RULES, RunChart
from .svg import GRID, INK, LABEL, MUTED, TICK, WIDTH, Chart, chars, nice_ticks, text_width, wrap

STATUS_SERIES: tuple[tuple[str, str, str], ...] = (  # dose_status group, label, colour
    ("within", "within the limit", "#0072b2"),
    ("over", "over the limit", "#d55e00"),
    ("over-unless-icu", "over the limit, setting unknown", "#e69f00"),
    ("other", "not compared (see the verdict)", "#a9b1ba"),
)
CLINICAL, DOCUMENTATION = "#d55e00", "#6b7b8c"  # over the limit: clinical, likely documentation error
RATE, SIGNAL = "#0072b2", "#d55e00"


@dataclass
class Histogram:
    width: float  # bin width
    bins: int  # regular bins over [0, width * bins]; one more bin for everything above
    counts: dict[int, dict[str, int]] = field(default_factory=dict)  # bin -> status group -> rows
    shown: int = 0
    without_per_kg: int = 0

    def total(self, key: str) -> int:
        return sum(c.get(key, 0) for c in self.counts.values())


@dataclass
class Group:
    label: str
    counts: dict[str, int]
    hint: str = ""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _y_axis_label(c: Chart, x: float, middle: float, text: str) -> None:
    c.text(x, middle, text, anchor="middle", size=LABEL, rotate=True)


def histogram(hist: Histogram, limit: float, unit: str, kind: str, plot_id: str) -> Chart:
    width, height = WIDTH, 290
    left, right, top, bottom = 62, 16, 28, 58
    pw, ph = width - left - right, height - top - bottom
    slot = pw / (hist.bins + 1.6)  # the overflow bin stands apart
    c = Chart(
        plot_id,
        width,
        height,
        f"IV {kind} doses per kg against the {num(limit)} {unit} limit",
        f"Histogram of {count(hist.shown)} IV {kind} doses per kg; "
        f"{count(hist.total('over'))} over the {num(limit)} {unit} limit",
    )
    top_edge = hist.width * hist.bins
    ymax = max((sum(v.values()) for v in hist.counts.values()), default=0)
    yticks = nice_ticks(ymax or 1, 4, integer=True)

    def x_of(value: float) -> float:
        return left + value / hist.width * slot

    def y_of(n: float) -> float:
        return top + ph - n / yticks[-1] * ph

    for t in yticks:
        c.line(left, y_of(t), width - right, y_of(t))
        c.text(left - 6, y_of(t) + 4.5, compact(t), anchor="end", size=TICK, fill=MUTED)
    for b, by_status in sorted(hist.counts.items()):
        x = x_of(b * hist.width) if b < hist.bins else left + (hist.bins + 0.6) * slot
        lo, hi = b * hist.width, (b + 1) * hist.width
        where = f"{num(lo, 3)}–{num(hi, 3)} {unit}" if b < hist.bins else f"over {num(top_edge)} {unit}"
        base = 0
        for key, series, colour in STATUS_SERIES:
            n = by_status.get(key, 0)
            if n:
                y0, y1 = y_of(base), y_of(base + n)
                c.rect(x + 0.4, y1, slot - 0.8, y0 - y1, colour, f"{where}: {count(n)} {series}")
                base += n
    axis_y = top + ph
    c.line(left, axis_y, width - right, axis_y, INK)
    for t in (t for t in nice_ticks(top_edge, 5) if t < top_edge - 1e-9):
        c.line(x_of(t), axis_y, x_of(t), axis_y + 4, INK)
        c.text(x_of(t), axis_y + 18, num(t), anchor="middle", size=TICK)
    c.text(left + (hist.bins + 1.1) * slot, axis_y + 18, f">{num(top_edge)}", anchor="end", size=TICK)
    c.add(
        "line",
        {
            "class": "limit",
            "x1": f"{x_of(limit):.1f}",
            "x2": f"{x_of(limit):.1f}",
            "y1": f"{top - 10}",
            "y2": f"{axis_y}",
            "stroke": INK,
            "stroke-width": "2",
            "stroke-dasharray": "6 3",
        },
    )
    c.text(x_of(limit) + 5, top - 2, f"limit {num(limit)} {unit}", size=LABEL, weight="600")
    if not hist.shown:
        c.empty(f"No IV {kind} dose per kg to show")
    c.text(left + pw / 2, height - 10, f"Dose per kg ({unit})", anchor="middle", size=LABEL)
    _y_axis_label(c, 15, top + ph / 2, "Administrations")
    return c


def time_bars(periods: list[tuple[dt.date, dict[str, int]]], period: str, plot_id: str) -> Chart:
    width, height = WIDTH, 280
    left, right, top, bottom = 52, 12, 14, 58
    pw, ph = width - left - right, height - top - bottom
    follows = sum(v.get("follows", 0) for _, v in periods)
    total = sum(sum(v.values()) for _, v in periods)
    c = Chart(
        plot_id,
        width,
        height,
        f"The assessed administrations per {period}, by category",
        f"Stacked bars, one per {period}, of the share of assessed administrations in each category: follow "
        f"the guideline, use not supported, cannot tell, depart from it, outside its scope; overall "
        f"{pct(follows, total)} follow",
    )
    for t in (0, 25, 50, 75, 100):
        y = top + ph - t / 100 * ph
        c.line(left, y, width - right, y)
        c.text(left - 6, y + 4.5, f"{t}%", anchor="end", size=TICK, fill=MUTED)
    if not periods:
        c.empty("No administration time to show")
    slot = pw / max(len(periods), 1)
    bar = min(slot * 0.8, 36.0)
    step = {"month": 1, "quarter": 3, "year": 12}[period]
    every = next(
        s for s in (1, 2, 3, 6, 12, 24, 60, 120, 10**9) if s >= step and len(periods) * step / s <= 6
    )
    axis_y = top + ph
    for i, (start, counts) in enumerate(periods):
        x = left + i * slot
        n = sum(counts.values())
        name = period_label(start, period)
        if n == 0:
            c.rect(
                x + (slot - bar) / 2,
                top,
                bar,
                ph,
                "none",
                f"{name}: no administrations",
                mark=False,
                stroke=GRID,
                dash="2 2",
            )
        base = 0
        for key, label, colour in CATEGORIES:
            v = counts.get(key, 0)
            if v:
                y0, y1 = axis_y - base / n * ph, axis_y - (base + v) / n * ph
                c.rect(
                    x + (slot - bar) / 2,
                    y1,
                    bar,
                    y0 - y1,
                    colour,
                    f"{name}: {pct(v, n)} {label} ({count(v)} of {count(n)})",
                )
                base += v
        if (start.year * 12 + start.month - 1) % every == 0 or len(periods) == 1:
            cx = x + slot / 2
            c.line(cx, axis_y, cx, axis_y + 4, INK)
            c.text(cx, axis_y + 18, name, anchor="middle", size=TICK)
    c.line(left, axis_y, width - right, axis_y, INK)
    c.text(left + pw / 2, height - 10, f"Time of administration (per {period})", anchor="middle", size=LABEL)
    _y_axis_label(c, 13, top + ph / 2, "Share of administrations")
    return c


def _percent_axis(c: Chart, left: float, pw: float, top: float, axis_y: float) -> None:
    for t in (0, 25, 50, 75, 100):
        x = left + t / 100 * pw
        c.line(x, top, x, axis_y)
        c.text(
            x,
            axis_y + 17,
            f"{t}%",
            anchor="start" if t == 0 else "end" if t == 100 else "middle",
            size=TICK,
            fill=MUTED,
        )


def share_bars(groups: list[Group], what: str, plot_id: str) -> Chart:
    """One 100% bar per group, its label and numbers above it, coloured by category."""
    left, right, line_h, bar_h, gap = 2, 2, 17, 15, 11
    pw = WIDTH - left - right
    laid = []
    for g in groups:
        stat = f"n {count(g.total)} · {pct(g.counts.get('follows', 0), g.total)} follow"
        if g.counts.get("departs", 0):
            stat += f" · {pct(g.counts['departs'], g.total)} depart"
        lines = wrap(g.label, chars(pw - text_width(stat, TICK) - 12, LABEL, bold=True))
        laid.append((g, stat, lines, len(lines) * line_h + 4 + bar_h + gap))
    top, axis_h = 4, 50
    height = top + (sum(h for *_, h in laid) if groups else 70) + axis_h
    worst = max(groups, key=lambda g: g.counts.get("departs", 0) / max(g.total, 1), default=None)
    c = Chart(
        plot_id,
        WIDTH,
        height,
        f"Categories by {what}",
        f"One bar per {what} showing the share of its assessed administrations in each category"
        + (
            f"; highest share departing: {worst.label}, {pct(worst.counts.get('departs', 0), worst.total)}"
            if worst
            else ""
        ),
    )
    axis_y = height - axis_h + 8
    _percent_axis(c, left, pw, top, axis_y)
    if not groups:
        c.empty(f"No assessed administration to show by {what}", height - axis_h)
    y: float = top
    for g, stat, lines, h in laid:
        for i, line in enumerate(lines):
            c.text(left, y + (i + 1) * line_h - 4, line, size=LABEL, weight="600")
        c.text(WIDTH - right, y + line_h - 4, stat, anchor="end", size=TICK, fill=MUTED)
        by = y + len(lines) * line_h + 2
        base = 0
        name = f"{g.label} ({g.hint})" if g.hint else g.label
        for key, label, colour in CATEGORIES:
            v = g.counts.get(key, 0)
            if v and g.total:
                c.rect(
                    left + base / g.total * pw,
                    by,
                    v / g.total * pw,
                    bar_h,
                    colour,
                    f"{name}: {pct(v, g.total)} {label} ({count(v)} of {count(g.total)})",
                )
                base += v
        y += h
    c.line(left, axis_y, WIDTH - right, axis_y, INK)
    c.text(
        left + pw / 2,
        height - 6,
        f"Share of the {what}'s assessed administrations",
        anchor="middle",
        size=LABEL,
    )
    return c


def multiples(rows: Sequence[tuple[str, int, int]], plot_id: str) -> Chart:
    """Horizontal bars, one per bin of the multiple of the limit: clinical and likely documentation errors."""
    left, right, bar_h, gap, top, axis_h = 118, 54, 16, 8, 6, 46
    pw = WIDTH - left - right
    height = top + max(len(rows), 1) * (bar_h + gap) + axis_h
    total = sum(a + b for _, a, b in rows)
    errors = sum(b for _, _, b in rows)
    c = Chart(
        plot_id,
        WIDTH,
        height,
        "Doses over the limit by how many times the limit they are",
        f"Bars of {count(total)} doses over their limit by the multiple of the limit; {count(errors)} are "
        "likely documentation errors",
    )
    xticks = nice_ticks(max((a + b for _, a, b in rows), default=1), 3, integer=True)
    axis_y = height - axis_h + 6
    for t in xticks:
        x = left + t / xticks[-1] * pw
        c.line(x, top, x, axis_y)
        c.text(x, axis_y + 17, compact(t), anchor="start" if t == 0 else "middle", size=TICK, fill=MUTED)
    if not total:
        c.empty("No dose over its limit", height - axis_h)
    for i, (label, clinical, error) in enumerate(rows):
        y = top + i * (bar_h + gap)
        c.text(left - 6, y + bar_h - 3, label, anchor="end", size=TICK)
        x = left
        for n, colour, what in (
            (clinical, CLINICAL, "clinical"),
            (error, DOCUMENTATION, "likely documentation error"),
        ):
            if n:
                w = n / xticks[-1] * pw
                c.rect(x, y, w, bar_h, colour, f"{label}: {count(n)} {what}")
                x += w
        if clinical + error:
            c.text(x + 4, y + bar_h - 3, count(clinical + error), size=TICK, fill=MUTED)
    c.line(left, axis_y, left + pw, axis_y, INK)
    c.text(left + pw / 2, height - 6, "Doses over the limit", anchor="middle", size=LABEL)
    return c


def runs_text(chart: RunChart, rule: str) -> str:
    low, high = chart.runs_limits or (0, 0)
    name = "Too few runs" if rule == "too-few-runs" else "Too many runs"
    return f"{name}: {chart.runs} (chance: {low} to {high})"


@dataclass(frozen=True)
class _RunFrame:
    """Where a run chart's points go: the plot area, its rate scale (``yticks``) and one slot per period."""

    left: float
    top: float
    pw: float
    ph: float
    right_edge: float
    yticks: list[float]
    slot: float

    def y_of(self, rate: float) -> float:
        return self.top + self.ph - rate * 100 / self.yticks[-1] * self.ph

    def x_of(self, i: int) -> float:
        return self.left + (i + 0.5) * self.slot


def _run_chart_description(chart: RunChart, shown: int, median_text: str) -> str:
    signals = [RULES[s.rule].split(":")[0].lower() for s in chart.signals]
    return f"Run chart of the departure rate over {shown} periods, {median_text}; " + (
        f"signals: {', '.join(dict.fromkeys(signals))}"
        if signals
        else "no signal"
        if chart.applied
        else "too few periods to apply the run-chart rules"
    )


def run_chart(
    title: str,
    labels: Sequence[str],
    points: Sequence[tuple[int, int] | None],
    chart: RunChart,
    plot_id: str,
) -> Chart:
    """The departure rate per period (a gap where nothing was assessed), its median and the signals."""
    width, height = WIDTH, 250
    left, right, top, bottom = 52, 14, 16, 50
    pw, ph = width - left - right, height - top - bottom
    rates = [None if p is None or p[1] == 0 else Fraction(p[0], p[1]) for p in points]
    shown = [r for r in rates if r is not None]
    median_text = "no median" if chart.median is None else f"median {pct(chart.median)}"
    c = Chart(plot_id, width, height, title, _run_chart_description(chart, len(shown), median_text))
    ytop = max([float(r) for r in shown] + [0.01])
    frame = _RunFrame(left, top, pw, ph, width - right, nice_ticks(ytop * 100, 4), pw / max(len(points), 1))
    for t in frame.yticks:
        c.line(left, frame.y_of(t / 100), width - right, frame.y_of(t / 100))
        c.text(left - 6, frame.y_of(t / 100) + 4.5, f"{num(t, 1)}%", anchor="end", size=TICK, fill=MUTED)
    index = [i for i, r in enumerate(rates) if r is not None]  # chart point k is period index[k]
    _signal_bands(c, frame, chart, labels, index)
    _rate_line(c, frame, rates)
    if chart.median is not None:
        _median_line(c, frame, float(chart.median), median_text)
    for k, whole in enumerate(w for w in chart.signals if w.whole):
        c.text(
            left + 6, top + 14 + 16 * k, runs_text(chart, whole.rule), size=TICK, weight="600", fill=SIGNAL
        )
    _rate_points(c, frame, chart, labels, points, rates, index)
    _time_axis(c, frame, labels, len(points))
    if not shown:
        c.empty("No assessed administration with a time")
    c.text(left + pw / 2, height - 8, "Time of administration", anchor="middle", size=LABEL)
    _y_axis_label(c, 13, top + ph / 2, "Departure rate")
    return c


def _signal_bands(c: Chart, f: _RunFrame, chart: RunChart, labels: Sequence[str], index: list[int]) -> None:
    """A shaded band over the periods of each signal that is not about the whole series."""
    for s in (s for s in chart.signals if not s.whole):
        x0, x1 = f.x_of(index[s.first]) - f.slot / 2, f.x_of(index[s.last]) + f.slot / 2
        c.rect(
            x0,
            f.top,
            x1 - x0,
            f.ph,
            "#fbe3d4",
            f"{RULES[s.rule]} ({labels[index[s.first]]} to {labels[index[s.last]]})",
            mark=False,
            css="signal",
        )


def _rate_line(c: Chart, f: _RunFrame, rates: Sequence[Fraction | None]) -> None:
    """The rate as a line, broken where a period assessed nothing."""
    segment: list[tuple[float, float]] = []
    for i, r in enumerate(rates):
        if r is None:
            c.polyline(segment, RATE)
            segment = []
        else:
            segment.append((f.x_of(i), f.y_of(float(r))))
    c.polyline(segment, RATE)


def _median_line(c: Chart, f: _RunFrame, median: float, median_text: str) -> None:
    my = f.y_of(median)
    c.add(
        "line",
        {
            "class": "median",
            "x1": f"{f.left}",
            "x2": f"{f.right_edge}",
            "y1": f"{my:.1f}",
            "y2": f"{my:.1f}",
            "stroke": INK,
            "stroke-width": "1.5",
            "stroke-dasharray": "6 3",
        },
    )
    c.text(f.right_edge, my - 6, median_text, anchor="end", size=TICK, weight="600")


def _rate_points(
    c: Chart,
    f: _RunFrame,
    chart: RunChart,
    labels: Sequence[str],
    points: Sequence[tuple[int, int] | None],
    rates: Sequence[Fraction | None],
    index: list[int],
) -> None:
    """Each period's rate as a point with its counts: a diamond where a signal flags it."""
    for k, i in enumerate(index):
        departed, assessed = points[i] or (0, 0)
        rate = rates[i]
        assert rate is not None
        flagged = chart.flagged(k)
        tip = f"{labels[i]}: {pct(rate)} ({count(departed)} of {count(assessed)})"
        if flagged:
            tip += "; " + "; ".join(RULES[s.rule].split(":")[0].lower() for s in flagged)
            c.diamond(f.x_of(i), f.y_of(float(rate)), 5.5, SIGNAL, tip)
        else:
            c.circle(f.x_of(i), f.y_of(float(rate)), 3.5, RATE, tip)


def _time_axis(c: Chart, f: _RunFrame, labels: Sequence[str], periods: int) -> None:
    """The time axis, with at most about six period labels."""
    axis_y = f.top + f.ph
    c.line(f.left, axis_y, f.right_edge, axis_y, INK)
    every = max(1, -(-periods // 6))
    for i, name in enumerate(labels):
        if i % every == 0:
            c.line(f.x_of(i), axis_y, f.x_of(i), axis_y + 4, INK)
            c.text(f.x_of(i), axis_y + 18, name, anchor="middle", size=TICK)
