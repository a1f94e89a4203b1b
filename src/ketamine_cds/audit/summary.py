"""``summary.json``: the counts of ``duck.summary_rows`` and the report's measures, departures and run charts.

The numbers are the report's own (one ``Aggregates``), so the page and the JSON never disagree.
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

from . import fmt
from .departures import CAUSES, EXPORT_DIR, MANY_TIMES, multiple_bin_label
from .measures import CATEGORY_LABELS
from .report import Aggregates, Series
from .runchart import MIN_POINTS, RULES

DOCUMENTATION_ERROR_RULE = (
    f"A dose over its limit at least {MANY_TIMES} times the limit is a likely documentation error; below that, "
    "a clinical over-limit dose. Cause 'unit': recorded in mg or g and, read in the unit a thousand times "
    f"smaller (mcg for mg, mg for g), within a factor of {MANY_TIMES} of its limit (from a tenth of it to under "
    f"{MANY_TIMES} times it). Cause 'many-times': otherwise."
)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _rate(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _series(series: Series, agg: Aggregates) -> dict[str, Any]:
    chart = series.chart
    dated = [p for p in agg.period_starts if series.by_period.get(p, (0, 0))[1]]
    labels = [fmt.period_label(p, agg.period) for p in dated]
    return {
        "unit": series.unit,
        "assessed": series.assessed,
        "departed": series.departed,
        "departure_rate": _share(series.departed, series.assessed),
        "contraindicated": series.contraindicated,
        "over_limit_clinical": series.clinical,
        "documentation_errors": series.documentation_errors,
        "departures_file": series.export,
        "periods": [
            {"period": fmt.period_label(p, agg.period), "assessed": a, "departed": d}
            for p in agg.period_starts
            for d, a in [series.by_period.get(p, (0, 0))]
            if a
        ],
        "median_rate": _rate(chart.median),
        "rules_applied": chart.applied,
        "runs": chart.runs if chart.applied else None,
        "runs_expected": list(chart.runs_limits) if chart.runs_limits else None,
        "signals": [
            {
                "rule": s.rule,
                "from": labels[s.first],
                "to": labels[s.last],
                **({"direction": s.direction} if s.direction else {}),
            }
            for s in chart.signals
        ],
    }


def _all_units(agg: Aggregates) -> dict[str, Any]:
    """The whole hospital's series: no unit name (``unit: null`` is a unit whose location is not recorded)."""
    entry = _series(agg.overall, agg)
    del entry["unit"], entry["departures_file"]
    return entry


def quality_summary(agg: Aggregates) -> dict[str, Any]:
    """The measures a committee quotes, with numerators, denominators and exclusions, and where and when."""
    d = agg.departures
    return {
        "measures": {m.key: m.json() for m in agg.measures},
        "categories": {CATEGORY_LABELS.get(k, k): n for k, n in sorted(agg.partition.counts.items())},
        "unclassified": dict(agg.partition.unknown),
        "departures": {
            "administrations": d.administrations,
            "contraindicated": d.contraindicated,
            "over_limit": d.over,
            "over_limit_clinical": d.clinical,
            "documentation_errors": d.documentation_errors,
            "contraindicated_and_over_limit": d.both,
            "by_contraindication": dict(d.by_contraindication),
            "by_dose_statement": [
                {"statements": list(s), "clinical": a, "documentation_errors": b}
                for s, a, b in d.by_dose_statement
            ],
            "times_the_limit": [
                {
                    "bin": "not known" if b is None else multiple_bin_label(b),
                    "clinical": x,
                    "documentation_errors": y,
                }
                for b, x, y in d.multiples
            ],
            "documentation_error_causes": {CAUSES.get(c, c): n for c, n in d.causes},
            "documentation_error_rule": DOCUMENTATION_ERROR_RULE,
        },
        "departure_rate": {
            "definition": "departed administrations over assessed administrations within the guideline's scope, "
            f"per {agg.period} (likely documentation errors included)",
            "period": agg.period,
            "first": _day(agg.first),
            "last": _day(agg.last),
            "run_chart_rules": {**RULES, "minimum_points": f"rules are applied from {MIN_POINTS} points"},
            "all_units": _all_units(agg),
            "units": [_series(s, agg) for s in agg.units],
        },
        "departures_folder": EXPORT_DIR if any(s.export for s in agg.units) else None,
    }


def _day(value: Any) -> str | None:
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime("%Y-%m-%d")
    return None if value is None else str(value)
