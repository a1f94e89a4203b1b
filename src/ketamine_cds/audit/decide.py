"""Verdicts for millions of rows from the one engine.

The database does arithmetic only: each row's dose per kg (unit factors from ``parse_unit``) and its band
among every limit a dose of its kind is compared with in any use and setting (``dose_thresholds``: 0.35 mg/kg
for a bolus; 0.5, 1, 2 and 7 mg/kg/h for an infusion), or that it is within a hair of one of them. Which limit
applies to a row (its use and setting) is not decided in SQL: rows that agree on everything the engine's
decision depends on (use, setting, kind and band among them) form a decision class; the engine assesses one real
row of each class and its verdict, statement ids and limit are joined back to every row of that class.
Opioid tolerance is one of the class columns: the readers decide it once per patient and day with the
engine's own rule (``tolerance.py``), and the engine takes it as decided. Rows
within a hair of a limit, where a binary float cannot be trusted to say which side they are on, get a class per
exact dose; the engine's exact arithmetic puts each on its side of every limit (``exact_side``), and those of
one context on the same sides (at 1 mg/kg/h exactly, whatever the weight) share one assessment.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .._dose_policy import amount_thresholds, dose_thresholds
from .._engine import assess
from .._errors import InputError, UnitError
from .._facts import MAX_WEIGHT_KG, MIN_WEIGHT_KG, DoseKind, Route
from .._kb import KnowledgeBase
from .._opioids import Presence
from .._site import Site
from .._units import Unit, dose_amounts, parse_unit, weight_in_kg
from .canonical import facts_from_row

# the per-row columns a decision class shares: everything the engine's decision depends on (duck.CLASS_KEY
# adds, at a limit, the exact dose, and for a bad row the value its reason quotes)
CLASS_COLUMNS = (
    "route_n",
    "kind",
    "setting",
    "indication",
    "procedure_class",
    "conditions",
    "prior_iv_ketamine",
    "pca_sole_agent",
    "opioid_tolerance",
    "opioid_unknown_reason",
    "has_weight",
    "weight_problem",
    "has_concentration",
    "concentration_sign",
    "dose_shape",
    "weight_range",
    "dose_sign",
    "dose_band",
    "amount_band",
    "at_threshold",
    "input_problem",
)
BOUNDARY = 1e-9  # relative band around a limit where a binary float could be wrong: decided exactly


@dataclass(frozen=True)
class UnitRow:
    text: str
    ok: bool
    mg_factor: float | None  # per unit (per hour for rates); mL for volumes
    per_kg: bool
    is_rate: bool
    is_volume: bool


def parsed_units(units: Iterable[str | None]) -> Iterator[tuple[str, Unit | None]]:
    """Each dose unit found in the data (empty ones left out) read by the engine's own unit parser: None
    for one it does not know."""
    for text in units:
        if text is None:
            continue
        try:
            yield text, parse_unit(text)
        except UnitError:
            yield text, None


def unit_rows(units: Iterable[str | None]) -> list[UnitRow]:
    """The dose units found in the data, read by the engine's own unit parser."""
    rows = []
    for text, unit in parsed_units(units):
        if unit is None:
            rows.append(UnitRow(text, False, None, False, False, False))
            continue
        factor = unit.factor / unit.per_hours if unit.per_hours is not None else unit.factor
        rows.append(UnitRow(text, True, float(factor), unit.per_kg, unit.is_rate, unit.amount == "volume"))
    return rows


def weight_unit_rows(units: Iterable[str | None]) -> list[tuple[str, float | None]]:
    rows: list[tuple[str, float | None]] = []
    for text in units:
        if text is None:
            continue
        try:
            rows.append((text, float(weight_in_kg(Decimal(1), text))))
        except InputError:
            rows.append((text, None))
    return rows


def limits(kb: KnowledgeBase) -> dict[str, float]:
    """The acute limits (for plots: the scale most doses are read on) and the weight bounds."""
    return {
        "bolus": float(kb.threshold("dose-bolus-limit", "limit_mg_per_kg")),
        "infusion": float(kb.threshold("dose-infusion-limit", "limit_mg_per_kg_per_h")),
        "min_weight_kg": float(MIN_WEIGHT_KG),
        "max_weight_kg": float(MAX_WEIGHT_KG),
    }


