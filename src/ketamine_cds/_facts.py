"""Clinical facts: the engine's only input.

Adapters (case document, FHIR, web form, audit rows) turn their input into ``Facts``; the engine never
sees JSON, FHIR or rows. Every fact keeps the three states a record can be in: present, absent from
the record, and unknown (the record was not available).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import TYPE_CHECKING

from ._errors import ImpossibleValueError, WrongDimensionError
from ._units import Quantity

if TYPE_CHECKING:
    from ._opioids import Tolerance


class Setting(StrEnum):
    INTENSIVE_CARE = "intensive-care"
    NON_INTENSIVE_CARE = "non-intensive-care"
    UNKNOWN = "unknown"


class Route(StrEnum):
    INTRAVENOUS = "intravenous"
    ORAL = "oral"
    INTRANASAL = "intranasal"


ROUTE_WORDS = {
    "intravenous": Route.INTRAVENOUS,
    "iv": Route.INTRAVENOUS,
    "oral": Route.ORAL,
    "intranasal": Route.INTRANASAL,
    "nasal": Route.INTRANASAL,
}


class DoseKind(StrEnum):
    BOLUS = "bolus"
    INFUSION = "infusion"


class WeightBasis(StrEnum):
    """Where a body weight comes from, so that every dose worked out from it can say so."""

    GIVEN = "given"  # stated in the question (case document, web form, an audit row's weight in effect)
    MEASURED = "measured"  # a recorded measurement with its date
    UNDATED = "undated"  # a recorded measurement without a date


class Pain(StrEnum):
    """Expected postoperative pain of a planned procedure."""

    SEVERE = "severe"
    MILD = "mild"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Coded:
    """Where a fact came from: the words and code as recorded."""

    display: str
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ConditionFact:
    """A condition in the record, classified into a knowledge-base concept."""

    concept: str
    source: Coded


@dataclass(frozen=True, slots=True)
class PlannedProcedure:
    source: Coded
    procedure_class: str | None  # knowledge-base procedure class; None when the code is not classified


@dataclass(frozen=True, slots=True)
class OpioidUse:
    """One opioid prescription or statement, reduced to what tolerance needs.

    ``daily_amount`` is mg/day, or mcg/h for transdermal fentanyl; None when the dosage could not be read,
    and None for an opioid taken as needed (``as_needed``): the dosage then gives at most the largest amount
    allowed, not the amount actually taken.
    """

    ingredient: str
    daily_amount: Fraction | None
    start: date | None
    end: date | None
    source: Coded
    as_needed: bool = False

    def __post_init__(self) -> None:
        if self.as_needed and self.daily_amount is not None:
            raise ValueError("an opioid taken as needed has no known daily amount: give daily_amount=None")


@dataclass(frozen=True, slots=True)
class OrderDose:
    """One dose an order gives: an IV bolus or infusion rate, or an oral or intranasal dose (kind None).

    For an infusion, ``duration_h`` is how long it runs and ``total`` the amount it delivers, where the order
    says (FHIR: a ``doseQuantity`` beside the rate, ``timing.repeat.duration``); either gives the other."""

    kind: DoseKind | None
    dose: Quantity
    duration_h: Fraction | None = None
    total: Quantity | None = None


@dataclass(frozen=True, slots=True)
class KetamineOrder:
    """A ketamine order. Most give one dose; some give more (a loading bolus, then an infusion), and the
    ones after the first are in ``then``: every one of them is checked.

    ``dose_unreadable`` says why a dose the order writes down could not be read (a dosage given only as
    text): that dose is not checked, and the assessment says so.
    """

    route: Route
    kind: DoseKind | None  # None for oral and intranasal orders
    dose: Quantity | None  # None when the order carries no dose (an eligibility question with a route)
    concentration_mg_per_ml: Fraction | None = None
    pca_sole_agent: bool = False
    source: Coded = Coded("ketamine")
    then: tuple[OrderDose, ...] = ()
    dose_unreadable: str | None = None
    duration_h: Fraction | None = None  # of the first dose, an infusion
    total: Quantity | None = None  # what the first dose, an infusion, delivers

    @property
    def doses(self) -> tuple[OrderDose, ...]:
        first = (
            (OrderDose(self.kind, self.dose, self.duration_h, self.total),) if self.dose is not None else ()
        )
        return first + self.then


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the engine may use about one clinical question.

    ``conditions`` is None when the patient's conditions could not be read at all (unknown), and an empty
    tuple when they were read and none matched (absent from the record). ``opioids`` likewise.
    ``ruled_out`` holds concepts the record explicitly excludes (e.g. a negative pregnancy status), and
    ``stated`` conditions known from a direct answer (a pregnancy stated on the form) even where the
    condition list itself is unknown: they are present either way.
    ``weight_problem`` says why a body weight the record holds is not used (``weight_kg`` is then None).
    ``opioid_tolerance`` is a tolerance already decided with the engine's rule (``_opioids.opioid_tolerance``:
    the batch audit decides it once per patient and day) or known to the caller; when it is given, ``opioids``
    is not read again.
    """

    as_of: date
    use: str | None = None
    use_source: Coded | None = None
    weight_kg: Fraction | None = None
    weight_basis: WeightBasis = WeightBasis.GIVEN
    weight_measured: date | None = None  # when the weight was measured (WeightBasis.MEASURED)
    # why the record's body weight is not used (weight_kg None): two weights at one time that disagree, a
    # weight given only as a bound. The answer then says so, and needs the weight.
    weight_problem: str | None = None
    setting: Setting = Setting.UNKNOWN
    conditions: tuple[ConditionFact, ...] | None = ()
    ruled_out: frozenset[str] = frozenset()
    stated: tuple[ConditionFact, ...] = ()
    procedure: PlannedProcedure | None = None
    opioids: tuple[OpioidUse, ...] | None = ()
    opioid_tolerance: Tolerance | None = None
    order: KetamineOrder | None = None
    prior_iv_ketamine: bool | None = None
    age_years: int | None = None
    sex: str | None = None


