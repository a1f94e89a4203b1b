"""Run-chart rules: when a series of rates over time signals more than chance variation.

A run chart plots a rate per period with the **median** of the plotted points as its centre line (every point
of the series, not a baseline). The rules are the four commonly taught for health care (Institute for
Healthcare Improvement; Perla, Provost & Murray, BMJ Qual Saf 2011;20:46-51), of which this module applies
the three that need no judgement:

- **Shift**: ``SHIFT`` (6) or more consecutive points all above, or all below, the median. A point exactly on
  the median neither adds to a shift nor breaks it.
- **Trend**: ``TREND`` (5) or more consecutive points all going up, or all going down. A point equal to the one
  before it neither adds to a trend nor breaks it.
- **Runs, too few or too many**: a run is a series of points on one side of the median (points on it are left
  out). Too few runs means the series stays on one side for long stretches; too many means it alternates more
  than chance does. Limits are computed exactly from the distribution of the number of runs under random
  order for the observed numbers of points above and below the median (Swed & Eisenhart, Ann Math Stat
  1943;14:66-87), ``RUNS_TAIL`` (2.5%) in each tail. Published tables (Perla 2011) tabulate the same test for
  equal halves and may differ from it by one run at some lengths.

The fourth rule, an *astronomical point*, asks whether everyone looking at the chart would call a point
unusual; that is judgement, so it is not applied.

The rules need ``MIN_POINTS`` (10) points or more; with fewer none is applied and the chart says so. Rates
are exact fractions, so "above", "on" and "equal" never depend on rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from math import comb
from typing import Literal

SHIFT = 6
TREND = 5
MIN_POINTS = 10
RUNS_TAIL = Fraction(1, 40)  # 2.5% in each tail: 5% two-sided

Rule = Literal["shift", "trend", "too-few-runs", "too-many-runs"]

RULES: dict[Rule, str] = {
    "shift": f"Shift: {SHIFT} or more consecutive points on one side of the median (points on it skipped)",
    "trend": f"Trend: {TREND} or more consecutive points all going up or all going down (equal points skipped)",
    "too-few-runs": "Too few runs: fewer crossings of the median than chance allows (exact runs test, 2.5%)",
    "too-many-runs": "Too many runs: more crossings of the median than chance allows (exact runs test, 2.5%)",
}


@dataclass(frozen=True)
class Signal:
    rule: Rule
    first: int  # index of the first point of the pattern
    last: int  # index of the last point (inclusive)
    direction: Literal["up", "down", "above", "below", ""] = ""

    @property
    def whole(self) -> bool:
        """A runs signal is about the whole chart, not a stretch of points."""
        return self.rule in ("too-few-runs", "too-many-runs")


@dataclass(frozen=True)
class RunChart:
    points: tuple[Fraction, ...]
    median: Fraction | None
    signals: tuple[Signal, ...]
    useful: int  # points not on the median
    runs: int
    runs_limits: tuple[int, int] | None  # (fewest, most) runs chance allows; None when not tested
    applied: bool  # False when there are fewer than MIN_POINTS points

    def flagged(self, index: int) -> list[Signal]:
        """The shifts and trends point ``index`` is part of."""
        return [s for s in self.signals if not s.whole and s.first <= index <= s.last]


def median(values: Sequence[Fraction]) -> Fraction:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def shifts(points: Sequence[Fraction], centre: Fraction, length: int = SHIFT) -> list[Signal]:
    """Maximal stretches of ``length`` or more points on one side of the centre line."""
    found: list[Signal] = []
    side, first, last, count = 0, -1, -1, 0
    for i, value in enumerate(points):
        here = _sign(value - centre)
        if here == 0:
            continue
        if here == side:
            last, count = i, count + 1
            continue
        if count >= length:
            found.append(Signal("shift", first, last, "above" if side > 0 else "below"))
        side, first, last, count = here, i, i, 1
    if count >= length:
        found.append(Signal("shift", first, last, "above" if side > 0 else "below"))
    return found


def trends(points: Sequence[Fraction], length: int = TREND) -> list[Signal]:
    """Maximal stretches of ``length`` or more points each higher (or each lower) than the one before."""
    kept = [i for i, value in enumerate(points) if i == 0 or value != points[i - 1]]  # equal points skipped
    steps = [_sign(points[kept[k]] - points[kept[k - 1]]) for k in range(1, len(kept))]
    found: list[Signal] = []
    k = 0
    while k < len(steps):
        j = k
        while j + 1 < len(steps) and steps[j + 1] == steps[k]:
            j += 1
        # steps k..j join the points kept[k] .. kept[j + 1]
        if j - k + 2 >= length:
            found.append(Signal("trend", kept[k], kept[j + 1], "up" if steps[k] > 0 else "down"))
        k = j + 1
    return found


def _sign(value: Fraction) -> int:
    return (value > 0) - (value < 0)


@cache
def _runs_distribution(above: int, below: int) -> tuple[Fraction, ...]:
    """P(R = r) for r = 0 .. above + below: the number of runs of a random order of the two kinds."""
    total = comb(above + below, above)
    probabilities = [Fraction(0)] * (above + below + 1)
    if above == 0 or below == 0:
        probabilities[1 if above + below else 0] = Fraction(1)
        return tuple(probabilities)
    for r in range(2, above + below + 1):
        k = r // 2
        if r % 2 == 0:
            ways = 2 * comb(above - 1, k - 1) * comb(below - 1, k - 1)
        else:
            ways = comb(above - 1, k - 1) * comb(below - 1, k) + comb(above - 1, k) * comb(below - 1, k - 1)
        probabilities[r] = Fraction(ways, total)
    return tuple(probabilities)


def runs_limits(above: int, below: int, tail: Fraction = RUNS_TAIL) -> tuple[int, int]:
    """(fewest, most) runs consistent with chance: fewer than the first or more than the second is a signal."""
    p = _runs_distribution(above, below)
    low, cumulative = 0, Fraction(0)
    for r, pr in enumerate(p):
        cumulative += pr
        if cumulative > tail:
            low = r
            break
    high, cumulative = len(p) - 1, Fraction(0)
    for r in range(len(p) - 1, -1, -1):
        cumulative += p[r]
        if cumulative > tail:
            high = r
            break
    return low, high


def count_runs(points: Sequence[Fraction], centre: Fraction) -> tuple[int, int, int]:
    """(runs, points above, points below); points on the centre line are left out."""
    sides = [s for s in (_sign(v - centre) for v in points) if s]
    runs = sum(1 for i, s in enumerate(sides) if i == 0 or s != sides[i - 1])
    return runs, sides.count(1), sides.count(-1)


def run_chart(points: Sequence[Fraction]) -> RunChart:
    """The median and every signal of the rules above, for a series in time order."""
    values = tuple(points)
    if not values:
        return RunChart(values, None, (), 0, 0, None, False)
    centre = median(values)
    runs, above, below = count_runs(values, centre)
    if len(values) < MIN_POINTS:
        return RunChart(values, centre, (), above + below, runs, None, False)
    found = shifts(values, centre) + trends(values)
    limits: tuple[int, int] | None = None
    if above and below:
        limits = runs_limits(above, below)
        useful = [i for i, v in enumerate(values) if v != centre]
        if runs < limits[0]:
            found.append(Signal("too-few-runs", useful[0], useful[-1]))
        elif runs > limits[1]:
            found.append(Signal("too-many-runs", useful[0], useful[-1]))
    found.sort(key=lambda s: (s.first, s.last, s.rule))
    return RunChart(values, centre, tuple(found), above + below, runs, limits, True)
