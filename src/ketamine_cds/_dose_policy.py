"""Which dose statements apply to a use and setting, and their limits (reference, "Dose statements").

Data in, data out: the limits are the knowledge base's thresholds; this module only chooses among them.

- acute uses, and an unknown use (the stricter limits): ``dose-bolus-limit`` in every setting;
  ``dose-infusion-limit`` outside intensive care and where the setting is not known; in intensive care the
  infusion is checked against ``dose-ceiling`` instead, which also applies everywhere else above it;
- chronic uses: ``chronic-dose-range`` for both (bolus; infusion up to 2 mg/kg/h outside intensive care and
  where the setting is not known, up to 7 in intensive care, under 0.5 is below the range used).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ._facts import DoseKind, Setting
from ._kb import Guideline, KnowledgeBase

BOLUS_LIMIT = "dose-bolus-limit"
INFUSION_LIMIT = "dose-infusion-limit"
CEILING = "dose-ceiling"
CHRONIC_RANGE = "chronic-dose-range"
DOSE_STATEMENTS = (BOLUS_LIMIT, INFUSION_LIMIT, CHRONIC_RANGE, CEILING)


@dataclass(frozen=True, slots=True)
class Limit:
    """A dose statement's limit per kg (per kg and hour for an infusion)."""

    statement: str
    per_kg: Fraction


@dataclass(frozen=True, slots=True)
class KindPolicy:
    """What one kind of IV dose (bolus or infusion) is checked against in this use and setting.

    ``limit`` decides; where it is the outside-ICU limit and the setting is unknown, ``icu_limit`` is the one
    that would apply in intensive care (a dose between the two exceeds "unless in intensive care").
    ``also`` is a looser limit of another statement that is reported only when it too is exceeded (an acute
    infusion above the dose ceiling). ``minimum`` is the bottom of the range used (information only)."""

    kind: DoseKind
    limit: Limit
    icu_limit: Limit | None = None
    also: Limit | None = None
    minimum: Fraction | None = None


@dataclass(frozen=True, slots=True)
class DosePolicy:
    guideline: Guideline
    setting: Setting
    bolus: KindPolicy
    infusion: KindPolicy

    def of(self, kind: DoseKind) -> KindPolicy:
        return self.bolus if kind is DoseKind.BOLUS else self.infusion

    @property
    def outside_icu_applies(self) -> bool | None:
        """True outside intensive care, False in it, None when the setting is unknown (then it applies)."""
        return {Setting.INTENSIVE_CARE: False, Setting.NON_INTENSIVE_CARE: True}.get(self.setting)


def dose_policy(kb: KnowledgeBase, guideline: Guideline, setting: Setting) -> DosePolicy:
    """The dose statements that apply to a use of this guideline in this setting."""
    if guideline == "chronic":
        return _chronic(kb, setting)
    return _acute(kb, setting)


def _acute(kb: KnowledgeBase, setting: Setting) -> DosePolicy:
    bolus = KindPolicy(DoseKind.BOLUS, Limit(BOLUS_LIMIT, kb.threshold(BOLUS_LIMIT, "limit_mg_per_kg")))
    outside = Limit(INFUSION_LIMIT, kb.threshold(INFUSION_LIMIT, "limit_mg_per_kg_per_h"))
    ceiling = Limit(CEILING, kb.threshold(CEILING, "limit_mg_per_kg_per_h"))
    if setting is Setting.INTENSIVE_CARE:
        infusion = KindPolicy(DoseKind.INFUSION, ceiling)
    elif setting is Setting.NON_INTENSIVE_CARE:
        infusion = KindPolicy(DoseKind.INFUSION, outside, also=ceiling)
    else:
        infusion = KindPolicy(DoseKind.INFUSION, outside, icu_limit=ceiling, also=ceiling)
    return DosePolicy("acute", setting, bolus, infusion)


def _chronic(kb: KnowledgeBase, setting: Setting) -> DosePolicy:
    def limit(name: str) -> Limit:
        return Limit(CHRONIC_RANGE, kb.threshold(CHRONIC_RANGE, name))

    bolus = KindPolicy(DoseKind.BOLUS, limit("bolus_limit_mg_per_kg"))
    minimum = kb.threshold(CHRONIC_RANGE, "infusion_minimum_mg_per_kg_per_h")
    icu = limit("intensive_care_limit_mg_per_kg_per_h")
    outside = limit("infusion_limit_mg_per_kg_per_h")
    if setting is Setting.INTENSIVE_CARE:
        infusion = KindPolicy(DoseKind.INFUSION, icu, minimum=minimum)
    elif setting is Setting.NON_INTENSIVE_CARE:
        infusion = KindPolicy(DoseKind.INFUSION, outside, minimum=minimum)
    else:
        infusion = KindPolicy(DoseKind.INFUSION, outside, icu_limit=icu, minimum=minimum)
    return DosePolicy("chronic", setting, bolus, infusion)


def dose_thresholds(kb: KnowledgeBase, kind: DoseKind) -> tuple[Fraction, ...]:
    """Every limit a dose of this kind is compared with, in any use and setting, sorted: between two of them
    the engine's answer cannot change with the dose (the batch audit groups rows by these bands)."""
    found: set[Fraction] = set()
    for guideline in ("acute", "chronic"):
        for setting in Setting:
            policy = dose_policy(kb, guideline, setting).of(kind)
            found.update(
                limit.per_kg for limit in (policy.limit, policy.icu_limit, policy.also) if limit is not None
            )
            if policy.minimum is not None:
                found.add(policy.minimum)
    return tuple(sorted(found))