def thresholds(kb: KnowledgeBase, site: Site | None = None) -> dict[str, list[float]]:
    """Every limit a bolus (per kg) and an infusion (per kg and hour) is compared with, in any use and setting
    (``bolus``, ``infusion``), and the amounts a dose without its weight is compared with (``bolus_amount`` in
    mg, ``infusion_amount`` in mg/h: a site's absolute caps, each limit at the heaviest weight accepted)."""
    found = {kind.value: [float(t) for t in dose_thresholds(kb, kind, site)] for kind in DoseKind}
    for kind in DoseKind:
        found[f"{kind.value}_amount"] = [float(t) for t in amount_thresholds(kb, kind, site)]
    return found


@dataclass(frozen=True)
class Decision:
    verdict: str | None
    statements: list[str]
    dose_status: str | None
    problem: str | None
    limit_per_kg: float | None = None  # the limit that applies to the row's dose (use, setting, kind)
    opioid_tolerance: str | None = (
        None  # the tolerance the engine used (present, absent, not-recorded, unknown)
    )
    opioid_unknown_reason: str | None = None  # why it is unknown, in fixed words
    limit_cap: float | None = None  # a site's cap in mg (mg/h) beside the limit per kg, whatever the weight
    limit_from_site: bool | None = None  # the limit per kg is the site's (None: no dose was checked)
    guideline_verdict: str | None = None  # with a site: the guideline's own answer, for adherence to both
    guideline_dose_status: str | None = None


def decide(representative: Mapping[str, Any], kb: KnowledgeBase, site: Site | None = None) -> Decision:
    """The engine's answer for one real row of a decision class (or why the row cannot be assessed); with a
    site's protocol, and the guideline's own answer beside it."""
    try:
        facts = facts_from_row(representative, kb)
        assessment = assess(facts, kb, site)
        own = assess(facts, kb) if site is not None else assessment
    except InputError as exc:
        return Decision(None, [], None, str(exc))
    tolerance = assessment.opioid.tolerant
    reason = facts.opioid_tolerance.unknown_because if facts.opioid_tolerance is not None else None
    check = assessment.dose_check
    # the limit before the row's weight: per kg and a site's cap in mg; each row's own limit for its weight is
    # worked out beside it (duck.findings_sql: the tighter of the two, as the engine's _effective)
    limit: float | None = None
    cap: float | None = None
    if check is not None and check.per_kg_limit is not None:
        limit = float(check.per_kg_limit)
        cap = float(check.cap_amount) if check.cap_amount is not None else None
    elif assessment.route is Route.INTRAVENOUS:  # no dose to check: the limit of the kind recorded
        infusion = str(representative.get("kind") or "").strip().lower() == "infusion"
        limits_ = assessment.dose_limits
        nominal = limits_.infusion_limit if infusion else limits_.bolus_limit
        if nominal is not None:
            limit = float(nominal.per_kg)
            cap = float(nominal.max_amount) if nominal.max_amount is not None else None
    status = check.status.value if check is not None else None
    own_status = own.dose_check.status.value if own.dose_check is not None else None
    return Decision(
        assessment.verdict.value,
        list(assessment.statement_ids),
        status,
        None,
        limit,
        tolerance.value,
        reason if tolerance is Presence.UNKNOWN else None,
        cap,
        check.guideline_limit_per_kg != check.per_kg_limit if check is not None else None,
        own.verdict.value,
        own_status,
    )


Limits = Mapping[DoseKind, tuple[Sequence[Fraction], Sequence[Fraction]]]  # per kg, and in mg or mg/h


def every_limit(kb: KnowledgeBase, site: Site | None = None) -> Limits:
    """Every limit a dose of each kind is compared with, per kg and in mg or mg/h (``exact_side``)."""
    return {kind: (dose_thresholds(kb, kind, site), amount_thresholds(kb, kind, site)) for kind in DoseKind}


