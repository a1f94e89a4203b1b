"""The engine's output: a verdict, findings that cite statements, dose limits and what is missing.

Findings carry the statement, a message key and the raw values used; the wording lives in the
statement's file and is filled in by the renderer, so the engine does no string formatting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from fractions import Fraction

from ._dose_policy import Limit
from ._facts import Coded, DoseKind, Route, Setting, WeightBasis
from ._kb import Guideline, Message, Severity, Statement
from ._opioids import OpioidStatus, Presence
from ._site import Site
from ._units import Quantity


class Verdict(StrEnum):
    """From most to least decisive (guideline/REFERENCE.md, Verdicts)."""

    OUT_OF_SCOPE = "out-of-scope"
    CONTRAINDICATED = "contraindicated"
    DOSE_EXCEEDS_LIMIT = "dose-exceeds-limit"
    NOT_INDICATED = "not-indicated"
    INSUFFICIENT_EVIDENCE = "insufficient-evidence"
    NEEDS_INFORMATION = "needs-information"
    CONSIDER = "consider"
    MAY_CONSIDER = "may-consider"


class DoseStatus(StrEnum):
    WITHIN = "within"
    BELOW_RANGE = "below-range"  # a chronic pain infusion under the range used (information, not an error)
    EXCEEDS = "exceeds"
    # over the limit that applies outside intensive care, and the setting is not recorded: over the limit
    # (an unknown setting is never read as intensive care), unless the patient is in intensive care
    EXCEEDS_UNLESS_INTENSIVE_CARE = "exceeds-unless-intensive-care"
    NO_WEIGHT = "cannot-check-no-weight"
    NO_CONCENTRATION = "cannot-check-no-concentration"

    @property
    def exceeds(self) -> bool:
        return self in (DoseStatus.EXCEEDS, DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE)

    @property
    def checked(self) -> bool:
        return self not in (DoseStatus.NO_WEIGHT, DoseStatus.NO_CONCENTRATION)


@dataclass(frozen=True, slots=True)
class Finding:
    statement: Statement
    message_key: str
    params: Mapping[str, object]

    @property
    def message(self) -> Message:
        return self.statement.messages[self.message_key]

    @property
    def severity(self) -> Severity:
        return self.statement.messages[self.message_key].severity


@dataclass(frozen=True, slots=True)
class WeightUsed:
    """The body weight a dose was worked out from, with when it was measured (every dose says which)."""

    kg: Fraction
    basis: WeightBasis
    measured: date | None = None


@dataclass(frozen=True, slots=True)
class DoseRange:
    """A range of rates per kg, and the same for this weight when known: "0.5-2 mg/kg/h (40-160 mg/h ...)"."""

    low_per_kg: Fraction
    high_per_kg: Fraction
    weight: WeightUsed | None


@dataclass(frozen=True, slots=True)
class SettingScope:
    """Where a limit applies, for a finding's wording: in or outside intensive care, or unless in it."""

    setting: Setting


@dataclass(frozen=True, slots=True)
class LimitText:
    """How a finding names the limit a dose is held to: "0.35 mg/kg", or "site protocol's 20 mg" where the
    site's cap decides (``amount`` is then the site's absolute cap, the tighter for this weight)."""

    per_kg: Fraction
    per_kg_unit: str
    amount: Fraction | None
    amount_unit: str
    per_kg_from_site: bool
    cap_unweighed: Fraction | None = None  # a site's cap in mg named beside the per-kg limit (no weight)


@dataclass(frozen=True, slots=True)
class SiteNote:
    """Said on every finding whose limit a site's protocol set: which protocol, and the guideline's limit."""

    site: str
    guideline_per_kg: Fraction
    per_kg_unit: str
    guideline_amount: Fraction | None
    amount_unit: str
    above_guideline: bool


@dataclass(frozen=True, slots=True)
class RoundedLimit:
    """An order over its limit only because it writes the limit rounded (16.67 mcg/kg/min for 1 mg/kg/h,
    which is 16.666... mcg/kg/min): said in the finding, with the exact excess."""

    limit_in_ordered_unit: Fraction
    unit: str
    excess: Fraction  # over the limit, as a fraction of it (1/5000 for 0.02%)


