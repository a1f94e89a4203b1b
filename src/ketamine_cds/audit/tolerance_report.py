"""Adherence by opioid tolerance, for ``summary.json`` (key ``opioid_tolerance``) and a section of the report.

Tolerance is the one the engine used for each administration (``findings.opioid_tolerance``): tolerant, not
tolerant (current opioids below the FDA thresholds), no opioid in the record, or unknown, and for unknown, why
(``findings.opioid_unknown_reason``). Adherence is the report's own category (``measures.classify``, through
the report's view ``f``), so the shares here add up with the report's headline. Only assessed administrations
are counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._kb import KnowledgeBase, load_knowledge
from .measures import CATEGORIES

GROUPS: tuple[tuple[str, str, str], ...] = (  # tolerance word, label, what it means
    ("present", "tolerant", "opioid-tolerant by the FDA definition (or stated so)"),
    ("absent", "not tolerant", "current opioids below the FDA thresholds"),
    ("not-recorded", "no opioid recorded", "no current opioid prescription in the record: not ruled out"),
    ("unknown", "unknown", "the record does not tell (see why below); never counted as not tolerant"),
)


def tolerance_summary(findings: Path, kb: KnowledgeBase | None = None) -> dict[str, Any]:
    """Assessed administrations per tolerance and adherence category, and why tolerance was unknown."""
    from .report import open_findings  # the report's view of the findings, with each row's category

    con = open_findings(findings, kb or load_knowledge())
    try:
        counts = con.execute(
            "SELECT coalesce(opioid_tolerance, 'unknown'), category, count(*) FROM f WHERE NOT bad GROUP BY ALL"
        ).fetchall()
        reasons = con.execute(
            "SELECT coalesce(opioid_unknown_reason, 'not given'), count(*) FROM f "
            "WHERE NOT bad AND coalesce(opioid_tolerance, 'unknown') = 'unknown' GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    finally:
        con.close()
    groups: dict[str, dict[str, Any]] = {}
    for state, label, meaning in GROUPS:
        adherence = {key: 0 for key, _, _ in CATEGORIES}
        groups[state] = {"label": label, "meaning": meaning, "assessed": 0, "adherence": adherence}
    for state, category, n in counts:
        group = groups.setdefault(
            str(state), {"label": str(state), "meaning": "", "assessed": 0, "adherence": {}}
        )
        group["assessed"] += int(n)
        group["adherence"][str(category)] = group["adherence"].get(str(category), 0) + int(n)
    return {"by_tolerance": groups, "unknown_because": {str(r): int(n) for r, n in reasons}}
