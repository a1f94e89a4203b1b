"""What the audit counts: each administration's category and the headline measures a committee can quote.

Everything here reads the engine's own answer for an administration (its ``verdict`` and ``dose_status`` in
findings.parquet); nothing re-decides it. The rules are written once, here, in Python: the report applies
them in SQL through a small lookup table of the (verdict, dose status) pairs found (``row_classes``).

**Categories** (each assessed administration is in exactly one, the first that applies):

1. *outside the scope*: a use the pain guidelines do not cover (verdict ``out-of-scope``);
2. *departs*: the record shows a contraindication (verdict ``contraindicated``) or the dose is over its limit
   (dose status ``exceeds``, or ``exceeds-unless-intensive-care``: over the outside-ICU limit with the setting
   not recorded, which is never read as intensive care; or verdict ``dose-exceeds-limit``);
3. *use not supported*: the guideline does not support this use (verdict ``not-indicated`` or
   ``insufficient-evidence``);
4. *cannot tell*: a datum the decision depends on is missing (verdict ``needs-information``), or the dose could
   not be checked (no weight, no concentration);
5. *follows*: supported use (``consider``, ``may-consider``) with the dose within its limit (a chronic infusion
   below the range used included), or no dose to check (oral and intranasal use, no dose recorded);

and *not assessed* for a row that could not be read. A verdict or dose status this module does not know (a
newer engine) is *unclassified*, shown as such and never counted as following the guideline.

**Headline measures** (numerator / denominator; every administration not in the denominator is listed under
an exclusion reason, so denominator + exclusions = all rows):

- *Doses within the limit*: IV doses within their limit / IV doses compared with a limit (within or over).
  Excluded: rows not assessed; no dose compared (oral, intranasal, out of scope, no IV dose); doses that could
  not be checked. (Every IV dose has a limit since guideline revision 2: in intensive care the highest rate the
  guidelines describe.)
- *Contraindicated administrations*: verdict ``contraindicated`` / assessed administrations within the
  guideline's scope. A contraindication the record does not mention is not found, so this is a lower bound.
- *Uses the guideline does not support*: category *use not supported* / assessed within scope. An
  administration that is also contraindicated or over the limit is counted there instead (the verdict names
  the most decisive finding).
- *Cannot tell*: category *cannot tell* / assessed within scope, with its reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from .._assessment import DoseStatus, Verdict

Category = Literal["not-assessed", "scope", "departs", "unsupported", "unclear", "follows", "unclassified"]

# key, label, colour (Okabe-Ito, colour-blind safe); the order of the rules above
CATEGORIES: tuple[tuple[Category, str, str], ...] = (
    ("follows", "follows the guideline", "#0072b2"),
    ("unsupported", "use the guideline does not support", "#cc79a7"),
    ("unclear", "cannot tell", "#a9b1ba"),
    ("departs", "departs from it", "#d55e00"),
    ("scope", "outside the guideline's scope", "#e0cf9a"),
    ("unclassified", "not classified (unknown verdict or dose status)", "#6b7b8c"),
)
CATEGORY_LABELS: dict[str, str] = {
    "not-assessed": "not assessed",
    **{key: label for key, label, _ in CATEGORIES},
}

SCOPE_VERDICTS = frozenset({Verdict.OUT_OF_SCOPE.value})
CONTRAINDICATED_VERDICTS = frozenset({Verdict.CONTRAINDICATED.value})
OVER_VERDICTS = frozenset({Verdict.DOSE_EXCEEDS_LIMIT.value})
# over the outside-ICU limit with the setting not recorded is over it: an unknown setting is never read as
# intensive care (the engine's verdict is dose-exceeds-limit too)
OVER_STATUSES = frozenset({DoseStatus.EXCEEDS.value, DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE.value})
UNSUPPORTED_VERDICTS = frozenset({Verdict.NOT_INDICATED.value, Verdict.INSUFFICIENT_EVIDENCE.value})
UNCLEAR_VERDICTS = frozenset({Verdict.NEEDS_INFORMATION.value})
UNCLEAR_STATUSES = frozenset({DoseStatus.NO_WEIGHT.value, DoseStatus.NO_CONCENTRATION.value})
FOLLOWS_VERDICTS = frozenset({Verdict.CONSIDER.value, Verdict.MAY_CONSIDER.value})
# a chronic infusion below the range used is within its limit (information, not an error)
WITHIN_STATUSES = frozenset({DoseStatus.WITHIN.value, DoseStatus.BELOW_RANGE.value})
FOLLOWS_STATUSES = frozenset({None, *WITHIN_STATUSES})
COMPARED_STATUSES = WITHIN_STATUSES | OVER_STATUSES

# why a dose is not in the dose measure's denominator, per dose status (None: no dose compared)
DOSE_EXCLUSIONS: dict[str | None, str] = {
    None: "no IV dose compared with a limit (oral or intranasal use, out of scope, or no dose recorded)",
    DoseStatus.NO_WEIGHT.value: "dose not checked: no weight for a dose in mg",
    DoseStatus.NO_CONCENTRATION.value: "dose not checked: no concentration for a volume",
}
UNCLEAR_REASONS: dict[str, str] = {
    DoseStatus.NO_WEIGHT.value: "dose not checked: no weight for a dose in mg",
    DoseStatus.NO_CONCENTRATION.value: "dose not checked: no concentration for a volume",
    Verdict.NEEDS_INFORMATION.value: "a datum the decision depends on is missing (verdict needs-information)",
}
NOT_ASSESSED = "row not assessed (could not be read)"
OUT_OF_SCOPE = "use outside the guideline's scope (anesthesia, procedural sedation, depression)"


@dataclass(frozen=True)
class RowClass:
    """What the report needs to know of one (assessed?, verdict, dose status) combination."""

    category: Category
    contraindicated: bool
    over: bool  # a dose over its limit, within the guideline's scope


def classify(bad: bool, verdict: str | None, status: str | None) -> RowClass:
    if bad:
        return RowClass("not-assessed", False, False)
    if verdict in SCOPE_VERDICTS:
        return RowClass("scope", False, False)
    contraindicated = verdict in CONTRAINDICATED_VERDICTS
    over = verdict in OVER_VERDICTS or status in OVER_STATUSES
    if contraindicated or over:
        return RowClass("departs", contraindicated, over)
    if verdict in UNSUPPORTED_VERDICTS:
        return RowClass("unsupported", False, False)
    if verdict in UNCLEAR_VERDICTS or status in UNCLEAR_STATUSES:
        return RowClass("unclear", False, False)
    if verdict in FOLLOWS_VERDICTS and status in FOLLOWS_STATUSES:
        return RowClass("follows", False, False)
    return RowClass("unclassified", False, False)


def unclear_reason(verdict: str | None, status: str | None) -> str:
    """Why the audit cannot tell: the dose first (it says what is missing), else the verdict."""
    if status in UNCLEAR_REASONS:
        return UNCLEAR_REASONS[status]
    return UNCLEAR_REASONS.get(verdict or "", f"verdict {verdict}, dose status {status}")


@dataclass(frozen=True)
class Cell:
    """Administrations sharing an answer: the unit the measures are counted in."""

    bad: bool
    verdict: str | None
    status: str | None
    n: int
    documentation_error: int = 0  # of them, doses over the limit the documentation-error rule flags

    @property
    def row_class(self) -> RowClass:
        return classify(self.bad, self.verdict, self.status)


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    numerator: int
    denominator: int
    counts: str  # what the numerator counts
    of: str  # what the denominator counts
    excluded: tuple[tuple[str, int], ...]
    parts: tuple[tuple[str, int], ...] = ()  # a breakdown of the numerator (or of the denominator)
    note: str = ""
    parts_of: Literal["numerator", "denominator"] = "numerator"

    @property
    def share(self) -> Fraction | None:
        return Fraction(self.numerator, self.denominator) if self.denominator else None

    def json(self) -> dict[str, object]:
        share = self.share
        return {
            "label": self.label,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "share": None if share is None else round(float(share), 4),
            "numerator_counts": self.counts,
            "denominator_counts": self.of,
            "excluded": dict(self.excluded),
            "parts": dict(self.parts),
            "parts_of": self.parts_of,
            "note": self.note,
        }


def _add(into: dict[str, int], key: str, n: int) -> None:
    if n:
        into[key] = into.get(key, 0) + n


def _sorted(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def dose_measure(cells: Iterable[Cell]) -> Measure:
    within = compared = over_errors = 0
    excluded: dict[str, int] = {}
    for c in cells:
        if c.bad:
            _add(excluded, NOT_ASSESSED, c.n)
        elif c.status in COMPARED_STATUSES:
            compared += c.n
            within += c.n if c.status in WITHIN_STATUSES else 0
            over_errors += c.documentation_error
        else:
            _add(excluded, DOSE_EXCLUSIONS.get(c.status, f"dose status {c.status}"), c.n)
    over = compared - within
    return Measure(
        "dose-within-limit",
        "Doses within the limit",
        within,
        compared,
        "IV doses within their limit",
        "IV doses compared with a limit (within it or over it), whatever the verdict",
        _sorted(excluded),
        (
            ("within the limit", within),
            ("over the limit, clinical", over - over_errors),
            ("over the limit, likely documentation error", over_errors),
        ),
        "Doses over the limit are counted as recorded; the likely documentation errors among them are shown "
        "apart.",
        "denominator",
    )


def _in_scope(
    cells: Iterable[Cell],
    key: str,
    label: str,
    counts: str,
    counted: Callable[[Cell], bool],
    part: Callable[[Cell], str],
    note: str,
) -> Measure:
    numerator = denominator = 0
    excluded: dict[str, int] = {}
    parts: dict[str, int] = {}
    for c in cells:
        category = c.row_class.category
        if category == "not-assessed":
            _add(excluded, NOT_ASSESSED, c.n)
        elif category == "scope":
            _add(excluded, OUT_OF_SCOPE, c.n)
        else:
            denominator += c.n
            if counted(c):
                numerator += c.n
                _add(parts, part(c), c.n)
    return Measure(
        key,
        label,
        numerator,
        denominator,
        counts,
        "assessed administrations within the guideline's scope",
        _sorted(excluded),
        _sorted(parts),
        note,
    )


def headline_measures(cells: list[Cell]) -> list[Measure]:
    """The four measures of the module docstring, from the counts per (verdict, dose status)."""
    return [
        dose_measure(cells),
        _in_scope(
            cells,
            "contraindicated",
            "Contraindicated administrations",
            "administrations whose record shows a contraindication (verdict contraindicated)",
            lambda c: c.row_class.contraindicated,
            lambda c: "dose also over the limit" if c.row_class.over else "dose not over the limit",
            "A contraindication the record does not mention is not found, not ruled out: a lower bound.",
        ),
        _in_scope(
            cells,
            "unsupported",
            "Uses the guideline does not support",
            "administrations for a use the guideline does not support (verdict not-indicated or "
            "insufficient-evidence)",
            lambda c: c.row_class.category == "unsupported",
            lambda c: f"verdict {c.verdict}",
            "An administration that is also contraindicated or over the limit is counted there instead: the "
            "verdict names the most decisive finding.",
        ),
        _in_scope(
            cells,
            "cannot-tell",
            "Cannot tell",
            "administrations the audit cannot judge: a datum missing, a dose not checkable, or an infusion over "
            "the limit with the setting not recorded",
            lambda c: c.row_class.category == "unclear",
            lambda c: unclear_reason(c.verdict, c.status),
            "Missing data are never read as normal: these neither follow nor depart from the guideline.",
        ),
    ]


@dataclass
class Partition:
    """Assessed administrations by category, and the verdict/status pairs nobody classified."""

    counts: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)


def partition(cells: Iterable[Cell]) -> Partition:
    result = Partition()
    for c in cells:
        category = c.row_class.category
        _add(result.counts, category, c.n)
        if category == "unclassified":
            _add(result.unknown, f"verdict {c.verdict}, dose status {c.status}", c.n)
    return result
