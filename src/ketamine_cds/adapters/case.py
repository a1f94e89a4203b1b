"""The project's own case document (JSON) -> ``Facts``. Schema: ``schemas/case.schema.json``.

Strict on purpose: an unknown key is an error (a misspelt ``wieght`` must not silently drop the weight).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from .._errors import InvalidCaseError, UnitError
from .._facts import (
    ROUTE_WORDS,
    Coded,
    ConditionFact,
    DoseKind,
    Facts,
    KetamineOrder,
    OpioidUse,
    PlannedProcedure,
    Setting,
    WeightBasis,
    checked_weight,
    ketamine_order,
)
from .._kb import KnowledgeBase, load_knowledge, short_system
from .._units import (
    PLAIN_NUMBER,
    Quantity,
    bounded,
    duration_in_hours,
    parse_concentration,
    parse_unit,
    plain_decimal,
    weight_in_kg,
)

_TOP = {
    "$schema",
    "case_version",
    "as_of",
    "patient",
    "indication",
    "procedure",
    "setting",
    "order",
    "prior_iv_ketamine",
}
_PATIENT = {"weight", "age_years", "sex", "pregnant", "conditions", "opioids"}
_ORDER = {"route", "kind", "dose", "concentration", "pca_sole_agent", "display", "duration", "total"}
_PROCEDURE = {"class", "display", "system", "code"}
_OPIOID = {"ingredient", "mg_per_day", "mcg_per_h", "start", "end", "display"}


def is_case_document(data: Mapping[str, Any]) -> bool:
    return "resourceType" not in data


def facts_from_case(data: Mapping[str, Any], *, today: dt.date, kb: KnowledgeBase | None = None) -> Facts:
    kb = kb or load_knowledge()
    _only(data, _TOP, "")
    if data.get("case_version", 1) != 1 or isinstance(data.get("case_version"), bool):
        raise InvalidCaseError("case_version", "this program reads case_version 1")
    patient = _mapping(data.get("patient", {}), "patient")
    _only(patient, _PATIENT, "patient.")
    as_of = _date(data["as_of"], "as_of") if data.get("as_of") is not None else today
    conditions = _conditions(patient, kb)
    pregnant = _optional_bool(patient.get("pregnant"), "patient.pregnant")
    weight_kg, measured = _weight(patient.get("weight"), as_of)
    return Facts(
        as_of=as_of,
        use=_use(data.get("indication"), kb),
        weight_kg=weight_kg,
        weight_basis=WeightBasis.MEASURED if measured is not None else WeightBasis.GIVEN,
        weight_measured=measured,
        setting=_setting(data.get("setting")),
        conditions=conditions,
        ruled_out=frozenset({"pregnancy"}) if pregnant is False else frozenset(),
        stated=_stated_pregnancy(pregnant, conditions),
        procedure=_procedure(data.get("procedure"), kb),
        opioids=_opioids(patient.get("opioids"), kb),
        order=_order(data.get("order")),
        prior_iv_ketamine=_optional_bool(data.get("prior_iv_ketamine"), "prior_iv_ketamine"),
        age_years=_age(patient.get("age_years")),
        sex=_sex(patient.get("sex")),
    )


def _only(data: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidCaseError(prefix + unknown[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidCaseError(field, "must be a JSON object")
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidCaseError(field, "must be a non-empty string")
    return value.strip()


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise InvalidCaseError(field, "must be a number")
    if isinstance(value, str):  # "7_0" is not 70, nor is "٧٠": text is read as a plain number or not at all
        written = plain_decimal(value, exponent=True)
        if written is None:
            hint = comma_hint(value) or f"must be a number ({PLAIN_NUMBER}), not {value!r}"
            raise InvalidCaseError(field, hint)
        number = written
    else:
        try:
            number = value if isinstance(value, Decimal) else Decimal(str(value))
        except InvalidOperation:  # pragma: no cover - str() of an int or float is always a valid Decimal
            raise InvalidCaseError(field, f"must be a number, not {value!r}") from None
    if not number.is_finite():
        raise InvalidCaseError(field, f"must be a finite number, not {value!r}")
    return bounded(number, field)


_COMMA_NUMBER = re.compile(r"\s*[+-]?\d*,(\d+)\s*")


def comma_hint(text: str) -> str | None:
    """A number written with a comma ("80,5", "4,000"): refused, never guessed, since the comma is a decimal
    point in some countries and a thousands separator in others; the message says how to write it."""
    match = _COMMA_NUMBER.fullmatch(text)
    if not match:
        return None
    point, plain = text.strip().replace(",", ".", 1), text.strip().replace(",", "")
    if len(match.group(1)) == 3:  # 4,000: four thousand, or four with a decimal comma
        return f"write {point!r} or {plain!r}: a decimal point, and no thousands separator, not {text!r}"
    return f"write a decimal point, not a comma: {point!r}, not {text!r}"


def _date(value: Any, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(_text(value, field))
    except ValueError:
        raise InvalidCaseError(field, f"must be a date like 2026-11-24, not {value!r}") from None


def _optional_bool(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidCaseError(field, "must be true, false or null")


def _quantity(value: Any, field: str) -> Quantity:
    data = _mapping(value, field)
    _only(data, {"value", "unit"}, field + ".")
    if "value" not in data or "unit" not in data:
        raise InvalidCaseError(field, "needs both value and unit")
    number = _decimal(data["value"], field + ".value")
    try:
        return Quantity(number, parse_unit(_text(data["unit"], field + ".unit")))
    except UnitError as exc:
        raise UnitError(field + ".unit", exc.message) from None


def _weight(value: Any, as_of: dt.date) -> tuple[Fraction | None, dt.date | None]:
    """The weight in kg and, when the case gives it, the date it was measured (not after ``as_of``)."""
    if value is None:
        return None, None
    data = _mapping(value, "patient.weight")
    number = _decimal(data.get("value"), "patient.weight.value")
    _only(data, {"value", "unit", "date"}, "patient.weight.")
    kg = weight_in_kg(number, _text(data.get("unit"), "patient.weight.unit"), "patient.weight.unit")
    measured = _date(data["date"], "patient.weight.date") if data.get("date") is not None else None
    if measured is not None and measured > as_of:
        raise InvalidCaseError("patient.weight.date", f"is after the date of the question ({as_of})")
    return checked_weight(kg, "patient.weight"), measured


def _age(value: Any) -> int | None:
    if value is None:
        return None
    whole = isinstance(value, int | Decimal) and not isinstance(value, bool) and value == int(value)
    if not whole or not 0 <= value <= 130:
        raise InvalidCaseError("patient.age_years", "must be a whole number of years from 0 to 130")
    return int(value)


def _sex(value: Any) -> str | None:
    if value is None:
        return None
    if value not in ("female", "male", "other", "unknown"):
        raise InvalidCaseError("patient.sex", "must be female, male, other or unknown")
    return str(value)


def _use(value: Any, kb: KnowledgeBase) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in kb.uses:
        raise InvalidCaseError("indication", f"unknown indication {value!r}; one of: {', '.join(kb.uses)}")
    return str(value)


def _setting(value: Any) -> Setting:
    if value is None:
        return Setting.UNKNOWN
    try:
        return Setting(value)
    except ValueError:
        raise InvalidCaseError("setting", "must be intensive-care, non-intensive-care or unknown") from None


def _coded(value: Any, field: str) -> tuple[Coded, str | None]:
    """A coded entry {system, code, display} or a knowledge-base concept id; returns the concept if given."""
    if isinstance(value, str):
        return Coded(value), value
    data = _mapping(value, field)
    _only(data, {"system", "code", "display", "concept"}, field + ".")
    system, code, display, concept = (
        _optional_text(data, k, field) for k in ("system", "code", "display", "concept")
    )
    if system is not None and short_system(system) is None:
        raise InvalidCaseError(
            field + ".system", f"unknown code system {system!r} (snomed, icd10cm, rxnorm, loinc)"
        )
    if concept is None and (code is None or system is None):
        raise InvalidCaseError(
            field,
            "needs a concept, or a system and a code (a condition given only in words cannot be screened)",
        )
    return Coded(display or code or concept or "", system, code), concept


def _optional_text(data: Mapping[str, Any], key: str, field: str) -> str | None:
    return None if data.get(key) is None else _text(data[key], f"{field}.{key}")


def _conditions(patient: Mapping[str, Any], kb: KnowledgeBase) -> tuple[ConditionFact, ...] | None:
    raw = patient.get("conditions")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidCaseError("patient.conditions", "must be a list (empty when the record shows none)")
    facts: list[ConditionFact] = []
    for i, item in enumerate(raw):
        field = f"patient.conditions[{i}]"
        coded, concept = _coded(item, field)
        if concept is not None:
            if concept not in kb.concepts:
                raise InvalidCaseError(
                    field, f"unknown condition {concept!r}; one of: {', '.join(kb.concepts)}"
                )
            label = coded.display if coded.display != concept else kb.concepts[concept].finding_name
            facts.append(ConditionFact(concept, Coded(label, coded.system, coded.code)))
        elif coded.code:
            facts.extend(ConditionFact(c, coded) for c in kb.value_sets.concepts(coded.system, coded.code))
    return tuple(facts)


def _stated_pregnancy(
    pregnant: bool | None, conditions: tuple[ConditionFact, ...] | None
) -> tuple[ConditionFact, ...]:
    """A pregnancy the case states, unless its conditions already show one (read whether or not they are)."""
    if pregnant is not True or any(c.concept == "pregnancy" for c in conditions or ()):
        return ()
    return (ConditionFact("pregnancy", Coded("pregnancy (stated in the case)")),)


def _procedure(value: Any, kb: KnowledgeBase) -> PlannedProcedure | None:
    if value is None:
        return None
    data = _mapping(value, "procedure")
    _only(data, _PROCEDURE, "procedure.")
    pclass, system, code, display = (
        _optional_text(data, k, "procedure") for k in ("class", "system", "code", "display")
    )
    if pclass is not None and pclass not in kb.procedure_classes:
        raise InvalidCaseError(
            "procedure.class", f"unknown class {pclass!r}; one of: {', '.join(kb.procedure_classes)}"
        )
    if system is not None and short_system(system) is None:
        raise InvalidCaseError(
            "procedure.system", f"unknown code system {system!r} (snomed, icd10cm, rxnorm, loinc)"
        )
    if pclass is None and code:
        classes = [
            c.split(":", 1)[1] for c in kb.value_sets.concepts(system, code) if c.startswith("procedure:")
        ]
        pclass = classes[0] if classes else None
    shown = display or (kb.procedure_classes[pclass].label if pclass else code or "procedure")
    return PlannedProcedure(Coded(shown, system, code), pclass)


def _opioids(value: Any, kb: KnowledgeBase) -> tuple[OpioidUse, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidCaseError("patient.opioids", "must be a list (empty when the patient takes none)")
    return tuple(_opioid(item, f"patient.opioids[{i}]", kb) for i, item in enumerate(value))


def _opioid(value: Any, field: str, kb: KnowledgeBase) -> OpioidUse:
    data = _mapping(value, field)
    _only(data, _OPIOID, field + ".")
    ingredient = _text(data.get("ingredient"), field + ".ingredient").lower()
    if ingredient not in kb.opioids:
        raise InvalidCaseError(
            field + ".ingredient", f"unknown opioid {ingredient!r}; one of: {', '.join(kb.opioids)}"
        )
    key = "mcg_per_h" if kb.opioids[ingredient].unit == "ug/h" else "mg_per_day"
    other = "mg_per_day" if key == "mcg_per_h" else "mcg_per_h"
    if other in data:
        raise InvalidCaseError(f"{field}.{other}", f"give {ingredient} as {key}")
    amount = None if data.get(key) is None else Fraction(_decimal(data[key], f"{field}.{key}"))
    if amount is not None and amount < 0:
        raise InvalidCaseError(f"{field}.{key}", "must not be negative")
    start = _date(data["start"], field + ".start") if data.get("start") else None
    end = _date(data["end"], field + ".end") if data.get("end") else None
    return OpioidUse(
        ingredient, amount, start, end, Coded(_optional_text(data, "display", field) or ingredient)
    )


def _order(value: Any) -> KetamineOrder | None:
    if value is None:
        return None
    data = _mapping(value, "order")
    _only(data, _ORDER, "order.")
    route_text = data.get("route")
    if route_text is None:
        raise InvalidCaseError("order.route", "the route is missing (intravenous, oral or intranasal)")
    route = ROUTE_WORDS.get(str(route_text).lower())
    if route is None:
        raise InvalidCaseError(
            "order.route", f"unsupported route {route_text!r} (intravenous, oral or intranasal)"
        )
    kind = None
    if data.get("kind") is not None:
        try:
            kind = DoseKind(data["kind"])
        except ValueError:
            raise InvalidCaseError("order.kind", "must be bolus or infusion") from None
    dose = _quantity(data["dose"], "order.dose") if data.get("dose") is not None else None
    concentration = None
    if data.get("concentration") is not None:
        conc = _mapping(data["concentration"], "order.concentration")
        _only(conc, {"value", "unit"}, "order.concentration.")
        number = _decimal(conc.get("value"), "order.concentration.value")
        concentration = parse_concentration(
            number, _text(conc.get("unit"), "order.concentration.unit"), "order.concentration.unit"
        )
    pca = _optional_bool(data.get("pca_sole_agent"), "order.pca_sole_agent") or False
    return ketamine_order(
        route=route,
        dose=dose,
        kind=kind,
        concentration_mg_per_ml=concentration,
        pca_sole_agent=pca,
        source=Coded(_optional_text(data, "display", "order") or "ketamine"),
        duration_h=_duration(data.get("duration")),
        total=_quantity(data["total"], "order.total") if data.get("total") is not None else None,
    )


def _duration(value: Any) -> Fraction | None:
    """How long an infusion runs: {"value": 4, "unit": "h"} (min, h, d)."""
    if value is None:
        return None
    data = _mapping(value, "order.duration")
    _only(data, {"value", "unit"}, "order.duration.")
    number = _decimal(data.get("value"), "order.duration.value")
    unit = _text(data.get("unit"), "order.duration.unit")
    try:
        return duration_in_hours(number, unit, "order.duration")
    except UnitError as exc:
        raise UnitError("order.duration.unit", exc.message) from None
