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

from ._facts import Coded, DoseKind, Route, Setting
from ._kb import Message, Severity, Statement
from ._opioids import OpioidStatus, Presence
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
    EXCEEDS = "exceeds"
    LIMIT_NOT_APPLICABLE = "limit-not-applicable"  # infusion in intensive care
    EXCEEDS_UNLESS_INTENSIVE_CARE = "exceeds-unless-intensive-care"  # setting unknown
    NO_WEIGHT = "cannot-check-no-weight"
    NO_CONCENTRATION = "cannot-check-no-concentration"


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
class DoseMath:
    """An ordered dose with its conversions, for the wording of dose findings. The limits it is compared
    with are here so that a rounded conversion is never written as if it were the limit."""

    ordered: Quantity
    amount: Fraction | None  # mg or mg/h
    per_kg: Fraction | None  # mg/kg or mg/kg/h
    weight_kg: Fraction | None
    amount_unit: str  # "mg" or "mg/h"
    limit_per_kg: Fraction | None = None
    limit_amount: Fraction | None = None  # the limit for this weight, mg or mg/h

    @property
    def per_kg_unit(self) -> str:
        return "mg/kg" if self.amount_unit == "mg" else "mg/kg/h"


@dataclass(frozen=True, slots=True)
class Clause:
    """Words around a value that vanish when the value is unknown: ": max 28 mg" or nothing.

    ``apart_from`` is the number the value is compared with (the ordered amount, for a maximum): the value is
    never rounded to read the same as it."""

    prefix: str
    value: Fraction | None
    unit: str
    suffix: str = ""
    apart_from: Fraction | None = None


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


# Which dose check an assessment leads with when an order gives several doses: the one that matters most.
_STATUS_RANK = {
    DoseStatus.EXCEEDS: 0,
    DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE: 1,
    DoseStatus.NO_WEIGHT: 2,
    DoseStatus.NO_CONCENTRATION: 3,
    DoseStatus.WITHIN: 4,
    DoseStatus.LIMIT_NOT_APPLICABLE: 5,
}


@dataclass(frozen=True, slots=True)
class DoseLimits:
    weight_kg: Fraction | None
    max_bolus_mg: Fraction | None
    max_infusion_mg_per_h: Fraction | None
    bolus_limit_mg_per_kg: Fraction
    infusion_limit_mg_per_kg_per_h: Fraction
    infusion_limit_applies: bool | None  # False in intensive care, None when the setting is unknown


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
