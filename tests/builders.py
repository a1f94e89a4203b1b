"""Terse builders for engine tests: a default patient (80 kg, ward, appendectomy, empty record)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ketamine_cds import (
    Assessment,
    Coded,
    ConditionFact,
    Facts,
    OpioidUse,
    PlannedProcedure,
    Quantity,
    Route,
    Setting,
    assess,
    ketamine_order,
    parse_unit,
)

TODAY = dt.date(2026, 11, 24)
APPENDECTOMY = PlannedProcedure(Coded("Appendectomy", "http://snomed.info/sct", "80146002"), "abdominal")
COLONOSCOPY = PlannedProcedure(Coded("Colonoscopy", "http://snomed.info/sct", "73761001"), "mild")


def facts(**changes: Any) -> Facts:
    base = Facts(
        as_of=TODAY,
        use="perioperative",
        weight_kg=Fraction(80),
        setting=Setting.NON_INTENSIVE_CARE,
        conditions=(),
        procedure=APPENDECTOMY,
        opioids=(),
    )
    return dataclasses.replace(base, **changes)


def qty(value: str | int, unit: str) -> Quantity:
    return Quantity(Decimal(str(value)), parse_unit(unit))


def iv(value: str | int, unit: str, **kw: Any) -> Any:
    return ketamine_order(route=Route.INTRAVENOUS, dose=qty(value, unit), **kw)


def oral() -> Any:
    return ketamine_order(route=Route.ORAL, dose=None)


def nasal() -> Any:
    return ketamine_order(route=Route.INTRANASAL, dose=None)


def condition(concept: str, display: str | None = None) -> ConditionFact:
    return ConditionFact(concept, Coded(display or concept))


def opioid(ingredient: str, daily: str | int, days: int = 30) -> OpioidUse:
    return OpioidUse(
        ingredient, Fraction(Decimal(str(daily))), TODAY - dt.timedelta(days=days), None, Coded(ingredient)
    )


def run(**changes: Any) -> Assessment:
    return assess(facts(**changes))


def ids(assessment: Assessment) -> set[str]:
    return set(assessment.statement_ids)


def messages(assessment: Assessment, statement: str) -> list[str]:
    return [f.message_key for f in assessment.findings if f.statement.id == statement]


def rate_forms(limit: str) -> list[tuple[str, str, int]]:
    """An infusion rate at, just above and just below ``limit`` mg/kg/h for the default 80 kg patient and a
    10 mg/mL solution, written in mg/kg/h, mcg/kg/min, mg/h and mL/h: ``(value, unit, side)`` with side -1
    below the limit, 0 exactly at it and 1 above it. A limit that is no finite decimal in mcg/kg/min
    (1 mg/kg/h is 16.666... mcg/kg/min) has no "at" in that unit: its two roundings are below and above."""
    per_kg = Decimal(limit)
    step = Decimal("0.01")
    forms: list[tuple[str, str, int]] = []
    for value, unit in ((per_kg, "mg/kg/h"), (per_kg * 80, "mg/h"), (per_kg * 8, "mL/h")):
        forms += [(str(value), unit, 0), (str(value + step), unit, 1), (str(value - step), unit, -1)]
    mcg = Fraction(per_kg) * 1000 / 60
    down = Decimal(mcg.numerator * 100 // mcg.denominator) / 100
    if Fraction(down) == mcg:
        forms += [(str(down), "mcg/kg/min", 0), (str(down + step), "mcg/kg/min", 1)]
    else:
        forms += [(str(down + step), "mcg/kg/min", 1)]
    forms.append((str(down - step if Fraction(down) == mcg else down), "mcg/kg/min", -1))
    return forms
