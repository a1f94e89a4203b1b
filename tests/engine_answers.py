"""The batch audit's answers beside the live engine's, row by row (the audit-equals-engine tests)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb

from ketamine_cds import assess, load_knowledge
from ketamine_cds._site import Site
from ketamine_cds.audit.canonical import COLUMN_NAMES, facts_from_row
from ketamine_cds.audit.decide import decide

KB = load_knowledge()


def engine_answers(findings: Path, source: str, site: Site | None = None) -> list[tuple[Any, ...]]:
    """Each row of the source assessed one by one, next to what the audit wrote for it (with a site: the
    guideline's own answer beside the site's, and each row's limit for its weight)."""
    con = duckdb.connect()
    try:
        columns = ", ".join(f"s.{c}" for c in COLUMN_NAMES)
        rows = con.execute(
            f"SELECT {columns}, f.verdict, f.statements, f.problem, f.dose_status, f.limit_per_kg, "
            "f.opioid_tolerance, f.opioid_unknown_reason, f.guideline_verdict, f.guideline_dose_status, "
            f"f.limit_source FROM ({source}) s JOIN read_parquet('{findings}') f USING (admin_id) "
            "ORDER BY s.admin_id"
        ).fetchall()
    finally:
        con.close()
    mismatches = []
    for row in rows:
        canonical = dict(zip(COLUMN_NAMES, row[: len(COLUMN_NAMES)], strict=True))
        audited = row[len(COLUMN_NAMES) :]
        live = decide(canonical, KB, site)
        limit, source_ = live.limit_per_kg, None
        if (
            live.problem is None
        ):  # the row's own limit for its weight: the engine's, or the tighter with a cap
            facts = facts_from_row(canonical, KB)
            check = assess(facts, KB, site).dose_check
            if check is not None:
                limit, source_ = float(check.limit_per_kg), check.limit_source
            elif limit is not None and live.limit_cap is not None and facts.weight_kg:
                limit = min(limit, live.limit_cap / float(facts.weight_kg))
        expected = (
            live.verdict,
            live.statements,
            live.problem is None,
            live.dose_status,
            limit,
            live.opioid_tolerance,
            live.opioid_unknown_reason,
            live.guideline_verdict,
            live.guideline_dose_status,
            source_,
        )
        written = (audited[0], list(audited[1] or []), audited[2] is None, *audited[3:])
        same_limit = (expected[4] is None) == (written[4] is None) and (
            expected[4] is None or math.isclose(expected[4], written[4], rel_tol=1e-12)
        )
        if not same_limit or expected[:4] + expected[5:] != written[:4] + written[5:]:
            mismatches.append((canonical, expected, written))
    return mismatches
