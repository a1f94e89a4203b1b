"""How the audit report writes numbers, shares and times (also the report templates' filters)."""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction
from typing import Any


def count(value: int) -> str:
    """1234567 -> 1,234,567."""
    return f"{value:,}"


def pct(part: int | Fraction, whole: int | None = None) -> str:
    """A share with one decimal; never 0.0% for some or 100.0% for not all; a dash without a denominator."""
    if whole is None:
        share = Fraction(part)
    elif whole <= 0:
        return "–"
    else:
        share = Fraction(part, whole)
    percent = 100 * share
    if 0 < percent < Fraction(1, 10):
        return "<0.1%"
    if Fraction(999, 10) < percent < 100:
        return ">99.9%"
    return f"{float(percent):.1f}%"


def num(value: float | None, digits: int = 2) -> str:
    """A measured number: at most ``digits`` decimals, trailing zeros dropped; a dash when missing."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        digits = min(digits, 1)
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def times(value: float | None) -> str:
    """How many times its limit an over-limit dose is, rounded up (never 1× for a dose over it): 1.43×, 714×."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞×"
    digits = 2 if value < 10 else 0
    return f"{num(math.ceil(value * 10**digits) / 10**digits, digits)}×"


def compact(value: float) -> str:
    """Axis numbers: 800, 2.5k, 400k, 1.5M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def moment(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def day(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime("%Y-%m-%d")
    return "–" if value is None else str(value)


def period_label(start: dt.date, period: str) -> str:
    if period == "month":
        return start.strftime("%Y-%m")
    if period == "quarter":
        return f"{start.year} Q{(start.month - 1) // 3 + 1}"
    return str(start.year)


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{count(n)} {word if n == 1 else (words or word + 's')}"


FILTERS = {
    "count": count,
    "pct": pct,
    "num": num,
    "times": times,
    "moment": moment,
    "day": day,
    "plural": plural,
}
