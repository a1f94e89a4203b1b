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
