"""Which dose statements apply to a use and setting, and their limits (reference, "Dose statements").

Data in, data out: the limits are the knowledge base's thresholds; this module only chooses among them. The
rule that decides these four statements, registered under their ids, is ``_engine.dose_limits_and_checks``.

- acute uses, and an unknown use (the stricter limits): ``dose-bolus-limit`` in every setting;
  ``dose-infusion-limit`` outside intensive care and where the setting is not known; in intensive care the
  infusion is checked against ``dose-ceiling`` instead, which also applies everywhere else above it;
- chronic uses: ``chronic-dose-range`` for both (bolus; infusion up to 2 mg/kg/h outside intensive care and
  where the setting is not known, up to 7 in intensive care, under 0.5 is below the range used).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING

from ._facts import MAX_WEIGHT_KG, DoseKind, Setting
from ._kb import Guideline, KnowledgeBase

if TYPE_CHECKING:
    from ._site import Site

BOLUS_LIMIT = "dose-bolus-limit"
INFUSION_LIMIT = "dose-infusion-limit"
CEILING = "dose-ceiling"
CHRONIC_RANGE = "chronic-dose-range"
DOSE_STATEMENTS = (BOLUS_LIMIT, INFUSION_LIMIT, CHRONIC_RANGE, CEILING)


@dataclass(frozen=True, slots=True)
class Limit:
    """A dose statement's limit per kg (per kg and hour for an infusion), as a site may have tightened it:
    ``guideline_per_kg`` is then the guideline's own, and ``max_amount`` a site's cap in mg (mg/h) whatever
    the weight. ``above_guideline``: the site raised the limit above the guideline's, which it allowed."""

    statement: str
    per_kg: Fraction
    guideline_per_kg: Fraction | None = None
    max_amount: Fraction | None = None
    above_guideline: bool = False

    @property
    def from_site(self) -> bool:
        return self.guideline_per_kg is not None or self.max_amount is not None

    @property
    def guideline(self) -> Fraction:
        """The guideline's own limit per kg."""
        return self.per_kg if self.guideline_per_kg is None else self.guideline_per_kg


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


def dose_policy(
    kb: KnowledgeBase, guideline: Guideline, setting: Setting, site: Site | None = None
) -> DosePolicy:
    """The dose statements that apply to a use of this guideline in this setting, with a site's caps (worked
    out once per knowledge base, site, guideline and setting)."""
    key = ("dose_policy", guideline, setting, id(site))
    kept = kb.memo.get(key)
    if kept is not None and kept[0] is site:  # the very site object (an id alone may be reused)
        found: DosePolicy = kept[1]
        return found
    if len(kb.memo) > _MEMO_MAX:
        kb.memo.clear()
    policy = _chronic(kb, setting) if guideline == "chronic" else _acute(kb, setting)
    if site is not None and site.caps:
        policy = replace(policy, bolus=_capped(policy.bolus, site), infusion=_capped(policy.infusion, site))
    kb.memo[key] = (site, policy)
    return policy


_MEMO_MAX = 1024  # entries: sites loaded afresh again and again must not grow it without end


def _capped(policy: KindPolicy, site: Site) -> KindPolicy:
    def cap(limit: Limit | None) -> Limit | None:
        found = site.cap(limit.statement, policy.kind) if limit is not None else None
        if limit is None or found is None:
            return limit
        per_kg = limit.per_kg
        if found.max_per_kg is not None:
            per_kg = found.max_per_kg if found.allow_above_guideline else min(per_kg, found.max_per_kg)
        changed = per_kg != limit.per_kg
        return Limit(
            limit.statement,
            per_kg,
            limit.per_kg if changed else None,
            found.max_amount,
            above_guideline=per_kg > limit.per_kg,
        )

    main = cap(policy.limit)
    assert main is not None
    return replace(policy, limit=main, icu_limit=cap(policy.icu_limit), also=cap(policy.also))


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


def dose_thresholds(kb: KnowledgeBase, kind: DoseKind, site: Site | None = None) -> tuple[Fraction, ...]:
    """Every limit per kg a dose of this kind is compared with, in any use and setting, sorted: between two of
    them the engine's answer cannot change with the dose per kg (the batch audit groups rows by these bands).
    A site's absolute caps are in ``amount_thresholds``; with a site, the guideline's own limits are bands too
    (the audit keeps the guideline's answer beside the site's)."""
    found: set[Fraction] = set()
    guidelines: tuple[Guideline, ...] = ("acute", "chronic")
    for guideline, setting, protocol in itertools.product(guidelines, Setting, (None, site)):
        policy = dose_policy(kb, guideline, setting, protocol).of(kind)
        limits = (policy.limit, policy.icu_limit, policy.also)
        found.update(limit.per_kg for limit in limits if limit is not None)
        if policy.minimum is not None:
            found.add(policy.minimum)
    return tuple(sorted(found))


def amount_thresholds(kb: KnowledgeBase, kind: DoseKind, site: Site | None = None) -> tuple[Fraction, ...]:
    """The amounts (mg for a bolus, mg/h for an infusion) a dose of this kind is compared with without its
    weight, sorted: a site's absolute caps, and each limit per kg at the heaviest weight accepted (a dose over
    it is over the limit at any weight)."""
    caps = {c.max_amount for c in site.caps.values() if c.kind is kind and c.max_amount} if site else set()
    heaviest = {limit * MAX_WEIGHT_KG for limit in dose_thresholds(kb, kind, site)}
    return tuple(sorted(caps | heaviest))
