"""The run-chart rules, each on series built to just meet it and to just miss it."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest

from ketamine_cds.audit.runchart import (
    MIN_POINTS,
    SHIFT,
    TREND,
    Signal,
    count_runs,
    median,
    run_chart,
    runs_limits,
    shifts,
    trends,
)


def series(*values: float) -> list[Fraction]:
    return [Fraction(v).limit_denominator() for v in values]


def test_the_median_is_exact() -> None:
    assert median(series(3, 1, 2)) == 2
    assert median(series(1, 2, 3, 4)) == Fraction(5, 2)
    assert median([Fraction(1, 3), Fraction(1, 3), Fraction(2, 3)]) == Fraction(1, 3)


def test_shift_needs_six_points_on_one_side() -> None:
    assert (SHIFT, TREND, MIN_POINTS) == (6, 5, 10)
    centre = Fraction(5)
    assert shifts(series(6, 6, 6, 6, 6, 6), centre) == [Signal("shift", 0, 5, "above")]
    assert shifts(series(6, 6, 6, 6, 6, 4), centre) == []  # five, then broken
    assert shifts(series(6, 4, 4, 4, 4, 4, 4, 9), centre) == [Signal("shift", 1, 6, "below")]


def test_points_on_the_median_neither_add_to_a_shift_nor_break_it() -> None:
    centre = Fraction(5)
    # five above, one on the median, one more above: six above, spanning seven points
    assert shifts(series(6, 6, 6, 5, 6, 6, 6), centre) == [Signal("shift", 0, 6, "above")]
    # five above with points on the median among them: not six
    assert shifts(series(6, 5, 6, 5, 6, 6, 6), centre) == []


def test_trend_needs_five_points_going_one_way() -> None:
    assert trends(series(1, 2, 3, 4, 5)) == [Signal("trend", 0, 4, "up")]
    assert trends(series(1, 2, 3, 4, 3)) == []  # four going up
    assert trends(series(9, 7, 5, 3, 1, 2)) == [Signal("trend", 0, 4, "down")]
    # one up-trend turning into a down-trend: both, sharing the turning point
    assert trends(series(1, 2, 3, 4, 5, 4, 3, 2, 1)) == [
        Signal("trend", 0, 4, "up"),
        Signal("trend", 4, 8, "down"),
    ]


def test_equal_points_neither_add_to_a_trend_nor_break_it() -> None:
    assert trends(series(1, 2, 2, 3, 4)) == []  # four different values going up
    assert trends(series(1, 2, 2, 3, 4, 5)) == [Signal("trend", 0, 5, "up")]


@pytest.mark.parametrize(
    ("above", "below", "fewest", "most"),
    [
        (5, 5, 3, 9),  # 10 points: P(2 runs) = 2/252, P(3 or fewer) = 10/252 > 2.5%; as the published table
        (8, 8, 5, 13),  # 16 points: as the published table (Perla 2011)
        (6, 6, 4, 10),  # 12 points: P(3 or fewer) = 12/924 < 2.5%, stricter than the table's 3
        (3, 9, 3, 7),  # unequal halves, as the runs actually fall
    ],
)
def test_runs_limits_are_the_exact_two_and_a_half_percent_tails(
    above: int, below: int, fewest: int, most: int
) -> None:
    assert runs_limits(above, below) == (fewest, most)
    # cross-check with the distribution counted by brute force over every arrangement
    n = above + below
    from itertools import combinations

    tally: dict[int, int] = {}
    for ups in combinations(range(n), above):
        sides = [1 if i in ups else -1 for i in range(n)]
        runs = 1 + sum(1 for i in range(1, n) if sides[i] != sides[i - 1])
        tally[runs] = tally.get(runs, 0) + 1
    total = comb(n, above)
    low_tail = sum(v for r, v in tally.items() if r < fewest)
    high_tail = sum(v for r, v in tally.items() if r > most)
    assert Fraction(low_tail, total) <= Fraction(1, 40) < Fraction(low_tail + tally.get(fewest, 0), total)
    assert Fraction(high_tail, total) <= Fraction(1, 40) < Fraction(high_tail + tally.get(most, 0), total)


def test_runs_are_counted_without_the_points_on_the_median() -> None:
    assert count_runs(series(1, 9, 5, 9, 1), Fraction(5)) == (3, 2, 2)


def test_too_many_runs_and_too_few_runs() -> None:
    zigzag = run_chart(series(*([1, 9] * 6)))  # 12 alternating points: 12 runs, at most 10 by chance
    assert [s.rule for s in zigzag.signals] == ["too-many-runs"] and zigzag.runs == 12
    halves = run_chart(series(*([1] * 5 + [9] * 5)))  # 2 runs, at least 3 by chance (and no shift of 6)
    assert [s.rule for s in halves.signals] == ["too-few-runs"]
    assert all(s.whole for s in halves.signals) and halves.flagged(0) == []  # the whole chart, not points


def test_random_looking_series_has_no_signal() -> None:
    chart = run_chart(series(4, 6, 5, 7, 3, 6, 4, 7, 5, 3, 6, 4))
    assert chart.applied and chart.signals == () and chart.median == Fraction(5)


def test_fewer_than_ten_points_apply_no_rule() -> None:
    chart = run_chart(series(1, 2, 3, 4, 5, 6, 7, 8, 9))  # a trend and a shift, but nine points only
    assert not chart.applied and chart.signals == () and chart.median == 5
    empty = run_chart([])
    assert empty.median is None and not empty.applied


def test_a_rate_exactly_on_the_median_is_on_it() -> None:
    """1/3 is not 0.333...: exact fractions put a point on the median, never a hair above or below it."""
    points = [Fraction(1, 3)] * 5 + [Fraction(2, 6)] + [Fraction(1, 2)] * 2 + [Fraction(1, 4)] * 2
    chart = run_chart(points)
    assert chart.median == Fraction(1, 3) and chart.useful == 4
