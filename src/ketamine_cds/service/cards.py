"""CDS Hooks cards from an ``Assessment``.

The wording comes from the renderer (``finding_texts``), which fills in each statement's own text; this module
only decides which findings become cards for which hook, and adds what CDS Hooks 2.0 asks of a card: uuid,
indicator, source (with the statement's grade), links, a suggestion that brings an over-limit dose down to the
limit, and coded override reasons.

- ``order-sign`` is the safety check at signing: only interruptive cards, for a contraindication the record
  shows and a dose over its limit. Anything else there would be noise that trains clinicians to click past
  the cards that matter.
- ``order-select`` is the informational moment: every finding of the assessment becomes a card (supportive
  evidence as ``info``, cautions and missing information as ``warning``), the interruptive ones included.
- ``patient-view`` never interrupts: its cards (``advisory_card``) are ``info`` or ``warning``, without
  suggestions or override reasons (no order is being written).

A call answered without part of the record gets one more card, ``data_not_read_card``, naming what could not
be read and what the answer lacks for it (at order-sign only the data the safety check depends on).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Any

from .._assessment import Assessment, DoseCheck, DoseStatus, Finding, Note
from .._dose_policy import CEILING
from .._errors import InputError
from .._facts import DoseKind
from .._kb import OverrideReason, Statement, load_knowledge
from .._render import (
    INFUSION_SCOPE_WORDS,
    SUMMARY_MAX,
    VERDICT_WORDS,
    finding_texts,
    grade_words,
    note_text,
    sorted_findings,
    verdict_reason,
)
from .._site import Site
from .._units import format_decimal, format_max, format_number, shown_weight
from ..adapters.fhir import order_dose_positions

Json = dict[str, Any]

GUIDELINE = "ASRA/AAPM/ASA 2018 ketamine guideline"
_GUIDELINE_SOURCES = frozenset({"acute", "chronic"})
UCUM = "http://unitsofmeasure.org"
INPUT_ERROR = "input-error"  # the "statement" recorded for a card saying an order could not be checked
INTERNAL_ERROR = "internal-error"
DOSE_NOT_CHECKED = "dose-not-checked"  # recorded for a card saying a dose given only in words was not checked
DATA_NOT_READ = "data-not-read"  # recorded for a card naming the data the answer was given without


_URGENCY = {"critical": 0, "warning": 1, "info": 2}


def most_urgent_first(cards: list[BuiltCard]) -> list[BuiltCard]:
    """Critical, then warning, then info; the order within each kept."""
    return sorted(cards, key=lambda c: _URGENCY.get(c.indicator, 3))


def override_reason_system(base_url: str) -> str:
    return f"{base_url}/CodeSystem/override-reason"


def statement_system(base_url: str) -> str:
    return f"{base_url}/CodeSystem/statement"


_OVER_LIMIT = (
    "exceeds",
    "exceeds-setting-unknown",
    "exceeds-any-weight",
)  # one card per dose: "exceeds-beside" rides with it
# a dose finding that could not be checked, or was checked against a weight that may not be current
_CANNOT_CHECK = ("no-weight", "no-concentration", "weight-old", "weight-undated", "weight-unusable")


def is_interruptive(finding: Finding) -> bool:
    """A contraindication the record shows, or a dose over its limit: the only cards at order-sign.

    An infusion over the limit outside intensive care where the record does not say whether the patient is
    in intensive care is over the limit (the cautious side): it interrupts too, and "patient is in intensive
    care" is among its override reasons.
    """
    present_contraindication = (
        finding.statement.role == "contraindication" and finding.message_key == "present"
    )
    return present_contraindication or finding.message_key in _OVER_LIMIT


def source_label(statement: Statement) -> str:
    """The guideline (or the review) and the statement's grade and certainty, or "grade not stated"."""
    name = GUIDELINE if statement.source.key in _GUIDELINE_SOURCES else statement.source.label
    grade = f"grade {statement.grade}" if statement.grade else "grade not stated"
    certainty = f", {statement.certainty} certainty" if statement.certainty else ""
    return f"{name} ({grade}{certainty})"


@dataclass(frozen=True)
class BuiltCard:
    card: Json
    statement: str
    indicator: str