@dataclass(frozen=True, slots=True)
class Elapsed:
    """A duration for a finding's wording: "2.5 h", "3 days"; kept apart from ``compared_with`` (hours), the
    duration it is checked against ("more than 2 hours")."""

    hours: Fraction
    compared_with: Fraction | None = None


@dataclass(frozen=True, slots=True)
class DoseMath:
    """An ordered dose with its conversions, for the wording of dose findings. The limits it is compared
    with are here so that a rounded conversion is never written as if it were the limit."""

    ordered: Quantity
    amount: Fraction | None  # mg or mg/h
    per_kg: Fraction | None  # mg/kg or mg/kg/h
    weight: WeightUsed | None
    amount_unit: str  # "mg" or "mg/h"
    limit_per_kg: Fraction | None = None
    limit_amount: Fraction | None = None  # the limit for this weight, mg or mg/h

    @property
    def weight_kg(self) -> Fraction | None:
        return self.weight.kg if self.weight is not None else None

    @property
    def per_kg_unit(self) -> str:
        return "mg/kg" if self.amount_unit == "mg" else "mg/kg/h"


@dataclass(frozen=True, slots=True)
class Clause:
    """Words around a value that vanish when the value is unknown: ": max 28 mg" or nothing.

    ``apart_from`` is a dose written exactly as ordered in the value's unit: a maximum is never rounded down
    below a dose within it that the text restates exactly."""

    prefix: str
    value: Fraction | None
    unit: str
    suffix: str = ""
    apart_from: Fraction | None = None
    # the ketamine concentration when known (mg per mL): the maximum is then given in mL (mL/h) too, kept
    # apart from ``apart_from_ml``, a dose ordered as that volume
    concentration: Fraction | None = None
    apart_from_ml: Fraction | None = None


@dataclass(frozen=True, slots=True)
class ProcedureRef:
    """The planned procedure a finding names. Where the case gives only its class and no name (the web
    form's class without a name), the wording never passes the class off as the name: ``{procedure}`` reads
    ``unnamed`` ("abdominal surgery", or "the planned procedure"), ``{procedure_named}`` says only the
    class is given."""

    source: Coded
    named: bool
    unnamed: str


@dataclass(frozen=True, slots=True)
class SettingName:
    """Where the patient is, in words: "intensive care", "not intensive care", "not recorded"."""

    setting: Setting


@dataclass(frozen=True, slots=True)
class Outweighed:
    """On a supportive finding when a contraindication decides the verdict: the support stands, but it is
    outweighed here (``condition`` is what the record shows)."""

    condition: tuple[Coded, ...]


@dataclass(frozen=True, slots=True)
class Drawable:
    """The largest dose one can measure within a maximum: the maximum (mg or mg/h) rounded down to a
    measurable step, in mL (mL/h) at the concentration when it is known, else in mg (mg/h). Never above the
    maximum; the maximum itself is said beside it."""

    maximum: Fraction | None
    unit: str  # "mg" or "mg/h"
    step: Fraction  # in mg (mg/h)
    step_ml: Fraction  # in mL (mL/h)
    concentration: Fraction | None = None


@dataclass(frozen=True, slots=True)
class WithinFrom:
    """Without a body weight: the weight from which a dose in mg (mg/h) would be within its limit per kg
    (shown rounded up to 0.1 kg: "within the limit for patients of at least 57.2 kg")."""

    kg: Fraction | None


@dataclass(frozen=True, slots=True)
class Beside:
    """A computed amount beside the number it is compared with (a first infusion's total beside 80 mg):
    shown on its own side of it, never as it."""

    value: Fraction
    unit: str
    compared_with: Fraction


@dataclass(frozen=True, slots=True)
class MissingDatum:
    """A datum the answer depends on that the record does not give. ``decisive`` ones make the
    verdict needs-information."""

    datum: str
    reason: str
    statement: str | None = None
    decisive: bool = True


