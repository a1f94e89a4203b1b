"""The canonical administrations table every input form is read into, and its rows as engine ``Facts``.

One row per administration. Readers (flat table, FHIR Bulk NDJSON, OMOP CDM) fill these columns; the
weight is the one in effect at the time, the conditions those active at the time (knowledge-base concept ids).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from .._errors import InputError
from .._facts import (
    ROUTE_WORDS,
    Coded,
    ConditionFact,
    DoseKind,
    Facts,
    PlannedProcedure,
    Setting,
    checked_weight,
    ketamine_order,
)
from .._kb import KnowledgeBase
from .._opioids import Presence, Tolerance
from .._units import Quantity, parse_concentration, parse_unit, weight_in_kg

# name, DuckDB type, meaning (the flat-table form uses the same names; see README "Audit")
COLUMNS: Sequence[tuple[str, str, str]] = (
    ("admin_id", "VARCHAR", "identifier of the administration"),
    ("patient_id", "VARCHAR", "patient identifier (pseudonymous is fine)"),
    ("administered_at", "TIMESTAMP", "when it was given"),
    ("route", "VARCHAR", "intravenous, oral or intranasal"),
    ("kind", "VARCHAR", "bolus or infusion (IV only; empty: from the unit)"),
    ("dose_value", "DOUBLE", "the dose as recorded"),
    ("dose_unit", "VARCHAR", "its unit: mg, mcg, mg/kg, mg/h, mg/kg/h, mcg/kg/min, mL, mL/h, ..."),
    ("concentration_mg_per_ml", "DOUBLE", "strength of the solution, for doses recorded as a volume"),
    ("weight_value", "DOUBLE", "body weight in effect at the time"),
    ("weight_unit", "VARCHAR", "kg, g or [lb_av]"),
    (
        "weight_problem",
        "VARCHAR",
        "why the record's body weight in effect is not used (the weight is then empty): two weights taken at "
        "the same time that disagree, a weight given only as a bound (< 30 kg)",
    ),
    ("setting", "VARCHAR", "intensive-care, non-intensive-care or unknown"),
    ("location", "VARCHAR", "ward or unit name, for the report"),
    ("indication", "VARCHAR", "knowledge-base use id (perioperative, crps, ...)"),
    ("procedure_class", "VARCHAR", "abdominal, thoracic, orthopedic-limb, spine or mild"),
    ("conditions", "VARCHAR", "knowledge-base concept ids active at the time, separated by ';'"),
    ("prior_iv_ketamine", "BOOLEAN", "a course of IV infusions before (for oral or intranasal use)"),
    ("pca_sole_agent", "BOOLEAN", "IV PCA with ketamine as the only analgesic"),
    (
        "opioid_tolerance",
        "VARCHAR",
        "present, absent, not-recorded or unknown (empty: unknown): opioid tolerance that day, decided by the "
        "engine's rule from the patient's opioid prescriptions (FHIR, OMOP) or stated by the caller",
    ),
    ("opioid_unknown_reason", "VARCHAR", "why the tolerance is unknown, in a few fixed words"),
    ("opioid_basis", "VARCHAR", "why, for this patient (drug, daily amount, days)"),
    (
        "input_problem",
        "VARCHAR",
        "set by a reader when a value could not be read (e.g. a dose that is not a number)",
    ),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)


# DuckDB's ``trim`` removes the Unicode space separators (category Zs), not tabs; words are compared after it
ZS = " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
KINDS = ("bolus", "infusion")
SETTINGS = tuple(s.value for s in Setting)
TOLERANCES = tuple(p.value for p in Presence)
# why tolerance is unknown when the input gives neither the prescriptions nor the tolerance (the flat form
# without the column): it never counts as absent
NOT_IN_INPUT = "the input holds no opioid prescriptions or tolerance"


def word(value: Any) -> str | None:
    """A coded word as the audit compares it (SQL ``lower(trim(x))``): case and space separators ignored."""
    if value is None:
        return None
    return str(value).strip(ZS).lower() or None


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(repr(float(value)))


def _finite(row: Mapping[str, Any], name: str, what: str) -> Decimal | None:
    """A number that must be finite (NaN and infinity are a row's reason, never a crash)."""
    number = _decimal(row.get(name))
    if number is not None and not number.is_finite():
        raise InputError(name, f"{what} must be a finite number, not {row.get(name)}")
    return number


def facts_from_row(row: Mapping[str, Any], kb: KnowledgeBase) -> Facts:
    """One canonical row as the engine's facts; raises InputError for a row that cannot be assessed."""
    if row.get("input_problem"):
        raise InputError("row", str(row["input_problem"]))
    when = row.get("administered_at")
    as_of = (
        when.date()
        if isinstance(when, dt.datetime)
        else (when if isinstance(when, dt.date) else dt.date.today())
    )
    route = ROUTE_WORDS.get(str(row.get("route") or "").strip().lower())
    if route is None:
        raise InputError("route", f"unknown or missing route {row.get('route')!r}")
    kind_word = word(row.get("kind"))
    if kind_word is not None and kind_word not in KINDS:
        raise InputError("kind", f"unknown kind {row.get('kind')!r} (bolus or infusion)")
    kind = DoseKind(kind_word) if kind_word is not None else None
    dose_value, unit_text = _decimal(row.get("dose_value")), row.get("dose_unit")
    if dose_value is not None and unit_text is None:
        raise InputError("dose_unit", "a dose without a unit is not guessed")
    dose = Quantity(dose_value, parse_unit(str(unit_text))) if dose_value is not None else None
    concentration = _finite(row, "concentration_mg_per_ml", "the concentration")
    order = ketamine_order(
        route=route,
        dose=dose,
        kind=kind,
        pca_sole_agent=bool(row.get("pca_sole_agent")),
        concentration_mg_per_ml=(
            parse_concentration(concentration, "mg/mL", "concentration_mg_per_ml")
            if concentration is not None
            else None
        ),
    )
    weight = None
    weight_value = _finite(row, "weight_value", "a body weight")
    weight_problem = row.get("weight_problem") or None
    if weight_problem is not None and weight_value is not None:
        raise InputError(
            "weight_problem", "a weight is given beside why it cannot be used: which holds is not told"
        )
    if weight_value is not None:
        if not row.get("weight_unit"):
            raise InputError("weight_unit", "a weight without a unit (kg, g, [lb_av]) is not guessed")
        weight = checked_weight(weight_in_kg(weight_value, str(row["weight_unit"])))
    use = row.get("indication") or None
    if use is not None and use not in kb.uses:
        raise InputError("indication", f"unknown indication {use!r}")
    pclass = row.get("procedure_class") or None
    if pclass is not None and pclass not in kb.procedure_classes:
        raise InputError("procedure_class", f"unknown procedure class {pclass!r}")
    concepts = [c for c in str(row.get("conditions") or "").split(";") if c]
    unknown = [c for c in concepts if c not in kb.concepts]
    if unknown:
        raise InputError("conditions", f"unknown condition {unknown[0]!r}")
    setting = word(row.get("setting")) or "unknown"
    if setting not in SETTINGS:
        raise InputError(
            "setting",
            f"unknown setting {row.get('setting')!r} (intensive-care, non-intensive-care or unknown)",
        )
    tolerance = _tolerance(row)
    return Facts(
        as_of=as_of,
        use=use,
        weight_kg=weight,
        weight_problem=str(weight_problem) if weight_problem is not None else None,
        setting=Setting(setting),
        conditions=tuple(ConditionFact(c, Coded(kb.concepts[c].label)) for c in concepts),
        procedure=PlannedProcedure(Coded(kb.procedure_classes[pclass].label), pclass) if pclass else None,
        opioids=None,
        opioid_tolerance=tolerance,
        order=order,
        prior_iv_ketamine=row.get("prior_iv_ketamine"),
    )


def _tolerance(row: Mapping[str, Any]) -> Tolerance:
    """The row's opioid tolerance as the engine takes it: decided already (by the readers, with the engine's
    rule) or stated; empty is unknown, never absent."""
    state = word(row.get("opioid_tolerance")) or Presence.UNKNOWN.value
    if state not in TOLERANCES:
        raise InputError(
            "opioid_tolerance",
            f"unknown opioid tolerance {row.get('opioid_tolerance')!r} "
            "(present, absent, not-recorded or unknown)",
        )
    reason = row.get("opioid_unknown_reason") or None
    if state == Presence.UNKNOWN.value:
        reason = reason or NOT_IN_INPUT
    basis = row.get("opioid_basis") or reason or f"opioid tolerance {state} (as stated in the input)"
    return Tolerance(Presence(state), None, str(basis), str(reason) if state == "unknown" else None)
