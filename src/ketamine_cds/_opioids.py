"""Opioid tolerance (FDA definition) and morphine milligram equivalents (CDC 2022 factors)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
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


# Why tolerance is unknown, in fixed words (no patient data): the batch audit counts administrations by them.
NOT_READ = "opioid prescriptions could not be read"
TAKEN_AS_NEEDED = "an opioid is taken as needed, so the amount taken is not known"
NOT_READABLE = "an opioid prescription's dose or start date could not be read"


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Whether the patient is opioid-tolerant on one day, and why (``opioid_tolerance``).

    ``unknown_because`` is, for an unknown tolerance, the reason in fixed words (``NOT_READ``,
    ``TAKEN_AS_NEEDED``, ``NOT_READABLE``, or a reason of the caller's); ``basis`` says it for this patient.
    """

    state: Presence
    mme_per_day: Fraction | None  # current total; None when no opioid is active or a daily amount is unknown
    basis: str
    unknown_because: str | None = None


def _unknown_because(uses: list[OpioidUse]) -> str:
    """Why the opioid uses that could not be counted leave tolerance unknown."""
    reasons = []
    if any(u.as_needed for u in uses):
        reasons.append(TAKEN_AS_NEEDED)
    if any(not u.as_needed or u.start is None for u in uses):
        reasons.append(NOT_READABLE)
    return " and ".join(reasons)


def opioid_status(facts: Facts, kb: KnowledgeBase) -> OpioidStatus:
    """Tolerance (stated in the facts, else decided from their opioid uses) and dependence (a condition)."""
    dependent = _dependence(facts)
    tolerance = facts.opioid_tolerance or opioid_tolerance(facts.opioids, facts.as_of, kb)
    basis = tolerance.basis
    if facts.opioids is None and facts.opioid_tolerance is None:
        return OpioidStatus(tolerance.state, dependent, None, basis)
    if dependent is Presence.PRESENT and tolerance.state is not Presence.PRESENT:
        basis = _dependence_basis(facts)
    elif dependent is Presence.PRESENT:
        basis = f"{_dependence_basis(facts)}; {basis}"
    return OpioidStatus(tolerance.state, dependent, tolerance.mme_per_day, basis)


def opioid_tolerance(opioids: Sequence[OpioidUse] | None, as_of: date, kb: KnowledgeBase) -> Tolerance:
    """The FDA definition on ``as_of``, from the opioid uses in the record (None: they could not be read).

    The engine's one rule for tolerance: ``assess`` decides it here from the facts, and the batch audit once
    per patient and day from the prescriptions it reads."""
    if opioids is None:
        return Tolerance(Presence.UNKNOWN, None, NOT_READ, NOT_READ)
    active = [u for u in opioids if _active(u, as_of)]
    if not active:
        return Tolerance(Presence.NOT_RECORDED, None, "no current opioid prescription in the record")

    unknown: list[OpioidUse] = []  # not counted: amount (as needed, unreadable) or start date not known
    total_mme: Fraction | None = Fraction(0)
    # Every active use is taken today, so the uses taken for at least a week were all taken together for at
    # least the last week: their daily amounts add up. A use started less than a week ago is left out of
    # the sums (it adds to them for less than a week), as it is left out on its own.
    sustained: dict[str, list[_Taken]] = {}  # by ingredient: one unit each (fentanyl: transdermal mcg/h)
    for use in active:
        mme = mme_per_day(use, kb)
        total_mme = None if mme is None or total_mme is None else total_mme + mme
        days = (as_of - use.start).days if use.start is not None else None
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

    def days_of(u: OpioidUse) -> int | None:
        return (as_of - u.start).days if u.start else None

    if tolerant_because:
        return Tolerance(Presence.PRESENT, total_mme, "; ".join(tolerant_because))
    if long_mme >= kb.equianalgesic_mme_per_day and combination:
        long_enough = [_describe(t.use, kb, t.days) for taken in sustained.values() for t in taken]
        total = format_apart(long_mme, kb.equianalgesic_mme_per_day)
        return Tolerance(Presence.PRESENT, total_mme, f"{'; '.join(long_enough)}: {total} MME/day in total")
    described = "; ".join(_describe(u, kb, days_of(u)) for u in active)
    if unknown:
        reason = _unknown_because(unknown)
        return Tolerance(Presence.UNKNOWN, total_mme, f"{reason}: {described}", reason)
    recent = any(u.start is not None and (as_of - u.start).days < kb.tolerance_days for u in active)
    why = (
        f"current opioids not at a tolerance dose for {kb.tolerance_days} days or longer: "
        if recent
        else "current opioids below the opioid-tolerance thresholds: "
    )
    return Tolerance(Presence.ABSENT, total_mme, why + described)


def _active(use: OpioidUse, as_of: date) -> bool:
    started = use.start is None or use.start <= as_of
    return started and (use.end is None or use.end >= as_of)


def _dependence(facts: Facts) -> Presence:
    if facts.conditions is None:
        return Presence.UNKNOWN
    if any(c.concept == "opioid-dependence" for c in facts.conditions):
        return Presence.PRESENT
    return Presence.NOT_RECORDED


def _dependence_basis(facts: Facts) -> str:
    names = [c.source.display for c in facts.conditions or () if c.concept == "opioid-dependence"]
    return "recorded " + ", ".join(dict.fromkeys(names))