def cards_for(
    assessment: Assessment, *, hook: str, order: Json, base_url: str, site: Site | None = None
) -> list[BuiltCard]:
    """The cards for one assessed order: at order-sign the interruptive ones and a warning for each dose that
    could not be checked (signing it unchecked would look checked); at order-select all of them."""
    findings = sorted_findings(assessment)
    if hook == "order-sign":
        findings = [f for f in findings if is_interruptive(f) or f.message_key in _CANNOT_CHECK]
    cards = [_card(f, assessment, order, base_url, site) for f in findings]
    cards += dose_not_checked_cards(assessment, base_url)
    if hook != "order-sign":
        cards += [_note_card(n) for n in assessment.notes]
    return cards


def _note_card(note: Note) -> BuiltCard:
    """A line about the reference itself (no statement for children): information, never at signing."""
    kb = load_knowledge()
    text = note_text(note, kb)
    card: Json = {
        "uuid": str(uuid.uuid4()),
        "summary": _short(text, SUMMARY_MAX),
        "detail": text,
        "indicator": kb.notes[note.key].severity,
        "source": {"label": f"ketamine-cds: about the reference ({GUIDELINE})"},
    }
    return BuiltCard(card, f"note:{note.key}", card["indicator"])


def dose_not_checked_cards(assessment: Assessment, base_url: str) -> list[BuiltCard]:
    """A warning for each dose the order gives only in words (not checked)."""
    unread = [m for m in assessment.missing if m.datum == "dose"]
    return [_dose_not_checked_card(m.reason, assessment, base_url) for m in unread]


def _dose_not_checked_card(reason: str, assessment: Assessment, base_url: str) -> BuiltCard:
    """A dose the order gives only in words: not checked, with the limits it must be checked against."""
    limits = assessment.dose_limits
    weight = limits.weight_kg
    bolus = f"{format_number(limits.bolus_limit_mg_per_kg)} mg/kg"
    rate = f"{format_number(limits.infusion_limit_mg_per_kg_per_h)} mg/kg/h"
    if weight is not None and limits.max_bolus_mg is not None:
        bolus += f" (max {format_max(limits.max_bolus_mg)} mg for {format_number(weight)} kg)"
    if limits.max_infusion_mg_per_h is not None:
        rate += f" (max {format_max(limits.max_infusion_mg_per_h)} mg/h)"
    where = INFUSION_SCOPE_WORDS[limits.infusion_limit_applies]
    card: Json = {
        "uuid": str(uuid.uuid4()),
        "summary": "Ketamine dose not checked: the order gives it only in words, not as a coded dose",
        "detail": (
            f"Not checked: {reason}.\n\nCheck it by hand against the {GUIDELINE}: an IV bolus "
            f"should not exceed {bolus}, in every setting; an IV infusion should not exceed {rate} "
            f"({where}). Entering the dose as a coded quantity lets the service check it."
        ),
        "indicator": "warning",
        "source": {"label": f"ketamine-cds dose check ({GUIDELINE})"},
        "links": [
            {
                "label": "Guideline statement: IV bolus limit",
                "url": f"{base_url}/statements/{limits.bolus_statement}",
                "type": "absolute",
            }
        ],
    }
    return BuiltCard(card, DOSE_NOT_CHECKED, "warning")