@dataclass(frozen=True, slots=True)
class DoseCheck:
    """One dose of the order against its limit; ``index`` is its place in ``KetamineOrder.doses``."""

    statement: str
    kind: DoseKind
    ordered: Quantity
    amount: Fraction | None  # mg (bolus) or mg/h (infusion)
    per_kg: Fraction | None  # mg/kg or mg/kg/h
    limit_per_kg: Fraction
    limit_amount: Fraction | None  # the limit for this weight, mg or mg/h
    status: DoseStatus
    index: int = 0
    limit_source: str = "guideline"  # "site" when a site's protocol set the limit that applies
    guideline_limit_per_kg: Fraction | None = None  # the guideline's own limit, beside a site's
    guideline_limit_amount: Fraction | None = None
    # before this weight: the limit per kg (a site may have changed it) and a site's cap in mg (mg/h)
    per_kg_limit: Fraction | None = None
    cap_amount: Fraction | None = None
    concentration: Fraction | None = None  # mg per mL, when the order or its product gives it
    # without a body weight, a dose in mg (mg/h) is within its limit per kg from this weight on (exactly)
    within_from_kg: Fraction | None = None


# Which dose check an assessment leads with when an order gives several doses: the one that matters most.
_STATUS_RANK = {
    DoseStatus.EXCEEDS: 0,
    DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE: 1,
    DoseStatus.NO_WEIGHT: 2,
    DoseStatus.NO_CONCENTRATION: 3,
    DoseStatus.BELOW_RANGE: 4,
    DoseStatus.WITHIN: 5,
}


@dataclass(frozen=True, slots=True)
class DoseLimits:
    """The IV dose limits for this use, setting and weight.

    ``infusion_limit_mg_per_kg_per_h`` is the limit that applies in this setting: outside intensive care, and
    where the setting is not known (the cautious side), the outside-ICU limit (1 mg/kg/h acute, 2 chronic); in
    intensive care the highest rate the guidelines describe (7 mg/kg/h). ``infusion_limit_applies`` says
    whether the outside-ICU limit is the one in force: True outside ICU, False in ICU, None when the setting
    is unknown (it is then applied).
    """

    weight_kg: Fraction | None
    max_bolus_mg: Fraction | None
    max_infusion_mg_per_h: Fraction | None
    bolus_limit_mg_per_kg: Fraction
    infusion_limit_mg_per_kg_per_h: Fraction
    infusion_limit_applies: bool | None
    guideline: Guideline = "acute"
    bolus_statement: str = "dose-bolus-limit"
    infusion_statement: str = "dose-infusion-limit"
    infusion_minimum_mg_per_kg_per_h: Fraction | None = None  # chronic: the bottom of the range used
    weight: WeightUsed | None = None
    weight_problem: str | None = None  # why the record's body weight is not used (weight_kg is then None)
    bolus_limit: Limit | None = None  # as a site may have tightened them (the guideline's own beside)
    infusion_limit: Limit | None = None
    concentration_mg_per_ml: Fraction | None = None  # of the order (given, or its product's strength)


@dataclass(frozen=True, slots=True)
class Note:
    """A line about the reference itself (e.g. that it has no statement for children): not a finding, since
    no statement says it. Its wording is in the knowledge base (``kb.toml``, [notes])."""

    key: str
    params: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    statement: str
    concept: str
    status: Presence
    evidence: tuple[Coded, ...] = ()


@dataclass(frozen=True, slots=True)
class Assessment:
    verdict: Verdict
    reason: str  # set when no single finding explains the verdict
    decisive: Finding | None  # the finding that decided the verdict, if one did
    findings: tuple[Finding, ...]
    dose_limits: DoseLimits
    dose_checks: tuple[DoseCheck, ...]  # one per dose of the order, in the order's sequence
    missing: tuple[MissingDatum, ...]
    screening: tuple[ScreeningResult, ...]
    opioid: OpioidStatus
    use: str | None
    route: Route
    setting: Setting
    as_of: date
    knowledge_base_version: str
    knowledge_base_digest: str
    notes: tuple[Note, ...] = ()
    site: Site | None = None

    @property
    def dose_check(self) -> DoseCheck | None:
        """The check that matters most: a dose over its limit first, then one that could not be checked;
        the order's first dose among equals. None when no dose was checked."""
        if not self.dose_checks:
            return None
        return min(self.dose_checks, key=lambda c: _STATUS_RANK[c.status])

    @property
    def statement_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.statement.id for f in self.findings))
