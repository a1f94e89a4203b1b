"""Rendering: an ``Assessment`` as the contract's JSON, or as a readable report.

The wording of each finding comes from its statement's file; this module only fills in the values.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ._assessment import (
    Assessment,
    Clause,
    DoseCheck,
    DoseLimits,
    DoseMath,
    DoseRange,
    Elapsed,
    Finding,
    LimitText,
    Note,
    RoundedLimit,
    SettingScope,
    SiteNote,
    WeightUsed,
)
from ._dose_policy import Limit
from ._facts import Coded, DoseKind, Setting, WeightBasis
from ._kb import SYSTEM_LABELS, KnowledgeBase, Statement, load_knowledge, short_system
from ._site import Site
from ._units import (
    Quantity,
    format_apart,
    format_max,
    format_number,
    round_for_display,
    round_max_for_display,
)

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


SUMMARY_MAX = 139


def display_value(value: object, *, with_codes: bool = True) -> str:
    """One value of a finding as a clinician reads it (codes are left out of one-line summaries)."""
    if isinstance(value, Coded):
        return _coded(value) if with_codes else value.display
    if isinstance(value, DoseMath):
        return _dose_math(value, short=not with_codes)
    if isinstance(value, Clause):
        if value.value is None:
            return ""
        return f"{value.prefix}{format_max(value.value, value.apart_from)} {value.unit}{value.suffix}"
    if isinstance(value, WeightUsed):
        return weight_text(value, with_date=with_codes)
    if isinstance(value, DoseRange):
        return _range_text(value)
    if isinstance(value, SettingScope):
        return SETTING_SCOPE_WORDS[value.setting]
    if isinstance(value, Elapsed):
        return elapsed_text(value.hours)
    if isinstance(value, LimitText):
        return limit_text(value)
    if isinstance(value, SiteNote):
        return site_note_text(value)
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


@dataclass(frozen=True, slots=True)
class DoseTexts:
    """An ordered dose as a clinician reads it: the order exactly as written; its conversions rounded for
    display, but never so that one reads the same as the limit it is compared with (``format_apart``)."""

    ordered: str  # "0.005 g": as ordered, never rounded
    amount: str | None  # "5 mg", "50 mg/h" (beside the maximum for this weight)
    per_kg: str | None  # "0.352 mg/kg" (0.352375 beside the 0.35 limit)


def dose_texts(
    ordered: Quantity,
    amount: Fraction | None,
    per_kg: Fraction | None,
    limit_per_kg: Fraction | None,
    limit_amount: Fraction | None,
    amount_unit: str,
) -> DoseTexts:
    per_kg_unit = "mg/kg" if amount_unit == "mg" else "mg/kg/h"
    return DoseTexts(
        ordered=str(ordered),
        amount=None if amount is None else f"{format_apart(amount, limit_amount)} {amount_unit}",
        per_kg=None if per_kg is None else f"{format_apart(per_kg, limit_per_kg)} {per_kg_unit}",
    )


def check_texts(check: DoseCheck) -> DoseTexts:
    unit = "mg" if check.kind is DoseKind.BOLUS else "mg/h"
    return dose_texts(check.ordered, check.amount, check.per_kg, check.limit_per_kg, check.limit_amount, unit)


@dataclass(frozen=True, slots=True)
class DoseDisplay:
    """The dose table of an assessment as text, for the readable report and the web page."""

    max_bolus: str | None  # "24.45 mg"; None without a weight
    max_infusion: str | None  # "62.5 mg/h"; None without a weight or where the limit does not apply
    check: DoseTexts | None  # the order, when there is one to check


def dose_display(assessment: Assessment) -> DoseDisplay:
    """The maximum for this weight is kept apart from the ordered amount of the same kind, as in findings
    (of the order's doses of that kind, the one that matters most)."""
    limits, check = assessment.dose_limits, assessment.dose_check
    ranked = ([check] if check is not None else []) + list(assessment.dose_checks)

    def maximum(value: Fraction | None, kind: DoseKind, unit: str) -> str | None:
        if value is None:
            return None
        near = next((c.amount for c in ranked if c.kind is kind), None)
        return f"{format_max(value, near)} {unit}"

    return DoseDisplay(
        max_bolus=maximum(limits.max_bolus_mg, DoseKind.BOLUS, "mg"),
        max_infusion=maximum(limits.max_infusion_mg_per_h, DoseKind.INFUSION, "mg/h"),
        check=None if check is None else check_texts(check),
    )


def _dose_math(dose: DoseMath, *, short: bool) -> str:
    """Summary: "25 mg (0.31 mg/kg)"; detail: "**25 mg**, that is **0.31 mg/kg** for a weight of 80 kg"."""
    texts = dose_texts(
        dose.ordered, dose.amount, dose.per_kg, dose.limit_per_kg, dose.limit_amount, dose.amount_unit
    )
    per_kg_order = dose.ordered.unit.per_kg
    other = texts.amount if per_kg_order else texts.per_kg
    if short:
        return texts.ordered if other is None else f"{texts.ordered} ({other})"
    parts = [f"**{texts.ordered}**"]
    if texts.amount is not None and dose.ordered.unit.text != dose.amount_unit:
        parts.append(texts.amount)
    if texts.per_kg is not None and not per_kg_order:
        parts.append(f"**{texts.per_kg}**")
    if dose.weight is None:
        return " = ".join(parts) + " (no usable body weight is recorded, so it is not converted to mg)"
    return " = ".join(parts) + f" for a weight of {weight_text(dose.weight)}"


SETTING_SCOPE_WORDS: Mapping[Setting, str] = {
    Setting.INTENSIVE_CARE: "in intensive care",
    Setting.NON_INTENSIVE_CARE: "outside intensive care",
    Setting.UNKNOWN: "outside intensive care (the setting is not recorded, so the limit that applies "
    "outside it applies unless the patient is in intensive care)",
}


def weight_text(weight: WeightUsed, *, with_date: bool = True) -> str:
    """ "80 kg (measured 2026-11-20)", "80 kg (as given)": every dose worked out from a weight says which."""
    kg = f"{format_number(weight.kg)} kg"
    if not with_date:
        return kg
    if weight.basis is WeightBasis.MEASURED and weight.measured is not None:
        return f"{kg} (measured {weight.measured.isoformat()})"
    if weight.basis is WeightBasis.UNDATED:
        return f"{kg} (date of measurement not recorded)"
    return f"{kg} (as given)"


def elapsed_text(hours: Fraction) -> str:
    """A duration: "45 min", "2.5 h", "12 days" (days from 72 hours on, for the age of a weight)."""
    if hours >= 72:
        days = hours / 24
        return f"{format_number(days, 0)} days"
    if hours < 1:
        return f"{format_number(hours * 60, 0)} min"
    return f"{format_number(hours)} h"


def limit_text(value: LimitText) -> str:
    """ "0.35 mg/kg"; "site protocol's 20 mg" where a site's cap decides."""
    if value.amount is not None:
        return f"site protocol's {format_number(value.amount)} {value.amount_unit}"
    shown = f"{format_number(value.per_kg)} {value.per_kg_unit}"
    if value.cap_unweighed is not None:
        return f"site protocol's {shown}, at most {format_number(value.cap_unweighed)} {value.amount_unit}"
    return f"site protocol's {shown}" if value.per_kg_from_site else shown


def site_note_text(value: SiteNote) -> str:
    guideline = f"{format_number(value.guideline_per_kg)} {value.per_kg_unit}"
    if value.guideline_amount is not None:
        guideline += f", {format_max(value.guideline_amount)} {value.amount_unit} for this weight"
    key = "site-above-guideline" if value.above_guideline else "site-limit"
    return load_knowledge().notes[key].summary.format(site=value.site, guideline=guideline)


def _range_text(value: DoseRange) -> str:
    text = f"{format_number(value.low_per_kg)}-{format_number(value.high_per_kg)} mg/kg/h"
    if value.weight is None:
        return text
    low = format_number(value.low_per_kg * value.weight.kg)
    high = format_max(value.high_per_kg * value.weight.kg)
    return f"{text} ({low}-{high} mg/h for {format_number(value.weight.kg)} kg)"


def _coded(coded: Coded) -> str:
    short = short_system(coded.system)
    if coded.code and short:
        return f"{coded.display} ({SYSTEM_LABELS[short]} {coded.code})"
    return coded.display


class _Params(dict[str, str]):
    """A finding's values, each written out only when the template names it (most name a few).
    ``{grade}`` is the statement's own grade and certainty, never written into a template by hand."""

    def __init__(self, finding: Finding, *, with_codes: bool) -> None:
        super().__init__(grade=finding.statement.grade_phrase)
        self._values = finding.params
        self._with_codes = with_codes

    def __missing__(self, key: str) -> str:
        if key == "Kind" and "kind" in self._values:
            text = self[key] = str(self._values["kind"]).capitalize()
            return text
        if key not in self._values:
            return "{" + key + "}"
        text = self[key] = display_value(self._values[key], with_codes=self._with_codes)
        return text


def finding_summary(finding: Finding) -> str:
    """The one-line summary of a finding, filled in (codes left out), at most SUMMARY_MAX characters."""
    summary = finding.message.summary.format_map(_Params(finding, with_codes=False))
    if len(summary) > SUMMARY_MAX:
        summary = summary[: SUMMARY_MAX - 1].rstrip() + "…"
    return summary


def finding_texts(finding: Finding) -> tuple[str, str]:
    """The summary and markdown detail of a finding, filled in; a finding whose limit a site's protocol set
    ends with a line saying so (every one of them, whatever its wording)."""
    detail = finding.message.detail.format_map(_Params(finding, with_codes=True))
    note = finding.params.get("site_note")
    if isinstance(note, SiteNote):
        detail += " " + site_note_text(note)
    rounding = finding.params.get("rounding")
    if isinstance(rounding, RoundedLimit):
        detail += " " + rounded_limit_text(rounding, finding.params.get("ordered"))
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
    """A dose as a JSON number beside its limit (a maximum, rounded down): rounded down when within the limit
    and up when over it, so two decimals never put it on the other side of the limit shown."""
    if value is None or limit is None:
        return _number(value)
    if value <= limit:
        return round_max_for_display(value)
    return float(Fraction(math.ceil(value * 100), 100))


def _max_number(value: Fraction | None) -> float | None:
    return None if value is None else round_max_for_display(value)


def _number(value: Fraction | None) -> float | None:
    return None if value is None else round_for_display(value)


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
    return {
        "weight_kg": _number(limits.weight_kg),
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
    }


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

SCREENING_WORDS: Mapping[str, str] = {
    "present": "PRESENT",
    "absent": "ruled out in the record",
    "not-recorded": "not found in the record (not the same as ruled out)",
    "unknown": "unknown: verify",
}


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
        lines.append(f"    {st.id}: grade {st.grade_text}, certainty {st.certainty_text}")
        lines.append(_wrap(_plain(detail), "    "))
        lines.append(_wrap(f"Source: {st.source.label}. {st.source.url}", "    "))
    doses = dose_display(assessment)
    lines += ["", *_limits_lines(data["dose_limits"], doses)]
    for check in assessment.dose_checks:
        texts = check_texts(check)
        also = (texts.amount if check.ordered.unit.per_kg else texts.per_kg) or "unknown"
        lines.append(f"  Ordered {check.kind.value}: {texts.ordered} ({also}) -> {check.status.value}")
    if assessment.missing:
        lines += ["", "Missing information:"]
        lines += [_wrap(f"- {m.datum}: {m.reason}", "  ") for m in assessment.missing]
    lines += ["", "Contraindication and caution screening (from the record):"]
    for s in data["screening"]:
        evidence = f" ({'; '.join(s['evidence'])})" if s["evidence"] else ""
        lines.append(f"  {s['statement']:30} {SCREENING_WORDS[s['status']]}{evidence}")
    opioid = data["opioid_use"]
    mme = f", {opioid['mme_per_day']:g} MME/day" if opioid["mme_per_day"] is not None else ""
    lines += ["", f"Opioid tolerance: {opioid['tolerant']}; dependence: {opioid['dependent']}{mme}"]
    lines.append(_wrap(opioid["basis"], "  "))
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


def _limits_lines(limits: Mapping[str, Any], doses: DoseDisplay) -> list[str]:
    weight = limits["weight_kg"]
    guideline = "chronic pain range" if limits["guideline"] == "chronic" else "acute pain limits"
    if weight is not None:
        head = f"Dose limits for {weight:g} kg ({guideline}; weight {limits['weight_basis']}"
        head += f" {limits['weight_measured']}):" if limits["weight_measured"] else "):"
    elif limits.get("weight_problem"):
        head = f"Dose limits ({guideline}; the body weight is not used: {limits['weight_problem']}):"
    else:
        head = f"Dose limits ({guideline}; no body weight recorded):"
    per_kg_bolus = f"{limits['bolus_limit_mg_per_kg']:g} mg/kg"
    per_kg_rate = f"{limits['infusion_limit_mg_per_kg_per_h']:g} mg/kg/h"
    bolus = f"max {doses.max_bolus or per_kg_bolus}"
    infusion = f"max {doses.max_infusion or per_kg_rate}"
    infusion += f" ({per_kg_rate} {INFUSION_SCOPE_WORDS[limits['infusion_limit_applies']]})"
    minimum = limits["infusion_minimum_mg_per_kg_per_h"]
    if minimum is not None:
        infusion += f"; range used from {minimum:g} mg/kg/h"
    if limits["bolus_limit_source"] == "site":
        bolus += f"; site protocol, the guideline's is {limits['guideline_bolus_limit_mg_per_kg']:g} mg/kg"
    if limits["infusion_limit_source"] == "site":
        guideline = limits["guideline_infusion_limit_mg_per_kg_per_h"]
        infusion += f"; site protocol, the guideline's is {guideline:g} mg/kg/h"
    return [
        head,
        f"  IV bolus     {bolus} ({per_kg_bolus}, in every setting)",
        f"  IV infusion  {infusion}",
    ]