def _card(
    finding: Finding,
    assessment: Assessment,
    order: Json,
    base_url: str,
    site: Site | None = None,
    *,
    of_an_order: bool = True,
) -> BuiltCard:
    statement = finding.statement
    summary, detail = finding_texts(finding)
    interruptive = is_interruptive(finding)
    indicator = finding.severity
    reason = summary if assessment.decisive is finding else verdict_reason(assessment)
    # the grade once: the detail of most statements already gives it
    graded = statement.grade_phrase in detail
    grade = "" if graded else f"; {grade_words(statement)}"
    detail += f"\n\n**Statement:** {statement.title} (`{statement.id}`){grade}."
    if of_an_order:
        verdict = VERDICT_WORDS[assessment.verdict.value]
        detail += (
            f"\n\n**Assessment of this order:** {verdict}"
            + (f": {reason.rstrip('.')}" if reason and reason != summary else "")
            + "."
        )
    card: Json = {
        "uuid": str(uuid.uuid4()),
        "summary": summary,
        "detail": detail,
        "indicator": indicator,
        "source": {
            "label": source_label(statement),
            "url": statement.source.url,
            "topic": {"system": statement_system(base_url), "code": statement.id, "display": statement.title},
        },
        "links": [
            {
                "label": f"Guideline statement: {statement.title}",
                "url": f"{base_url}/statements/{statement.id}",
                "type": "absolute",
            }
        ],
    }
    if finding.message_key in _OVER_LIMIT:
        step = site.bolus_step_mg if site is not None else None
        suggestion = dose_suggestion(assessment, order, _dose_index(finding), bolus_step_mg=step)
        if suggestion is not None:
            card["suggestions"] = [suggestion]
            card["selectionBehavior"] = "at-most-one"
    if interruptive:
        reasons = statement.override_reasons  # its statement file, or kb.toml [override_reasons]
        if site is not None:  # the site's own coded reasons, beside the service's
            reasons += tuple(OverrideReason(r.code, r.display) for r in site.override_reasons)
        system = override_reason_system(base_url)
        card["overrideReasons"] = [{"system": system, "code": r.code, "display": r.display} for r in reasons]
    return BuiltCard(card, statement.id, indicator)


def _floor(value: Fraction, places: int = 2) -> Decimal:
    """Rounded down, so the suggested dose is never above the limit."""
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR)


def _plain_number(value: Decimal | Fraction) -> int | float:
    dec = value if isinstance(value, Decimal) else Decimal(value.numerator) / Decimal(value.denominator)
    return int(dec) if dec == dec.to_integral_value() else float(dec)


def _dose_index(finding: Finding) -> int:
    index = finding.params.get("dose_index", 0)
    return index if isinstance(index, int) else 0


def dose_suggestion(
    assessment: Assessment, order: Json, dose_index: int = 0, *, bolus_step_mg: Fraction | None = None
) -> Json | None:
    """Update the draft MedicationRequest to the limit, in the unit system it was written in: a per-kg order
    to the limit per kg (0.35 mg/kg, 1 mg/kg/h, ...); an absolute one to the largest dose one can measure
    within the limit for this weight: in mg (mg/h) rounded down to a step (0.5 mg, 0.1 mg/h; a site's
    ``display.bolus_step_mg``), or, for an order in mL (mL/h) with a known concentration, in mL (mL/h) rounded
    down to 0.1 mL (0.1 mL/h). The exact maximum stays in the card's detail and the label.
    ``dose_index`` is the dose of the order the suggestion changes (the others stay as ordered)."""
    check = next((c for c in assessment.dose_checks if c.index == dose_index), None)
    if check is None or check.status not in (DoseStatus.EXCEEDS, DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE):
        return None
    if check.statement == CEILING:  # the highest rate either guideline mentions, not a rate it recommends
        return None
    suggested = _suggested_dose(check, bolus_step_mg)
    if suggested is None:
        return None
    value, unit, exact = suggested
    bolus = check.kind is DoseKind.BOLUS
    resource = _updated_order(order, dose_index, bolus, {"value": _plain_number(value), "unit": unit})
    if resource is None:
        return None
    amount = f"{format_number(value)} {unit}"
    weight = assessment.dose_limits.weight_kg
    for_weight = (
        f" for {format_decimal(shown_weight(weight))} kg"
        if weight is not None and not check.ordered.unit.per_kg
        else ""
    )
    kind = "bolus" if bolus else "infusion rate"
    label = f"Change the {kind} to {amount}{for_weight}{exact}"
    if check.ordered.unit.per_kg:
        label = f"Change the {kind} to the limit: {amount}"
    return {
        "label": label,
        "uuid": str(uuid.uuid4()),
        "isRecommended": True,
        "actions": [
            {
                "type": "update",
                "description": f"Set the ketamine {kind} of this order to {amount}{for_weight}, within "
                "the limit",
                "resource": resource,
            }
        ],
    }


