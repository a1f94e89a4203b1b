"""Opioid tolerance (FDA definition) and morphine milligram equivalents (CDC 2022 factors)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from ._facts import Facts, OpioidUse
from ._kb import KnowledgeBase
from ._units import format_apart


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


@dataclass(frozen=True, slots=True)
class _Taken:
    """An opioid use with a known daily amount, taken for at least the tolerance period."""

    use: OpioidUse
    amount: Fraction
    mme: Fraction
    days: int


def _unit(ingredient: str, kb: KnowledgeBase) -> str:
    return "mcg/h" if kb.opioids[ingredient].unit == "ug/h" else "mg/day"


def _describe(use: OpioidUse, kb: KnowledgeBase, days: int | None) -> str:
    unit = _unit(use.ingredient, kb)
    if use.as_needed:
        amount = "as needed"
    elif use.daily_amount is not None:
        threshold = kb.opioids[use.ingredient].tolerance_threshold
        amount = f"{format_apart(use.daily_amount, threshold)} {unit}"
    else:
        amount = "dose not readable"
    duration = f" for {days} days" if days is not None else ", start date unknown"
    mme = mme_per_day(use, kb)
    mme_text = f" ({format_apart(mme, kb.equianalgesic_mme_per_day)} MME/day)" if mme is not None else ""
    return f"{use.ingredient} {amount}{duration}{mme_text}"


def _describe_together(ingredient: str, taken: list[_Taken], kb: KnowledgeBase) -> str:
    """Uses of one opioid and, for more than one, their sum over the days they were all taken."""
    described = "; ".join(_describe(t.use, kb, t.days) for t in taken)
    if len(taken) == 1:
        return described
    amount = format_apart(
        sum((t.amount for t in taken), Fraction(0)), kb.opioids[ingredient].tolerance_threshold
    )
    days = min(t.days for t in taken)
    return f"{described}: {ingredient} {amount} {_unit(ingredient, kb)} together for {days} days"


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

    unknown: list[OpioidUse] = []  # not counted: amount (as needed, unreadable) or start date not known
    total_mme: Fraction | None = Fraction(0)
    # Every active use is taken today, so the uses taken for at least a week were all taken together for at
    # least the last week: their daily amounts add up. A use started less than a week ago is left out of
    # the sums (it adds to them for less than a week), as it is left out on its own.
    sustained: dict[str, list[_Taken]] = {}  # by ingredient: one unit each (fentanyl: transdermal mcg/h)
    for use in active:
        mme = mme_per_day(use, kb)
        total_mme = None if mme is None or total_mme is None else total_mme + mme
        days = (facts.as_of - use.start).days if use.start is not None else None
        if mme is None or use.daily_amount is None or days is None:
            unknown.append(use)
            continue
        if days >= kb.tolerance_days:
            sustained.setdefault(use.ingredient, []).append(_Taken(use, use.daily_amount, mme, days))

    # A listed opioid is judged by its own FDA threshold, all its uses together; other opioids, and
    # combinations of different opioids, by their MME in total.
    tolerant_because: list[str] = []
    for ingredient, taken in sustained.items():
        threshold = kb.opioids[ingredient].tolerance_threshold
        if threshold is not None and sum(t.amount for t in taken) >= threshold:
            tolerant_because.append(_describe_together(ingredient, taken, kb))
    long_mme = sum((t.mme for taken in sustained.values() for t in taken), Fraction(0))
    combination = len(sustained) > 1 or any(kb.opioids[i].tolerance_threshold is None for i in sustained)

    if tolerant_because:
        basis = "; ".join(tolerant_because)
        tolerant = Presence.PRESENT
    elif long_mme >= kb.equianalgesic_mme_per_day and combination:
        long_enough = [_describe(t.use, kb, t.days) for taken in sustained.values() for t in taken]
        total = format_apart(long_mme, kb.equianalgesic_mme_per_day)
        basis = f"{'; '.join(long_enough)}: {total} MME/day in total"
        tolerant = Presence.PRESENT
    elif unknown:
        basis = f"{_unknown_because(unknown)}: " + "; ".join(
            _describe(u, kb, (facts.as_of - u.start).days if u.start else None) for u in active
        )
        tolerant = Presence.UNKNOWN
    else:
        recent = any(u.start is not None and (facts.as_of - u.start).days < kb.tolerance_days for u in active)
        why = (
            f"current opioids not at a tolerance dose for {kb.tolerance_days} days or longer: "
            if recent
            else "current opioids below the opioid-tolerance thresholds: "
        )
        basis = why + "; ".join(
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
