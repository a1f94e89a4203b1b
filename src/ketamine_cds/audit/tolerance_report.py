"""Adherence by opioid tolerance, for ``summary.json`` (key ``opioid_tolerance``) and a section of the report.

Tolerance is the one the engine used for each administration (``findings.opioid_tolerance``): tolerant, not
tolerant (current opioids below the FDA thresholds), no opioid in the record, or unknown, and for unknown, why
(``findings.opioid_unknown_reason``). Adherence is the report's own classification (``report._adherence_sql``),
so the shares here add up with the report's headline. Only assessed administrations are counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from .report import CATEGORIES, _adherence_sql, _e, _n, _parquet, _pct, _table

GROUPS: tuple[tuple[str, str, str], ...] = (  # tolerance word, label, what it means
    ("present", "tolerant", "opioid-tolerant by the FDA definition (or stated so)"),
    ("absent", "not tolerant", "current opioids below the FDA thresholds"),
    ("not-recorded", "no opioid recorded", "no current opioid prescription in the record: not ruled out"),
    ("unknown", "unknown", "the record does not tell (see why below); never counted as not tolerant"),
)


def tolerance_summary(findings: Path) -> dict[str, Any]:
    """Assessed administrations per tolerance and adherence category, and why tolerance was unknown."""
    con = duckdb.connect()
    try:
        source = _adherence_sql(_parquet(findings))
        counts = con.execute(
            f"SELECT coalesce(opioid_tolerance, 'unknown'), adherence, count(*) FROM ({source}) "
            "WHERE NOT bad GROUP BY ALL"
        ).fetchall()
        reasons = con.execute(
            f"SELECT coalesce(opioid_unknown_reason, 'not given'), count(*) FROM ({source}) "
            "WHERE NOT bad AND coalesce(opioid_tolerance, 'unknown') = 'unknown' GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    finally:
        con.close()
    groups: dict[str, dict[str, Any]] = {}
    for state, label, _ in GROUPS:
        adherence = {key: 0 for key, _, _ in CATEGORIES}
        groups[state] = {"label": label, "assessed": 0, "adherence": adherence}
    for state, category, n in counts:
        group = groups.setdefault(str(state), {"label": str(state), "assessed": 0, "adherence": {}})
        group["assessed"] += int(n)
        group["adherence"][str(category)] = group["adherence"].get(str(category), 0) + int(n)
    return {"by_tolerance": groups, "unknown_because": {str(r): int(n) for r, n in reasons}}


def tolerance_section(summary: Mapping[str, Any]) -> str:
    """The report's section "Adherence by opioid tolerance" (empty when the summary has no such key)."""
    data = summary.get("opioid_tolerance")
    if not isinstance(data, Mapping):
        return ""
    groups: Mapping[str, Any] = data.get("by_tolerance", {})
    meaning = {state: text for state, _, text in GROUPS}
    headers = [("Opioid tolerance", ""), ("Assessed", "num")] + [(label, "num") for _, label, _ in CATEGORIES]
    rows = []
    for state, group in groups.items():
        assessed = int(group.get("assessed", 0))
        cells = [
            (
                f"<strong>{_e(group.get('label', state))}</strong><br><small>{_e(meaning.get(state, ''))}</small>",
                "",
            )
        ]
        cells.append((_n(assessed), "num"))
        adherence = group.get("adherence", {})
        for key, _, _ in CATEGORIES:
            n = int(adherence.get(key, 0))
            cells.append((f"{_e(_pct(n, assessed))}<br><small>{_n(n)}</small>", "num"))
        rows.append(cells)
    reasons = data.get("unknown_because", {})
    why = "".join(f"<li>{_e(reason)}: {_n(int(n))}</li>" for reason, n in reasons.items())
    return (
        '<section id="opioid-tolerance" aria-labelledby="opioid-tolerance-h">'
        '<h2 id="opioid-tolerance-h">Adherence by opioid tolerance</h2>'
        "<p>Opioid tolerance on the day of each administration, as the engine decided it from the patient's "
        "opioid prescriptions (FDA definition: a listed opioid at its threshold, or 60 MME/day, for a week or "
        "longer). It decides the support for ketamine in opioid-tolerant surgery and sickle cell pain. Shares "
        "are of the assessed administrations in each row.</p>"
        + _table(headers, rows, "Adherence by opioid tolerance")
        + (f"<h3>Why tolerance was unknown</h3><ul>{why}</ul>" if why else "")
        + "</section>"
    )