def _suggested_dose(
    check: DoseCheck, bolus_step_mg: Fraction | None
) -> tuple[Decimal | Fraction, str, str] | None:
    """(value, unit, what the label adds about the exact limit) of the dose a suggestion sets: the limit per
    kg for a per-kg order; else the limit for this weight rounded down to a measurable step, in mL (mL/h) for
    an order in mL with a known concentration. None when there is no such dose."""
    bolus = check.kind is DoseKind.BOLUS
    if check.ordered.unit.per_kg:  # a site's cap in mg for this weight may be no finite decimal per kg
        return _floor(check.limit_per_kg, 4), "mg/kg" if bolus else "mg/kg/h", ""
    if check.limit_amount is None:
        return None
    steps = load_knowledge().dose_steps
    value: Decimal | Fraction
    in_volume = check.ordered.unit.amount == "volume" and check.concentration is not None
    amount_unit = "mg" if bolus else "mg/h"
    if in_volume and check.concentration is not None:
        unit = "mL" if bolus else "mL/h"
        step = steps["bolus_ml" if bolus else "infusion_ml_per_h"]
        value = check.limit_amount / check.concentration // step * step
    else:
        unit = amount_unit
        step = (bolus_step_mg or steps["bolus_mg"]) if bolus else steps["infusion_mg_per_h"]
        value = check.limit_amount // step * step
        if value <= 0:  # the limit is under one step (a tiny weight): the limit itself, rounded down
            value = _floor(check.limit_amount)
    if value <= 0:
        return None
    exact = f"{format_max(check.limit_amount)} {amount_unit}"
    if f"{format_number(value)} {unit}" != exact:
        return value, unit, f"; the limit is {exact}, rounded down to a step of {format_number(step)} {unit}"
    return value, unit, ""


def _updated_order(order: Json, dose_index: int, bolus: bool, dose: Json) -> Json | None:
    """A copy of the draft order with its ``dose_index``-th dose set to ``dose`` (value and UCUM unit); None
    when the draft has no id (an update names its resource by id) or no such dose."""
    resource: Json | None = json_safe(order)
    if resource is None or not isinstance(resource.get("id"), str) or not resource["id"]:
        return None  # an update names its resource by id: a draft without one cannot be updated
    positions = order_dose_positions(resource)
    if dose_index >= len(positions):
        return None
    i, j = positions[dose_index]
    dose_and_rate: Json = resource["dosageInstruction"][i]["doseAndRate"][j]
    quantity = {**dose, "system": UCUM, "code": dose["unit"]}
    if bolus:
        dose_and_rate.pop("doseRange", None)
        dose_and_rate["doseQuantity"] = quantity
    else:
        for key in ("rateRatio", "rateRange", "rateQuantity"):
            dose_and_rate.pop(key, None)
        dose_and_rate["rateQuantity"] = quantity
    return resource


def json_safe(value: Any) -> Any:
    """Plain JSON: exact decimals as numbers; None when a number cannot be written in JSON (NaN, infinity)."""
    try:
        return _plain(value)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than a suggestion is worth
        return None


