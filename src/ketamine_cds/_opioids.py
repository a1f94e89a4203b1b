"""Opioid tolerance (FDA definition) and morphine milligram equivalents (CDC 2022 factors)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from ._facts import Facts, OpioidUse
from ._kb import KnowledgeBase
from ._units import format_number


class Presence(StrEnum):
    PRESENT = "present"
    ABSENT = "absent"  # the record shows it is not so
    NOT_RECORDED = "not-recorded"  # the record was read and says nothing
    UNKNOWN = "unknown"  # the record was not available, or could not be read


@dataclass(frozen=True, slots=True)
class OpioidStatus:
    tolerant: Presence
    dependent: Presence
    mme_per_day: Fraction | None  # current total, None when no opioid is active or a daily amount is unknown
    basis: str  # plain words: why tolerant, dependent or not

    @property
    def tolerant_or_dependent(self) -> Presence:
        states = (self.tolerant, self.dependent)
        for state in (Presence.PRESENT, Presence.UNKNOWN, Presence.ABSENT):
            if state in states:
                return state
        return Presence.NOT_RECORDED

    @property
    def label(self) -> str:
        if self.dependent is Presence.PRESENT and self.tolerant is Presence.PRESENT:
            return "opioid-dependent and opioid-tolerant"
        return "opioid-dependent" if self.dependent is Presence.PRESENT else "opioid-tolerant"


def mme_per_day(use: OpioidUse, kb: KnowledgeBase) -> Fraction | None:
    """Morphine milligram equivalents per day of one opioid use; None when the dose is unknown."""
    opioid = kb.opioids.get(use.ingredient)
    if opioid is None or use.daily_amount is None:
        return None
    return use.daily_amount * opioid.mme_factor


def _describe(use: OpioidUse, kb: KnowledgeBase, days: int | None) -> str:
    opioid = kb.opioids[use.ingredient]
    unit = "mcg/h" if opioid.unit == "ug/h" else "mg/day"
    if use.as_needed:
        amount = "as needed"
    elif use.daily_amount is not None:
        amount = f"{format_number(use.daily_amount)} {unit}"
    else:
        amount = f"an unreadable dose of {unit}"
    duration = f" for {days} days" if days is not None else ", start date unknown"
    mme = mme_per_day(use, kb)
    mme_text = f" ({format_number(mme)} MME/day)" if mme is not None else ""
    return f"{use.ingredient} {amount}{duration}{mme_text}"


def _unknown_because(uses: list[OpioidUse]) -> str:
    """Why the opioid uses that could not be counted leave tolerance unknown."""
    reasons = []
    if any(u.as_needed for u in uses):
        reasons.append("an opioid is taken as needed, so the amount taken is not known")
    if any(not u.as_needed or u.start is None for u in uses):
        reasons.append("an opioid prescription's dose or start date could not be read")
    return " and ".join(reasons)


def opioid_status(facts: Facts, kb: KnowledgeBase) -> OpioidStatus:
    dependent = _dependence(facts)
    if facts.opioids is None:
        return OpioidStatus(Presence.UNKNOWN, dependent, None, "opioid prescriptions could not be read")
    active = [u for u in facts.opioids if _active(u, facts)]
    if not active:
        basis = "no current opioid prescription in the record"
        if dependent is Presence.PRESENT:
            basis = _dependence_basis(facts)
        return OpioidStatus(Presence.NOT_RECORDED, dependent, None, basis)

    tolerant_because: list[str] = []
    unknown: list[OpioidUse] = []  # not counted: amount (as needed, unreadable) or start date not known
    long_mme = Fraction(0)
    total_mme: Fraction | None = Fraction(0)
    long_enough: list[str] = []
    own_threshold_only = True  # a single listed opioid is judged by its own FDA threshold, not by MME
    for use in active:
        mme = mme_per_day(use, kb)
        total_mme = None if mme is None or total_mme is None else total_mme + mme
        days = (facts.as_of - use.start).days if use.start is not None else None
        if mme is None or use.daily_amount is None or days is None:
            unknown.append(use)
            continue
        if days < kb.tolerance_days:
            continue
        long_enough.append(_describe(use, kb, days))
        long_mme += mme
        threshold = kb.opioids[use.ingredient].tolerance_threshold
        own_threshold_only = own_threshold_only and threshold is not None
        if threshold is not None and use.daily_amount >= threshold:
            tolerant_because.append(_describe(use, kb, days))

    if tolerant_because:
        basis = "; ".join(tolerant_because)
        tolerant = Presence.PRESENT
    elif long_mme >= kb.equianalgesic_mme_per_day and (len(long_enough) > 1 or not own_threshold_only):
        basis = f"{'; '.join(long_enough)}: {format_number(long_mme)} MME/day in total"
        tolerant = Presence.PRESENT
    elif unknown:
        basis = f"{_unknown_because(unknown)}: " + "; ".join(
            _describe(u, kb, (facts.as_of - u.start).days if u.start else None) for u in active
        )
        tolerant = Presence.UNKNOWN
    else:
        basis = "current opioids below the opioid-tolerance thresholds: " + "; ".join(
            _describe(u, kb, (facts.as_of - u.start).days if u.start else None) for u in active
        )
        tolerant = Presence.ABSENT
    if dependent is Presence.PRESENT and tolerant is not Presence.PRESENT:
        basis = _dependence_basis(facts)
    elif dependent is Presence.PRESENT:
        basis = f"{_dependence_basis(facts)}; {basis}"
    return OpioidStatus(tolerant, dependent, total_mme, basis)


def _active(use: OpioidUse, facts: Facts) -> bool:
    started = use.start is None or use.start <= facts.as_of
    return started and (use.end is None or use.end >= facts.as_of)


def _dependence(facts: Facts) -> Presence:
    if facts.conditions is None:
        return Presence.UNKNOWN
    if any(c.concept == "opioid-dependence" for c in facts.conditions):
        return Presence.PRESENT
    return Presence.NOT_RECORDED


def _dependence_basis(facts: Facts) -> str:
    names = [c.source.display for c in facts.conditions or () if c.concept == "opioid-dependence"]
    return "recorded " + ", ".join(dict.fromkeys(names))