def ketamine_order(
    *,
    route: Route,
    dose: Quantity | None,
    kind: DoseKind | None = None,
    concentration_mg_per_ml: Fraction | None = None,
    pca_sole_agent: bool = False,
    source: Coded = Coded("ketamine"),
    field: str = "order",
    then: tuple[OrderDose, ...] = (),
    dose_unreadable: str | None = None,
    duration_h: Fraction | None = None,
    total: Quantity | None = None,
) -> KetamineOrder:
    """Build a checked order: every adapter goes through here, so the same input errors everywhere.

    An IV dose in a mass unit is a bolus and a rate unit is an infusion; a stated ``kind`` must agree.
    The doses in ``then`` must already be checked (``checked_dose``).
    """
    if dose is not None:
        first = checked_dose(route, dose, kind, field, duration_h, total)
        kind, duration_h, total = first.kind, first.duration_h, first.total
    elif route is not Route.INTRAVENOUS:
        kind = None
    return KetamineOrder(
        route=route,
        kind=kind,
        dose=dose,
        concentration_mg_per_ml=concentration_mg_per_ml,
        pca_sole_agent=pca_sole_agent,
        source=source,
        then=then,
        dose_unreadable=dose_unreadable,
        duration_h=duration_h,
        total=total,
    )


def checked_dose(
    route: Route,
    dose: Quantity,
    kind: DoseKind | None,
    field: str,
    duration_h: Fraction | None = None,
    total: Quantity | None = None,
) -> OrderDose:
    """One dose of an order, its kind implied by its unit for IV (a stated kind must agree). A duration or
    total is kept for an IV infusion only (what it runs for and delivers), and must be above zero."""
    if route is not Route.INTRAVENOUS:
        _check_dose_value(dose, field)
        return OrderDose(None, dose)
    implied = DoseKind.INFUSION if dose.unit.is_rate else DoseKind.BOLUS
    if kind is not None and kind is not implied:
        wanted = (
            "a rate (e.g. mg/h, mg/kg/h, mcg/kg/min, mL/h)"
            if kind is DoseKind.INFUSION
            else "an amount (mg, mg/kg)"
        )
        raise WrongDimensionError(
            f"{field}.dose.unit", f"an IV {kind.value} needs {wanted}, not {dose.unit.text!r}"
        )
    _check_dose_value(dose, field)
    if implied is not DoseKind.INFUSION:
        return OrderDose(implied, dose)
    if duration_h is not None and duration_h <= 0:
        raise ImpossibleValueError(f"{field}.duration", "an infusion's duration must be above zero")
    if total is not None:
        if total.unit.is_rate:
            raise WrongDimensionError(
                f"{field}.total.unit", f"the amount an infusion delivers is not a rate ({total.unit.text!r})"
            )
        _check_dose_value(total, f"{field}.total")
    return OrderDose(implied, dose, duration_h, total)


def _check_dose_value(dose: Quantity, field: str) -> None:
    if not dose.value.is_finite() or dose.value <= 0:
        raise ImpossibleValueError(
            f"{field}.dose.value", f"a dose must be a positive number, not {dose.value}"
        )


MAX_WEIGHT_KG = Fraction(500)
# Not a guideline figure: a plausibility floor. The lightest newborns known to have survived weighed about
# 0.21-0.25 kg (212 g, Singapore 2020; 245 g, San Diego 2018; the University of Iowa's "Tiniest Babies"
# registry), so a body weight under 0.2 kg is a wrong unit or a typing error (70 g, 70 mg), not a patient.
# Any mass unit is read (the contract's FHIR weight is "any mass unit"); mg and mcg weights fail here.
MIN_WEIGHT_KG = Fraction(1, 5)


def checked_weight(weight_kg: Fraction, field: str = "weight") -> Fraction:
    """A body weight that a patient can have: at least 0.2 kg and at most 500 kg.

    Every adapter (case document, FHIR, web form, audit rows, ``limits --weight``) comes through here.
    """
    if weight_kg <= 0:
        raise ImpossibleValueError(field, f"a body weight must be above zero (got {_kg(weight_kg)} kg)")
    if weight_kg < MIN_WEIGHT_KG:
        raise ImpossibleValueError(
            field,
            f"a body weight under 0.2 kg is not plausible (got {_kg(weight_kg)} kg); check the unit",
        )
    if weight_kg > MAX_WEIGHT_KG:
        raise ImpossibleValueError(
            field, f"a body weight over 500 kg is not plausible (got {_kg(weight_kg)} kg)"
        )
    return weight_kg


def _kg(weight_kg: Fraction) -> str:
    """A weight for an error message (as the batch audit writes it too), safe beyond a float's range."""
    try:
        return f"{float(weight_kg):g}"
    except OverflowError:
        return f"{Decimal(weight_kg.numerator) / Decimal(weight_kg.denominator):.6g}"