_AS_IS = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind in _AS_IS:  # most of an order: checked first, by exact type
        return value
    if kind is dict or isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if kind is list or isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("not finite")
        number = _plain_number(value)
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError("not finite")
        return number
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _short(text: str, room: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= room else text[: room - 1].rstrip() + "…"


def not_checked_card(error: InputError | None) -> BuiltCard:
    """One warning card: the order could not be checked, and why (the clinician must see it)."""
    if error is None:
        why = "the checking service failed unexpectedly"
        detail_why = (
            "The checking service failed unexpectedly (the failure is logged for the service's team)."
        )
        statement = INTERNAL_ERROR
    else:
        why = error.message
        detail_why = (
            f"The order or the record could not be read: **{error.field or 'request'}**: {error.message}"
        )
        statement = INPUT_ERROR
    head = "Ketamine order not checked: "
    card: Json = {
        "uuid": str(uuid.uuid4()),
        "summary": head + _short(why, SUMMARY_MAX - len(head)),
        "detail": (
            f"{detail_why}\n\nThis ketamine order was **not** checked against the {GUIDELINE}: no "
            "screening for contraindications and no dose-limit check were made. Correct the order or the "
            "record, or check it by hand."
        ),
        "indicator": "warning",
        "source": {"label": f"ketamine-cds order check ({GUIDELINE} not applied)"},
    }
    return BuiltCard(card, statement, "warning")


# --- answers given without part of the record ----------------------------------------------------------


@dataclass(frozen=True)
class UnreadDatum:
    label: str  # short, for the summary
    effect: str  # what the answer lacks without it


UNREAD_DATA: dict[str, UnreadDatum] = {
    "conditions": UnreadDatum(
        "conditions",
        "contraindications and cautions were not screened: none found is not the same as none present",
    ),
    "pregnancy-status": UnreadDatum(
        "pregnancy status", "a pregnancy recorded only as a pregnancy status observation was not seen"
    ),
    "weight": UnreadDatum(
        "body weight", "a dose in mg, mg/h or mL could not be checked against the weight-based limits"
    ),
    "ketamine-product": UnreadDatum(
        "ordered product",
        "the Medication the order names could not be read: its strength is not known, so a dose in mL "
        "could not be checked",
    ),
    "encounter": UnreadDatum(
        "current encounter",
        "whether the patient is in intensive care is not known, so the limits outside intensive care apply",
    ),
    "location": UnreadDatum(
        "encounter location",
        "whether the patient is in intensive care is not known, so the limits outside intensive care apply",
    ),
    "opioids": UnreadDatum("opioid prescriptions", "opioid tolerance is not known"),
    "planned-procedure": UnreadDatum(
        "planned procedures", "a planned surgery may be missing from the reading of the indication"
    ),
    "ketamine-history": UnreadDatum(
        "earlier ketamine orders",
        "whether the patient has had a course of IV ketamine is not known",
    ),
}
# What the signing check depends on: contraindications, the dose against the weight, the product's strength;
# the setting too when an infusion is ordered (the infusion limit depends on it, the bolus limit does not).
_SIGNING_DATA = frozenset({"conditions", "pregnancy-status", "weight", "ketamine-product"})
_SETTING_DATA = frozenset({"encounter", "location"})


def _bears_on(datum: str, hook: str, assessment: Assessment | None) -> bool:
    if hook != "order-sign":
        return True
    if datum in _SIGNING_DATA or datum not in UNREAD_DATA:
        return True
    if datum in _SETTING_DATA:
        checks = assessment.dose_checks if assessment is not None else ()
        return assessment is None or any(c.kind is DoseKind.INFUSION for c in checks)
    return False


def data_not_read_card(unread: list[str], *, hook: str, assessment: Assessment | None) -> BuiltCard | None:
    """One warning card naming the data the answer was given without, and what that leaves unchecked; None
    when none of it bears on what this hook shows (at order-sign: the safety check)."""
    shown = [d for d in unread if _bears_on(d, hook, assessment)]
    if not shown:
        return None
    data = [UNREAD_DATA.get(d, UnreadDatum(d, "it is not known")) for d in shown]
    head = "Checked without part of the record: "
    summary = head + _short(", ".join(d.label for d in data) + " could not be read", SUMMARY_MAX - len(head))
    lines = "\n".join(f"- **{d.label}**: {d.effect}." for d in data)
    card: Json = {
        "uuid": str(uuid.uuid4()),
        "summary": summary,
        "detail": (
            "These could be neither taken from the prefetch nor read from the EHR's FHIR server, so the "
            f"check was made without them:\n\n{lines}\n\nEverything else was checked as usual; look these "
            "up in the chart before relying on the absence of a warning."
        ),
        "indicator": "warning",
        "source": {"label": f"ketamine-cds record check ({GUIDELINE})"},
    }
    return BuiltCard(card, DATA_NOT_READ, "warning")


def advisory_card(
    finding: Finding, assessment: Assessment, base_url: str, lead: str, *, of_an_order: bool = True
) -> BuiltCard:
    """A finding as a patient-view card: ``info`` or ``warning`` (a critical finding is a warning here), no
    suggestion, no override reasons, its detail led by ``lead`` (which order, what is new); without the
    line on the order's verdict when the finding is not about an order (``of_an_order`` False)."""
    built = _card(finding, assessment, {}, base_url, of_an_order=of_an_order)
    card = dict(built.card)
    for key in ("suggestions", "selectionBehavior", "overrideReasons"):
        card.pop(key, None)
    indicator = "warning" if built.indicator == "critical" else built.indicator
    card["indicator"] = indicator
    card["detail"] = f"{lead}\n\n{card['detail']}"
    return BuiltCard(card, built.statement, indicator)