def exact_side(row: Mapping[str, Any], kb: KnowledgeBase, limits: Limits) -> Hashable:
    """Where a row's dose lies among every limit a dose of its kind is compared with (``every_limit``), worked
    out by the engine's own arithmetic: below, at or above each. Rows of one context on the same sides get the
    same answer from the engine. A row the engine cannot read is placed by its reason."""
    try:
        facts = facts_from_row(row, kb)
    except InputError as exc:
        return ("not assessable", str(exc))
    order = facts.order
    if order is None or order.dose is None or order.kind is None:
        return ("no dose checked",)
    amount, per_kg = dose_amounts(order.dose, order.concentration_mg_per_ml, facts.weight_kg)
    per_kg_limits, amount_limits = limits[order.kind]
    return (order.kind.value, _sides(per_kg, per_kg_limits), _sides(amount, amount_limits))


def _sides(value: Fraction | None, limits: Sequence[Fraction]) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple((value > t) - (value < t) for t in limits)


Classes = Iterable[tuple[int, Mapping[str, Any], int]]  # class key, its representative row, its rows


def decide_all(
    classes: Classes, kb: KnowledgeBase, site: Site | None = None
) -> tuple[list[tuple[int, Decision]], int]:
    """The engine's answer for each class (its representative row assessed), and how many assessments it took:
    a class of one exact dose at a limit (its row carries ``context_key``) shares the assessment of its
    context's classes on the same side of every limit, made of the smallest representative among them."""
    groups: dict[Hashable, list[tuple[int, Mapping[str, Any]]]] = {}
    at_limits: dict[int, list[tuple[int, Mapping[str, Any]]]] = {}
    for class_key, row, _n in classes:
        context = row.get("context_key")
        if context is None:
            groups[("class", class_key)] = [(class_key, row)]
        else:
            at_limits.setdefault(context, []).append((class_key, row))
    limits = every_limit(kb, site)
    for context, members in at_limits.items():
        if len(members) == 1:  # alone in its context: its side decides nothing
            groups[("exact", context)] = members
            continue
        for class_key, row in members:
            groups.setdefault(("exact", context, exact_side(row, kb, limits)), []).append((class_key, row))
    decided: list[tuple[int, Decision]] = []
    for members in groups.values():
        first = min((row for _key, row in members), key=_representative_order)
        decision = decide(first, kb, site)
        decided.extend((class_key, decision) for class_key, _row in members)
    return decided, len(groups)


def _representative_order(row: Mapping[str, Any]) -> tuple[int, str]:
    return (row["row_hash"], row.get("admin_id") or "")


def exact_fraction(value: float) -> Fraction:
    return Fraction(Decimal(repr(value)))


def decision_row(d: Decision) -> tuple[Any, ...]:
    """A decision as the decisions table's columns after the class key."""
    return (
        d.verdict,
        d.statements,
        d.dose_status,
        d.problem,
        d.limit_per_kg,
        d.opioid_tolerance,
        d.opioid_unknown_reason,
        d.limit_cap,
        d.limit_from_site,
        d.guideline_verdict,
        d.guideline_dose_status,
    )


# Each row's own limit for its weight from its class's decision (the engine's ``_effective``: the tighter of
# the limit per kg and a site's cap in mg), for ``duck.findings_sql`` (which Spark's tasks run too), checked
# against ``assess`` row by row (tests/site, tests/review).
ROW_LIMIT_SQL = {
    "limit_per_kg": "CASE WHEN d.limit_cap IS NOT NULL AND m.weight_kg > 0 "
    "THEN least(d.limit_per_kg, d.limit_cap / m.weight_kg) ELSE d.limit_per_kg END",
    "max_for_weight": "CASE WHEN d.limit_cap IS NOT NULL AND m.weight_kg IS NOT NULL "
    "THEN least(d.limit_per_kg * m.weight_kg, d.limit_cap) ELSE d.limit_per_kg * m.weight_kg END",
    "limit_source": "CASE WHEN d.limit_from_site IS NULL THEN NULL WHEN d.limit_from_site "
    "OR (d.limit_cap IS NOT NULL AND m.weight_kg IS NOT NULL AND d.limit_cap < d.limit_per_kg * m.weight_kg) "
    "THEN 'site' ELSE 'guideline' END",
}
