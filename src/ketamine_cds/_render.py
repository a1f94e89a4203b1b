"""Rendering: an ``Assessment`` as the contract's JSON, or as a readable report.

The wording of each finding comes from its statement's file; this module only fills in the values.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ._assessment import (
    Assessment,
    Beside,
    Clause,
    DoseCheck,
    DoseLimits,
    DoseMath,
    DoseRange,
    Drawable,
    Elapsed,
    Finding,
    LimitText,
    Note,
    Outweighed,
    ProcedureRef,
    RoundedLimit,
    SettingName,
    SettingScope,
    SiteNote,
    WeightUsed,
    WithinFrom,
)
from ._dose_policy import Limit
from ._facts import MAX_WEIGHT_KG, Coded, DoseKind, Setting, WeightBasis
from ._kb import SYSTEM_LABELS, KnowledgeBase, Statement, load_knowledge, short_system
from ._site import Site
from ._units import (
    Quantity,
    Unit,
    format_apart,
    format_decimal,
    format_number,
    json_number,
    shown_beside,
    shown_max,
    shown_min,
    shown_weight,
)

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


SUMMARY_MAX = 139
MCG_PER_MIN = Fraction(1000, 60)  # 1 mg/kg/h is 1000/60 mcg/kg/min


def display_value(value: object, *, with_codes: bool = True) -> str:
    """One value of a finding as a clinician reads it (codes are left out of one-line summaries)."""
    if isinstance(value, Coded):
        return _coded(value) if with_codes else _coded_short(value)
    if isinstance(value, DoseMath):
        return _dose_math(value, short=not with_codes)
    if isinstance(value, Clause):
        if value.value is None:
            return ""
        return f"{value.prefix}{clause_text(value, long=with_codes)}{value.suffix}"
    if isinstance(value, WeightUsed):
        return weight_text(value, with_date=with_codes)
    if isinstance(value, DoseRange):
        return _range_text(value)
    if isinstance(value, SettingScope):
        return SETTING_SCOPE_WORDS[value.setting]
    if isinstance(value, SettingName):
        return SETTING_NAMES[value.setting]
    if isinstance(value, ProcedureRef):
        return display_value(value.source, with_codes=with_codes) if value.named else value.unnamed
    if isinstance(value, Elapsed):
        return elapsed_text(value.hours, value.compared_with)
    if isinstance(value, LimitText):
        return limit_text(value)
    if isinstance(value, SiteNote):
        return site_note_text(value)
    if isinstance(value, WithinFrom):
        return within_from_text(value.kg)
    if isinstance(value, Drawable):
        return drawable_text(value)
    if isinstance(value, Beside):
        return f"{format_decimal(shown_beside(value.value, value.compared_with))} {value.unit}"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        number, unit = value
        return "unknown" if number is None else f"{format_number(number)} {unit}"
    if isinstance(value, tuple):
        return "; ".join(display_value(v, with_codes=with_codes) for v in value)
    if isinstance(value, Quantity):
        return str(value)
    if isinstance(value, Fraction):
        return format_number(value)
    return "unknown" if value is None else str(value)


# --- how each number is shown (README, "How numbers are shown") -------------------------------------------


def _is(unit: Unit, factor: Fraction, *, per_kg: bool, hours: tuple[Fraction | None, ...]) -> bool:
    return (
        unit.amount == "mass" and unit.factor == factor and unit.per_kg is per_kg and unit.per_hours in hours
    )


_BOLUS_OR_HOURLY = (None, Fraction(1))


def written_in_amount(unit: Unit) -> bool:
    """An order in mg (a bolus) or mg/h (an infusion): its amount is the number as written."""
    return _is(unit, Fraction(1), per_kg=False, hours=_BOLUS_OR_HOURLY)


def written_per_kg(unit: Unit) -> bool:
    """An order in mg/kg or mg/kg/h: its dose per kg is the number as written."""
    return _is(unit, Fraction(1), per_kg=True, hours=_BOLUS_OR_HOURLY)


def written_per_minute(unit: Unit) -> bool:
    """An order in mcg/kg/min."""
    return _is(unit, Fraction(1, 1000), per_kg=True, hours=(Fraction(1, 60),))


def shown_per_minute(per_kg_per_h: Fraction, limit_per_kg_per_h: Fraction | None) -> Fraction:
    """A rate per kg and hour in mcg/kg/min, on its side of the limit in the same unit."""
    limit = limit_per_kg_per_h * MCG_PER_MIN if limit_per_kg_per_h is not None else None
    return shown_beside(per_kg_per_h * MCG_PER_MIN, limit)


def weight_number(kg: Fraction) -> str:
    return format_decimal(shown_weight(kg))


def within_from_text(kg: Fraction | None) -> str:
    """ "; within the limit for patients of at least 57.2 kg", or nothing (for a weight no patient has:
    "; over the limit at any weight up to 500 kg")."""
    if kg is None:
        return ""
    return f"; {within_from_words(kg)}"


def within_from_words(kg: Fraction) -> str:
    """Without a weight, for which weights a dose in mg (mg/h) is within its limit: from this weight on,
    rounded up to 0.1 kg so that a patient of the weight shown is within it."""
    if kg > MAX_WEIGHT_KG:
        return f"over the limit at any weight up to {format_decimal(MAX_WEIGHT_KG)} kg"
    return f"within the limit for patients of at least {format_decimal(shown_min(kg, 1))} kg"


def largest_measurable(value: Drawable) -> tuple[Fraction, str] | None:
    """(the largest measurable dose, its unit): the maximum rounded down to a step, in mL (mL/h) at a known
    concentration; None when it is no step at all."""
    if value.maximum is None:
        return None
    if value.concentration is not None:
        ml = value.maximum / value.concentration // value.step_ml * value.step_ml
        return (ml, volume_unit(value.unit)) if ml > 0 else None
    amount = value.maximum // value.step * value.step
    return (amount, value.unit) if amount > 0 else None


def drawable_text(value: Drawable) -> str:
    """ "; the largest bolus to draw up, in steps of 0.5 mg, is **24 mg**"; nothing when that is the maximum
    as shown (28 mg for 80 kg) or no step fits under it."""
    found = largest_measurable(value)
    if found is None or value.maximum is None:
        return ""
    amount, unit = found
    bolus = value.unit == "mg"
    step = value.step_ml if unit.startswith("mL") else value.step
    if unit == value.unit and amount == shown_max(value.maximum):
        return ""
    what = "the largest bolus to draw up" if bolus else "the largest rate to set on a pump"
    text = f"; {what}, in steps of {format_decimal(step)} {unit}, is **{format_decimal(amount)} {unit}**"
    if value.concentration is not None:
        text += f" ({format_decimal(amount * value.concentration)} {value.unit})"
    return text


def volume_unit(unit: str) -> str:
    return "mL/h" if unit == "mg/h" else "mL"


def max_near(maximum: Fraction, dose: Fraction | None) -> Fraction | None:
    """The number a maximum must not read below: a dose within it, as the texts show the dose (exactly as
    ordered, or rounded beside the maximum), whichever is the larger."""
    if dose is None or dose > maximum:
        return None
    return max(dose, shown_beside(dose, maximum))


def clause_text(clause: Clause, *, long: bool = True) -> str:
    """A maximum, "28 mg", and in mL at the known concentration, "28 mg = 2.8 mL (of 10 mg/mL)"."""
    assert clause.value is not None
    text = (
        f"{format_decimal(shown_max(clause.value, max_near(clause.value, clause.apart_from)))} {clause.unit}"
    )
    if clause.concentration is not None:
        ml = shown_max(clause.value / clause.concentration, clause.apart_from_ml)
        text += f" = {format_decimal(ml)} {volume_unit(clause.unit)}"
        if long:
            text += f" of {format_decimal(clause.concentration)} mg/mL"
    return text


@dataclass(frozen=True, slots=True)
class DoseTexts:
    """An ordered dose as a clinician reads it: the order exactly as written, and its conversions each
    rounded toward its own side of the limit it is compared with (``shown_beside``), as the JSON is. A
    conversion into the unit the order is written in is left out (it would only repeat the order)."""

    ordered: str  # "0.005 g": as ordered, never rounded
    amount: str | None  # "5 mg", "50 mg/h"; None when unknown or written so
    per_kg: str | None  # "0.353 mg/kg" (0.352375 beside the 0.35 limit); None when unknown or written so
    per_minute: str | None = None  # an infusion in mcg/kg/min: "13.33 mcg/kg/min"

    @property
    def conversions(self) -> tuple[str, ...]:
        return tuple(t for t in (self.amount, self.per_kg, self.per_minute) if t is not None)

    @property
    def short(self) -> str:
        """The order and the one conversion a summary gives: per kg where the limit is per kg."""
        other = self.per_kg or self.amount
        return self.ordered if other is None else f"{self.ordered} ({other})"


def dose_texts(
    ordered: Quantity,
    amount: Fraction | None,
    per_kg: Fraction | None,
    limit_per_kg: Fraction | None,
    limit_amount: Fraction | None,
    amount_unit: str,
) -> DoseTexts:
    infusion = amount_unit == "mg/h"
    per_kg_unit = "mg/kg/h" if infusion else "mg/kg"
    unit = ordered.unit
    per_minute = None
    if infusion and per_kg is not None and not written_per_minute(unit):
        per_minute = f"{format_decimal(shown_per_minute(per_kg, limit_per_kg))} mcg/kg/min"
    return DoseTexts(
        ordered=str(ordered),
        amount=None
        if amount is None or written_in_amount(unit)
        else f"{format_decimal(shown_beside(amount, limit_amount))} {amount_unit}",
        per_kg=None
        if per_kg is None or written_per_kg(unit)
        else f"{format_decimal(shown_beside(per_kg, limit_per_kg))} {per_kg_unit}",
        per_minute=per_minute,
    )


def check_texts(check: DoseCheck) -> DoseTexts:
    unit = "mg" if check.kind is DoseKind.BOLUS else "mg/h"
    return dose_texts(check.ordered, check.amount, check.per_kg, check.limit_per_kg, check.limit_amount, unit)


@dataclass(frozen=True, slots=True)
class CheckDisplay:
    """One checked dose of the order, for the dose table."""

    kind: str  # "bolus" or "infusion"
    status: str  # the DoseStatus value
    texts: DoseTexts
    within_from: str | None  # without a weight: "within the limit for patients of at least 57.2 kg"

    @property
    def ordered(self) -> str:
        return self.texts.ordered

    @property
    def conversions(self) -> tuple[str, ...]:
        return self.texts.conversions


@dataclass(frozen=True, slots=True)
class PumpRow:
    """The maxima at one common concentration (the page's table where the order gives none)."""

    concentration: str  # "10 mg/mL"
    bolus_ml: str | None  # "2.8 mL"
    infusion_ml_per_h: str | None  # "8 mL/h"


@dataclass(frozen=True, slots=True)
class DoseDisplay:
    """The dose table of an assessment, every number as shown, for the readable report and the web page.
    The JSON gives the same numbers (``limits_json``, ``_dose_check_json``)."""

    weight: str | None  # "69.85 kg"; None without a weight
    weight_basis: str | None  # "as given", "measured 2026-11-20", "date of measurement not recorded"
    guideline: str  # "acute" or "chronic"
    bolus_per_kg: str  # "0.35 mg/kg"
    infusion_per_kg: str  # "1 mg/kg/h"
    infusion_per_minute: str  # "16.66 mcg/kg/min" (the limit per kg and hour, rounded down)
    infusion_applies: bool | None  # True outside ICU, False in ICU, None when the setting is not known
    infusion_minimum: str | None  # "0.5 mg/kg/h" (chronic pain: the bottom of the range used)
    max_bolus: str | None  # "24.44 mg"; None without a weight (and no absolute cap)
    max_infusion: str | None  # "62.5 mg/h"
    concentration: str | None = None  # "10 mg/mL", of the order
    max_bolus_ml: str | None = None  # "2.44 mL" at that concentration
    max_infusion_ml: str | None = None  # "6.25 mL/h"
    bolus_guideline: str | None = None  # the guideline's own limit where a site's applies: "0.35 mg/kg"
    infusion_guideline: str | None = None
    check: CheckDisplay | None = None  # the dose that matters most, when the order gives one to check
    checks: tuple[CheckDisplay, ...] = ()  # every dose of the order, in its sequence
    pump: tuple[PumpRow, ...] = ()  # maxima at common concentrations, when the order gives none
    weight_problem: str | None = None  # why the record's body weight is not used (weight is then None)


def _check_display(check: DoseCheck) -> CheckDisplay:
    within = None if check.within_from_kg is None else within_from_words(check.within_from_kg)
    return CheckDisplay(check.kind.value, check.status.value, check_texts(check), within)


def _max_beside(value: Fraction | None, checks: list[DoseCheck], kind: DoseKind) -> Fraction | None:
    """A maximum as shown beside the order's dose of its kind that matters most (never reading below it)."""
    if value is None:
        return None
    dose = next((c.amount for c in checks if c.kind is kind), None)
    return shown_max(value, max_near(value, dose))


def _ml_beside(
    value: Fraction | None, concentration: Fraction, checks: list[DoseCheck], kind: DoseKind
) -> str | None:
    if value is None:
        return None
    near = next(
        (
            Fraction(c.ordered.value)
            for c in checks
            if c.kind is kind and c.ordered.unit.amount == "volume" and c.ordered.unit.factor == 1
        ),
        None,
    )
    return format_decimal(shown_max(value / concentration, near))


def dose_display(assessment: Assessment, concentrations: tuple[Fraction, ...] = ()) -> DoseDisplay:
    """Every number of the dose table as shown. ``concentrations``: the common ketamine concentrations for the
    table of maxima in mL, shown when the order gives no concentration of its own."""
    limits, check = assessment.dose_limits, assessment.dose_check
    ranked = ([check] if check is not None else []) + list(assessment.dose_checks)
    weight = limits.weight
    max_bolus = _max_beside(limits.max_bolus_mg, ranked, DoseKind.BOLUS)
    max_infusion = _max_beside(limits.max_infusion_mg_per_h, ranked, DoseKind.INFUSION)
    concentration = limits.concentration_mg_per_ml
    pump: tuple[PumpRow, ...] = ()
    if concentration is None and (
        limits.max_bolus_mg is not None or limits.max_infusion_mg_per_h is not None
    ):
        pump = tuple(
            PumpRow(
                f"{format_decimal(c)} mg/mL",
                _ml_text(limits.max_bolus_mg, c, "mL"),
                _ml_text(limits.max_infusion_mg_per_h, c, "mL/h"),
            )
            for c in concentrations
        )
    bolus_site = limits.bolus_limit is not None and _source(limits.bolus_limit, limits.weight_kg) == "site"
    infusion_site = (
        limits.infusion_limit is not None and _source(limits.infusion_limit, limits.weight_kg) == "site"
    )
    return DoseDisplay(
        weight=None if weight is None else f"{weight_number(weight.kg)} kg",
        weight_basis=None if weight is None else weight_basis_text(weight),
        guideline=limits.guideline,
        bolus_per_kg=f"{limit_number(limits.bolus_limit_mg_per_kg)} mg/kg",
        infusion_per_kg=f"{limit_number(limits.infusion_limit_mg_per_kg_per_h)} mg/kg/h",
        infusion_per_minute=f"{_per_minute_max(limits.infusion_limit_mg_per_kg_per_h)} mcg/kg/min",
        infusion_applies=limits.infusion_limit_applies,
        infusion_minimum=None
        if limits.infusion_minimum_mg_per_kg_per_h is None
        else f"{limit_number(limits.infusion_minimum_mg_per_kg_per_h)} mg/kg/h",
        max_bolus=None if max_bolus is None else f"{format_decimal(max_bolus)} mg",
        max_infusion=None if max_infusion is None else f"{format_decimal(max_infusion)} mg/h",
        concentration=None if concentration is None else f"{format_decimal(concentration)} mg/mL",
        max_bolus_ml=None
        if concentration is None
        else _unit(_ml_beside(limits.max_bolus_mg, concentration, ranked, DoseKind.BOLUS), "mL"),
        max_infusion_ml=None
        if concentration is None
        else _unit(
            _ml_beside(limits.max_infusion_mg_per_h, concentration, ranked, DoseKind.INFUSION), "mL/h"
        ),
        bolus_guideline=_guideline_text(limits.bolus_limit, "mg/kg") if bolus_site else None,
        infusion_guideline=_guideline_text(limits.infusion_limit, "mg/kg/h") if infusion_site else None,
        check=None if check is None else _check_display(check),
        checks=tuple(_check_display(c) for c in assessment.dose_checks),
        weight_problem=limits.weight_problem,
        pump=pump,
    )


def _per_minute_max(per_kg_per_h: Fraction) -> str:
    return format_decimal(shown_max(per_kg_per_h * MCG_PER_MIN))


def _unit(text: str | None, unit: str) -> str | None:
    return None if text is None else f"{text} {unit}"


def _ml_text(value: Fraction | None, concentration: Fraction, unit: str) -> str | None:
    return None if value is None else f"{format_decimal(shown_max(value / concentration))} {unit}"


def _guideline_text(limit: Limit | None, unit: str) -> str | None:
    return None if limit is None else f"{limit_number(limit.guideline)} {unit}"


def limit_number(value: Fraction) -> str:
    """A limit per kg, as the guideline or the site protocol writes it (an exact decimal: 0.35, 0.333)."""
    try:
        return format_decimal(value)
    except ValueError:  # not a finite decimal (a site's cap in mg over a weight): rounded down
        return format_decimal(shown_max(value))


def _dose_math(dose: DoseMath, *, short: bool) -> str:
    """Summary: "25 mg (0.31 mg/kg)"; detail: "**25 mg** = **0.31 mg/kg** for a weight of 80 kg"."""
    texts = dose_texts(
        dose.ordered, dose.amount, dose.per_kg, dose.limit_per_kg, dose.limit_amount, dose.amount_unit
    )
    if short:
        return texts.short
    parts = [f"**{texts.ordered}**"]
    if texts.amount is not None:
        parts.append(texts.amount)
    if texts.per_kg is not None:
        parts.append(f"**{texts.per_kg}**")
    if texts.per_minute is not None:
        parts.append(texts.per_minute)
    text = " = ".join(parts)
    if dose.weight is None:
        if dose.ordered.unit.per_kg:
            return text + " (no usable body weight is recorded, so it is not worked out in mg)"
        return text + " (no usable body weight is recorded, so it is not worked out per kg)"
    return text + f" for a weight of {weight_text(dose.weight)}"


SETTING_SCOPE_WORDS: Mapping[Setting, str] = {
    Setting.INTENSIVE_CARE: "in intensive care",
    Setting.NON_INTENSIVE_CARE: "outside intensive care",
    Setting.UNKNOWN: "outside intensive care (the setting is not recorded, so the limit that applies "
    "outside it applies unless the patient is in intensive care)",
}


SETTING_NAMES: Mapping[Setting, str] = {
    Setting.INTENSIVE_CARE: "intensive care",
    Setting.NON_INTENSIVE_CARE: "not intensive care",
    Setting.UNKNOWN: "not recorded",
}


def weight_basis_text(weight: WeightUsed) -> str:
    if weight.basis is WeightBasis.MEASURED and weight.measured is not None:
        return f"measured {weight.measured.isoformat()}"
    if weight.basis is WeightBasis.UNDATED:
        return "date of measurement not recorded"
    return "as given"


def weight_text(weight: WeightUsed, *, with_date: bool = True) -> str:
    """ "80 kg (measured 2026-11-20)", "80 kg (as given)": every dose worked out from a weight says which."""
    kg = f"{weight_number(weight.kg)} kg"
    return f"{kg} ({weight_basis_text(weight)})" if with_date else kg


def elapsed_text(hours: Fraction, compared_with: Fraction | None = None) -> str:
    """A duration: "45 min", "2.5 h", "12 days" (days from 72 hours on, for the age of a weight); beside the
    duration it is checked against, on its side of it."""
    if hours >= 72:
        days = hours / 24
        return f"{format_number(days, 0)} days"
    if hours < 1:
        other = compared_with * 60 if compared_with is not None else None
        return f"{format_decimal(shown_beside(hours * 60, other, places=0))} min"
    return f"{format_decimal(shown_beside(hours, compared_with))} h"


def limit_text(value: LimitText) -> str:
    """ "0.35 mg/kg"; "site protocol's 20 mg" where a site's cap decides."""
    if value.amount is not None:
        return f"site protocol's {limit_number(value.amount)} {value.amount_unit}"
    shown = f"{limit_number(value.per_kg)} {value.per_kg_unit}"
    if value.cap_unweighed is not None:
        return f"site protocol's {shown}, at most {limit_number(value.cap_unweighed)} {value.amount_unit}"
    return f"site protocol's {shown}" if value.per_kg_from_site else shown


def site_note_text(value: SiteNote) -> str:
    guideline = f"{limit_number(value.guideline_per_kg)} {value.per_kg_unit}"
    if value.guideline_amount is not None:
        guideline += (
            f", {format_decimal(shown_max(value.guideline_amount))} {value.amount_unit} for this weight"
        )
    key = "site-above-guideline" if value.above_guideline else "site-limit"
    return load_knowledge().notes[key].summary.format(site=value.site, guideline=guideline)


def _range_text(value: DoseRange) -> str:
    """ "0.5-2 mg/kg/h (40-160 mg/h for 80 kg)": the bottom rounded up and the top down, so that both ends
    shown are in the range."""
    text = f"{limit_number(value.low_per_kg)}-{limit_number(value.high_per_kg)} mg/kg/h"
    if value.weight is None:
        return text
    low = format_decimal(shown_min(value.low_per_kg * value.weight.kg))
    high = format_decimal(shown_max(value.high_per_kg * value.weight.kg))
    return f"{text} ({low}-{high} mg/h for {weight_number(value.weight.kg)} kg)"


def _coded(coded: Coded) -> str:
    """ "Schizophrenia (ICD-10-CM F20.9)"; a code the record gives without its name: "ICD-10-CM F20.9 (its
    name is not given)", never the bare code as if it were a name."""
    short = short_system(coded.system)
    label = SYSTEM_LABELS[short] if short else None
    if coded.code and label:
        if _unnamed(coded):
            return f"{label} {coded.code} (its name is not given)"
        return f"{coded.display} ({label} {coded.code})"
    return coded.display


def _coded_short(coded: Coded) -> str:
    """In a one-line summary: the name, or the code system and code where the record gives no name."""
    short = short_system(coded.system)
    if coded.code and short and _unnamed(coded):
        return f"{SYSTEM_LABELS[short]} {coded.code} (name not given)"
    return coded.display


def _unnamed(coded: Coded) -> bool:
    return not coded.display.strip() or coded.display.strip() == coded.code


class _Params(dict[str, str]):
    """A finding's values, each written out only when the template names it (most name a few).
    ``{grade}`` is the statement's own grade and certainty, never written into a template by hand."""

    def __init__(self, finding: Finding, *, with_codes: bool) -> None:
        super().__init__(grade=finding.statement.grade_phrase)
        self._values = finding.params
        self._with_codes = with_codes

    def __missing__(self, key: str) -> str:
        derived = self._derived(key)
        if derived is not None:
            self[key] = derived
            return derived
        if key not in self._values:
            return "{" + key + "}"
        text = self[key] = display_value(self._values[key], with_codes=self._with_codes)
        return text

    def _derived(self, key: str) -> str | None:
        """Wording worked out from another value: "{Kind}" from "kind", "{procedure_named}" from
        "procedure", "{within_from_sentence}" from "within_from"."""
        values = self._values
        if key == "Kind" and "kind" in values:
            return str(values["kind"]).capitalize()
        procedure = values.get("procedure")
        if key == "procedure_named" and isinstance(procedure, ProcedureRef):
            if not procedure.named:
                return " (only its class is given, not its name)"
            return f", **{display_value(procedure.source, with_codes=self._with_codes)}**,"
        within = values.get("within_from")
        if key == "within_from_sentence" and isinstance(within, WithinFrom):
            return "" if within.kg is None else f" It is {within_from_words(within.kg)}."
        return None


def finding_summary(finding: Finding) -> str:
    """The one-line summary of a finding, filled in (codes left out), at most SUMMARY_MAX characters. A
    supportive finding beside a contraindication that decides the verdict says first that it is outweighed."""
    summary = finding.message.summary.format_map(_Params(finding, with_codes=False))
    if isinstance(finding.params.get("outweighed"), Outweighed):
        summary = load_knowledge().notes["outweighed-summary"].summary.format(summary=summary)
    if len(summary) > SUMMARY_MAX:
        summary = summary[: SUMMARY_MAX - 1].rstrip() + "…"
    return summary


def finding_texts(finding: Finding) -> tuple[str, str]:
    """The summary and markdown detail of a finding, filled in; a finding whose limit a site's protocol set
    ends with a line saying so (every one of them, whatever its wording), and a supportive finding beside a
    contraindication that decides the verdict with a line saying it is outweighed."""
    detail = finding.message.detail.format_map(_Params(finding, with_codes=True))
    note = finding.params.get("site_note")
    if isinstance(note, SiteNote):
        detail += " " + site_note_text(note)
    rounding = finding.params.get("rounding")
    if isinstance(rounding, RoundedLimit):
        detail += " " + rounded_limit_text(rounding, finding.params.get("ordered"))
    outweighed = finding.params.get("outweighed")
    if isinstance(outweighed, Outweighed):
        condition = display_value(outweighed.condition) or "a relative contraindication"
        detail += " " + load_knowledge().notes["outweighed"].summary.format(condition=condition)
    return finding_summary(finding), detail


def _decimal_digits(value: Fraction, places: int = 6) -> str:
    """A number written out exactly when it ends, else its first digits and "…": 16.666666… (50/3)."""
    scaled = value * 10**places
    if scaled.denominator == 1:
        return format_number(value, places)
    whole = Decimal(int(scaled)) / Decimal(10**places)
    return f"{whole:f}…"


def rounded_limit_text(value: RoundedLimit, ordered: object) -> str:
    """The finding's words for an order that writes the limit rounded: "the limit is 16.666666… mcg/kg/min,
    so 16.67 mcg/kg/min is over it by 0.02%"."""
    limit = f"{_decimal_digits(value.limit_in_ordered_unit)} {value.unit}"
    excess = f"{format_apart(value.excess * 100, Fraction(0))}%"
    return (
        load_knowledge()
        .notes["rounded-limit"]
        .summary.format(limit=limit, ordered=display_value(ordered), excess=excess)
    )


def verdict_reason(assessment: Assessment) -> str:
    """One line on why: the decisive finding's summary, or the engine's reason when no finding decided."""
    if assessment.decisive is not None:
        return finding_summary(assessment.decisive)
    return assessment.reason


def sorted_findings(assessment: Assessment) -> list[Finding]:
    return sorted(assessment.findings, key=lambda f: _SEVERITY_ORDER[f.severity])


def _beside(value: Fraction | None, limit: Fraction | None) -> float | None:
    """A dose as a JSON number beside its limit: the number the texts show (``shown_beside``), at 2 decimals
    in its direction: down when within the limit and up when over it, never onto the other side."""
    if value is None:
        return None
    if limit is None:  # the display, half up (a dose above zero is never 0: 0.0045 mg is shown 0.005, 0.01)
        return json_number(shown_beside(value, None))
    return json_number(shown_beside(value, limit), "down" if value <= limit else "up")


def _max_number(value: Fraction | None) -> float | None:
    return None if value is None else json_number(shown_max(value), "down")


def _number(value: Fraction | None) -> float | None:
    return None if value is None else json_number(value)


def _weight_number(value: Fraction | None) -> float | None:
    return None if value is None else json_number(shown_weight(value), "down")


def source_json(statement: Statement) -> dict[str, str]:
    return {"label": statement.source.label, "url": statement.source.url}


def finding_json(finding: Finding) -> dict[str, Any]:
    summary, detail = finding_texts(finding)
    st = finding.statement
    return {
        "statement": st.id,
        "severity": finding.severity,
        "summary": summary,
        "detail": detail,
        "grade": st.grade,
        "certainty": st.certainty,
        "source": source_json(st),
        "title": st.title,
        "evidence": st.evidence,
        "verification": list(st.tags),
        "sources": [{"label": s.label, "url": s.url} for s in st.sources],
        "verification_note": st.verification_note,
        "overridable": st.overridable,
    }


def limits_json(limits: DoseLimits, setting: str) -> dict[str, Any]:
    weight = limits.weight
    concentration = limits.concentration_mg_per_ml
    return {
        "weight_kg": _weight_number(limits.weight_kg),
        "max_bolus_mg": _max_number(limits.max_bolus_mg),
        "max_infusion_mg_per_h": _max_number(limits.max_infusion_mg_per_h),
        "bolus_limit_mg_per_kg": _number(limits.bolus_limit_mg_per_kg),
        "infusion_limit_mg_per_kg_per_h": _number(limits.infusion_limit_mg_per_kg_per_h),
        "infusion_limit_applies": limits.infusion_limit_applies,
        "infusion_minimum_mg_per_kg_per_h": _number(limits.infusion_minimum_mg_per_kg_per_h),
        "guideline": limits.guideline,
        "bolus_statement": limits.bolus_statement,
        "infusion_statement": limits.infusion_statement,
        "weight_basis": weight.basis.value if weight is not None else None,
        "weight_measured": weight.measured.isoformat() if weight and weight.measured else None,
        "weight_problem": limits.weight_problem,
        "bolus_limit_source": _source(limits.bolus_limit, limits.weight_kg),
        "infusion_limit_source": _source(limits.infusion_limit, limits.weight_kg),
        "guideline_bolus_limit_mg_per_kg": _guideline_number(limits.bolus_limit),
        "guideline_infusion_limit_mg_per_kg_per_h": _guideline_number(limits.infusion_limit),
        "setting": setting,
        "infusion_limit_mcg_per_kg_per_min": _max_number(limits.infusion_limit_mg_per_kg_per_h * MCG_PER_MIN),
        "concentration_mg_per_ml": _number(concentration),
        "max_bolus_ml": _ml_number(limits.max_bolus_mg, concentration),
        "max_infusion_ml_per_h": _ml_number(limits.max_infusion_mg_per_h, concentration),
    }


def _ml_number(value: Fraction | None, concentration: Fraction | None) -> float | None:
    return None if value is None or concentration is None else _max_number(value / concentration)


def _source(limit: Limit | None, weight_kg: Fraction | None) -> str:
    if limit is None or not limit.from_site:
        return "guideline"
    capped = limit.max_amount is not None and (
        weight_kg is None or limit.max_amount < limit.per_kg * weight_kg
    )
    return "site" if limit.guideline_per_kg is not None or capped else "guideline"


def _guideline_number(limit: Limit | None) -> float | None:
    return None if limit is None else _number(limit.guideline)


def site_json(site: Site | None) -> dict[str, str] | None:
    return None if site is None else {"name": site.name, "version": site.version, "digest": site.digest}


def note_text(note: Note, kb: KnowledgeBase) -> str:
    return kb.notes[note.key].summary.format_map({k: display_value(v) for k, v in note.params.items()})


def _dose_check_json(check: DoseCheck) -> dict[str, Any]:
    bolus = check.kind is DoseKind.BOLUS
    return {
        "statement": check.statement,
        "kind": check.kind.value,
        "ordered": str(check.ordered),
        "amount": _beside(check.amount, check.limit_amount),
        "amount_unit": "mg" if bolus else "mg/h",
        "per_kg": _beside(check.per_kg, check.limit_per_kg),
        "per_kg_unit": "mg/kg" if bolus else "mg/kg/h",
        "limit_per_kg": _number(check.limit_per_kg),
        "limit_amount": _max_number(check.limit_amount),
        "limit_source": check.limit_source,
        "guideline_limit_per_kg": _number(check.guideline_limit_per_kg),
        "guideline_limit_amount": _max_number(check.guideline_limit_amount),
        "status": check.status.value,
        "dose_index": check.index,
        "rate_mcg_per_kg_per_min": None
        if bolus or check.per_kg is None
        else json_number(
            shown_per_minute(check.per_kg, check.limit_per_kg),
            "down" if check.per_kg <= check.limit_per_kg else "up",
        ),
        "within_limit_from_weight_kg": None
        if check.within_from_kg is None
        else json_number(shown_min(check.within_from_kg, 1), "up"),
    }


def assessment_json(assessment: Assessment, kb: KnowledgeBase | None = None) -> dict[str, Any]:
    """The assessment as the contract's JSON object (plus documented extra fields)."""
    kb = kb or load_knowledge()
    check = assessment.dose_check
    use = kb.uses.get(assessment.use) if assessment.use else None
    return {
        "verdict": assessment.verdict.value,
        "verdict_reason": verdict_reason(assessment),
        "findings": [finding_json(f) for f in sorted_findings(assessment)],
        "dose_limits": limits_json(assessment.dose_limits, assessment.setting.value),
        "dose_check": None if check is None else _dose_check_json(check),
        "dose_checks": [_dose_check_json(c) for c in assessment.dose_checks],
        "notes": [
            {"note": n.key, "severity": kb.notes[n.key].severity, "text": note_text(n, kb)}
            for n in assessment.notes
        ],
        "missing_information": [
            {"datum": m.datum, "reason": m.reason, "statement": m.statement, "decisive": m.decisive}
            for m in assessment.missing
        ],
        "screening": [
            {
                "statement": s.statement,
                "concept": s.concept,
                "status": s.status.value,
                "evidence": [_coded(e) for e in s.evidence],
            }
            for s in assessment.screening
        ],
        "opioid_use": {
            "tolerant": assessment.opioid.tolerant.value,
            "dependent": assessment.opioid.dependent.value,
            "mme_per_day": _number(assessment.opioid.mme_per_day),
            "basis": assessment.opioid.basis,
        },
        "question": {
            "use": assessment.use,
            "use_label": use.label if use else None,
            "route": assessment.route.value,
            "setting": assessment.setting.value,
            "as_of": assessment.as_of.isoformat(),
        },
        "site": site_json(assessment.site),
        "knowledge_base": {
            "version": assessment.knowledge_base_version,
            "digest": assessment.knowledge_base_digest,
            "guideline": kb.guideline,
        },
    }


# --- the readable report ----------------------------------------------------------------------------

VERDICT_WORDS: Mapping[str, str] = {
    "out-of-scope": "Outside this guideline",
    "contraindicated": "Contraindicated",
    "dose-exceeds-limit": "Dose exceeds the limit",
    "not-indicated": "Not indicated",
    "insufficient-evidence": "Insufficient evidence",
    "needs-information": "More information needed",
    "consider": "Consider ketamine",
    "may-consider": "Ketamine may be considered",
}
SCREENING_WORDS: Mapping[str, str] = {
    "present": "PRESENT",
    "absent": "ruled out in the record",
    "not-recorded": "not found in the record",
    "unknown": "unknown: verify",
}
SCREENING_NOTE = '"not found" is not "ruled out"'


def grade_line(statement: Statement, detail: str) -> str | None:
    """The grade beside a finding's detail; None where the detail already says that neither is stated (a
    finding says "not stated" once)."""
    if statement.grade is None and statement.certainty is None and statement.grade_phrase in detail:
        return None
    return grade_words(statement)


def grade_words(statement: Statement) -> str:
    """ "grade C, certainty moderate"; "grade and certainty not stated" (said once, not twice)."""
    if statement.grade is None and statement.certainty is None:
        text = "grade and certainty not stated"
    else:
        text = f"grade {statement.grade_text}, certainty {statement.certainty or 'not stated'}"
    return f"{text}; evidence {statement.evidence}" if statement.evidence else text


def sentence(text: str) -> str:
    """A text that stands as a sentence of its own: its first letter a capital, a full stop at its end."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _plain(markdown: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"\1", markdown)


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent)


def text_report(assessment: Assessment, kb: KnowledgeBase | None = None) -> str:
    kb = kb or load_knowledge()
    data = assessment_json(assessment, kb)
    lines = [f"Verdict: {assessment.verdict.value.upper()}"]
    if data["verdict_reason"]:
        lines.append(_wrap(data["verdict_reason"], "  "))
    for note in data["notes"]:
        lines += ["", _wrap(f"Note: {note['text']}", "")]
    q = data["question"]
    lines += [
        "",
        f"Question: {q['use_label'] or 'indication not stated'}; route {q['route']}; setting {q['setting']}",
    ]
    lines += ["", "Findings:" if assessment.findings else "Findings: none"]
    for finding in sorted_findings(assessment):
        summary, detail = finding_texts(finding)
        st = finding.statement
        lines.append(f"  [{finding.severity}] {summary}")
        grade = grade_line(st, detail)
        lines.append(f"    {st.id}: {grade}" if grade else f"    {st.id}")
        lines.append(_wrap(_plain(detail), "    "))
        lines.append(_wrap(f"Source: {st.source.label}. {st.source.url}", "    "))
    doses = dose_display(assessment)
    lines += ["", *limits_lines(doses)]
    lines += [f"  {ordered_line(c)}" for c in doses.checks]
    if assessment.missing:
        lines += ["", "Missing information:"]
        lines += [_wrap(f"- {m.datum}: {m.reason}", "  ") for m in assessment.missing]
    lines += ["", f"Contraindication and caution screening (from the record; {SCREENING_NOTE}):"]
    for s in data["screening"]:
        evidence = f" ({'; '.join(s['evidence'])})" if s["evidence"] else ""
        lines.append(f"  {s['statement']:30} {SCREENING_WORDS[s['status']]}{evidence}")
    opioid = data["opioid_use"]
    mme = assessment.opioid.mme_per_day
    mme_text = f", {format_number(mme)} MME/day" if mme is not None else ""
    lines += ["", f"Opioid tolerance: {opioid['tolerant']}; dependence: {opioid['dependent']}{mme_text}"]
    lines.append(_wrap(sentence(opioid["basis"]), "  "))
    kbd = data["knowledge_base"]
    lines += [
        "",
        f"Knowledge base {kbd['version']} ({kbd['digest']}), {kbd['guideline']}; as of {q['as_of']}.",
        *(
            [f"Site protocol: {data['site']['name']} ({data['site']['version']}, {data['site']['digest']})."]
            if data["site"]
            else []
        ),
    ]
    return "\n".join(lines) + "\n"


INFUSION_SCOPE_WORDS: Mapping[bool | None, str] = {
    True: "outside intensive care",
    False: "in intensive care",
    None: "unless the patient is in intensive care: setting not recorded",
}
DOSE_STATUS_WORDS: Mapping[str, str] = {
    "within": "within the limit",
    "below-range": "below the range used for chronic pain (information, not an error)",
    "exceeds": "exceeds the limit",
    "exceeds-unless-intensive-care": (
        "exceeds the limit unless the patient is in intensive care (setting not known)"
    ),
    "cannot-check-no-weight": "cannot be checked: no body weight",
    "cannot-check-no-concentration": "cannot be checked: the concentration (mg/mL) is not given",
}


def ordered_line(check: CheckDisplay) -> str:
    """ "Ordered infusion: 5 mL/h (50 mg/h, 0.8 mg/kg/h, 13.33 mcg/kg/min) -> within the limit"."""
    conversions = f" ({', '.join(check.conversions)})" if check.conversions else ""
    status = DOSE_STATUS_WORDS.get(check.status, check.status)
    within = f"; {check.within_from}" if check.within_from else ""
    return f"Ordered {check.kind}: {check.ordered}{conversions} -> {status}{within}"


def limits_head(doses: DoseDisplay) -> str:
    guideline = "chronic pain range" if doses.guideline == "chronic" else "acute pain limits"
    concentration = f"; concentration {doses.concentration}" if doses.concentration else ""
    if doses.weight is None and doses.weight_problem:
        unused = f"the body weight is not used: {doses.weight_problem}"
        return f"Dose limits ({guideline}; {unused}{concentration}):"
    if doses.weight is None:
        return f"Dose limits ({guideline}; no body weight recorded{concentration}):"
    return f"Dose limits for {doses.weight} ({guideline}; weight {doses.weight_basis}{concentration}):"


def bolus_limit_text(doses: DoseDisplay) -> str:
    """ "max 24.44 mg = 2.44 mL (0.35 mg/kg, in every setting)"; "max 0.35 mg/kg, in every setting"."""
    if doses.max_bolus is None:
        text = f"max {doses.bolus_per_kg}, in every setting"
    else:
        ml = f" = {doses.max_bolus_ml}" if doses.max_bolus_ml else ""
        text = f"max {doses.max_bolus}{ml} ({doses.bolus_per_kg}, in every setting)"
    if doses.bolus_guideline:
        text += f"; site protocol, the guideline's is {doses.bolus_guideline}"
    return text


def infusion_limit_text(doses: DoseDisplay) -> str:
    """ "max 62.5 mg/h = 6.25 mL/h (1 mg/kg/h or 16.66 mcg/kg/min, outside intensive care)"."""
    rate = f"{doses.infusion_per_kg} or {doses.infusion_per_minute}"
    where = INFUSION_SCOPE_WORDS[doses.infusion_applies]
    if doses.max_infusion is None:
        text = f"max {rate}, {where}"
    else:
        ml = f" = {doses.max_infusion_ml}" if doses.max_infusion_ml else ""
        text = f"max {doses.max_infusion}{ml} ({rate}, {where})"
    if doses.infusion_minimum:
        text += f"; range used from {doses.infusion_minimum}"
    if doses.infusion_guideline:
        text += f"; site protocol, the guideline's is {doses.infusion_guideline}"
    return text


def limits_lines(doses: DoseDisplay) -> list[str]:
    return [
        limits_head(doses),
        f"  IV bolus     {bolus_limit_text(doses)}",
        f"  IV infusion  {infusion_limit_text(doses)}",
    ]
