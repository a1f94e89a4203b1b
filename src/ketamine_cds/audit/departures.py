"""Departures from the guideline by reason, the documentation-error rule, and the per-unit CSV exports.

**Likely documentation error** (the rule, written once: ``DOCUMENTATION_ERROR_SQL``): a dose over its limit
that is at least ``MANY_TIMES`` (10) times the limit (to within 1e-9). No rule can tell a recording error
from a dose given below that, so those are *clinical over-limit doses*, to be reviewed as given; and a dose
ten or a thousand times the limit is far more often a recording error than a dose given. Either way the
administration is counted as over the limit in the record and listed for review; the split tells a committee
which records to correct and which doses to discuss.

Its likely cause is named when one fits: **the unit looks a thousand times too large** (mcg recorded as mg,
or mg as g) when the dose was recorded in mg or g (alone, per kg or per time) and, read in the unit a
thousand times smaller, it is within a factor of ``MANY_TIMES`` of its limit (from a tenth of the limit to
less than ten times it). Otherwise the cause is *many times the limit*. A real 0.5 mg/kg bolus (1.43 times
the 0.35 mg/kg limit) is a clinical over-limit dose; 20,000 "mg" for 80 kg (mcg recorded as mg: 714 times the
limit, 0.71 times it read as mcg) is a likely documentation error with a swapped unit; 280 mg for 80 kg (10
times the limit, a hundredth of it read as mcg) is one with no unit swap to explain it.

The multiple of the limit is the findings' ``dose_per_kg`` over ``limit_per_kg``, whatever the limit is for
that administration (it comes from the knowledge base through the audit, never from here).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import duckdb

from .decide import BOUNDARY, parsed_units
from .sql import sql_path

MANY_TIMES = 10
SWAP_FACTOR = 1000
SWAPPABLE_MG_FACTORS = (Fraction(1), Fraction(1000))  # mg and g: a unit a thousand times smaller exists

MULTIPLE_SQL = "dose_per_kg / CAST(limit_per_kg AS DOUBLE)"
DOCUMENTATION_ERROR_SQL = f"coalesce(over AND {MULTIPLE_SQL} >= {MANY_TIMES} * (1 - {BOUNDARY}), false)"
CAUSE_SQL = f"""CASE WHEN NOT documentation_error THEN NULL
    WHEN dose_unit IN (SELECT text FROM swappable_units) AND multiple / {SWAP_FACTOR} >= 1 / {MANY_TIMES}
         AND multiple / {SWAP_FACTOR} < {MANY_TIMES} THEN 'unit'
    ELSE 'many-times' END"""
CAUSES = {
    "unit": "the unit looks a thousand times too large (mcg recorded as mg, or mg as g)",
    "many-times": f"{MANY_TIMES} or more times the limit, no unit swap explains it",
}

# the multiple of the limit in bins (left-closed); the first bins are clinical, the last likely errors
MULTIPLE_EDGES: tuple[float, ...] = (1, 1.1, 1.25, 1.5, 2, 3, 5, MANY_TIMES, 100, 1000)


def multiple_bin_sql() -> str:
    """The bin index of ``multiple`` (NULL when unknown); the rule's threshold decides the tenth edge."""
    clinical = " ".join(
        f"WHEN multiple < {MULTIPLE_EDGES[i + 1]} THEN {i}"
        for i in range(MULTIPLE_EDGES.index(MANY_TIMES) - 1)
    )
    start = MULTIPLE_EDGES.index(MANY_TIMES)
    errors = " ".join(
        f"WHEN multiple < {MULTIPLE_EDGES[i + 1]} THEN {i}" for i in range(start, len(MULTIPLE_EDGES) - 1)
    )
    return f"""CASE WHEN multiple IS NULL OR isnan(multiple) THEN NULL
        WHEN NOT documentation_error THEN CASE {clinical} ELSE {start - 1} END
        ELSE CASE {errors} ELSE {len(MULTIPLE_EDGES) - 1} END END"""


def multiple_bin_label(index: int) -> str:
    low = MULTIPLE_EDGES[index]
    if index + 1 >= len(MULTIPLE_EDGES):
        return f"{low:,g}× or more"
    return f"{low:,g}× to {MULTIPLE_EDGES[index + 1]:,g}×"


def swappable_units(units: Iterable[str | None]) -> list[str]:
    """Dose units recorded in mg or g (alone, per kg, per time), read by the engine's own unit parser."""
    return [
        text
        for text, unit in parsed_units(units)
        if unit is not None and unit.amount == "mass" and unit.factor in SWAPPABLE_MG_FACTORS
    ]


# --- per-unit exports ---------------------------------------------------------------------------------

EXPORT_DIR = "departures"
_FORMULA = "'=', '+', '-', '@', chr(9), chr(13)"  # first characters a spreadsheet would run as a formula


_EXPORT_NAME = re.compile(r"not-recorded\.csv|[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}\.csv")


def export_name(location: str | None) -> str:
    """A file name for a unit's departures: readable, safe on every file system, one per distinct name."""
    if location is None:
        return "not-recorded.csv"
    ascii_text = unicodedata.normalize("NFKD", location).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:40].strip("-") or "unit"
    digest = hashlib.sha256(location.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}.csv"


def _text(column: str) -> str:
    """A text column as a CSV cell no spreadsheet would run as a formula (a leading ' is added then)."""
    return f"CASE WHEN left({column}, 1) IN ({_FORMULA}) THEN '''' || {column} ELSE {column} END"


def _titled(con: duckdb.DuckDBPyConnection, titles: dict[str, str]) -> None:
    """A small table: each list of statement ids cited by a departure, as text with the statements' titles."""
    keys = con.execute(
        "SELECT DISTINCT array_to_string(contra_statements, ' ') FROM f WHERE category = 'departs' UNION "
        "SELECT DISTINCT array_to_string(dose_statements, ' ') FROM f WHERE category = 'departs'"
    ).fetchall()
    texts = [
        ", ".join(f"{s} ({titles[s]})" if s in titles else s for s in (key or "").split()) for (key,) in keys
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE titled AS SELECT unnest(?::VARCHAR[]) AS key, unnest(?::VARCHAR[]) AS text",
        [[k for (k,) in keys], texts],
    )


_OVER_BY = "ceil(multiple * 100) / 100"  # times the limit, rounded up: an over-limit dose never reads as 1.00
_REASON_SQL = f"""concat_ws('; ',
    CASE WHEN contraindicated THEN 'contraindicated: ' || coalesce(tc.text, '') END,
    CASE WHEN over AND documentation_error
         THEN 'likely documentation error: ' || printf('%.0f', ceil(multiple)) || ' times the limit of '
              || coalesce(td.text, '')
              || CASE WHEN cause = 'unit' THEN ' (the unit looks a thousand times too large; read so it is '
                      || printf('%.2f', multiple / {SWAP_FACTOR}) || ' times the limit)' ELSE '' END
         WHEN over THEN 'dose over the limit: ' || coalesce(printf('%.2f', {_OVER_BY}) || ' times the limit of ', '')
              || coalesce(td.text, '') END)"""


EXPORT_COLUMNS = (
    "admin_id",
    "administered_at",
    "location",
    "indication",
    "setting",
    "route",
    "kind",
    "dose_value",
    "dose_unit",
    "weight_kg",
    "dose_per_kg",
    "limit_per_kg",
    "times_limit",
    "verdict",
    "departure",
    "reason",
    "statements",
)


def write_exports(
    con: duckdb.DuckDBPyConnection, out_dir: Path, titles: dict[str, str]
) -> dict[str | None, str]:
    """One CSV per unit (location) of its departed administrations, with the reason; returns unit -> file.

    ``con`` has the report's view ``f`` (findings with their category, ``over``, ``multiple``...). Earlier
    exports (``*.csv`` in ``out_dir`` named as ``export_name`` names them) are removed first; any other file
    there is the user's, and stays.
    """
    for old in out_dir.glob("*.csv") if out_dir.is_dir() else ():
        if _EXPORT_NAME.fullmatch(old.name):  # an earlier audit's export; any other file is the user's
            old.unlink()
    try:
        _titled(con, titles)
        _departed(con)
        units = con.execute("SELECT unit_no, unit FROM export_units ORDER BY unit_no").fetchall()
        if units:
            out_dir.mkdir(parents=True, exist_ok=True)
        return {unit: _copy_unit(con, out_dir, int(unit_no), unit) for unit_no, unit in units}
    finally:
        for table in ("departed", "titled", "export_units"):
            con.execute(f"DROP TABLE IF EXISTS {table}")


def _departed(con: duckdb.DuckDBPyConnection) -> None:
    """The departed administrations with their export columns, numbered by unit (a small join, no window)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE export_units AS SELECT location AS unit, "
        "row_number() OVER (ORDER BY location NULLS LAST) AS unit_no "
        "FROM (SELECT DISTINCT location FROM f WHERE category = 'departs')"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE departed AS
        SELECT u.unit_no, f.location AS unit,
               {_text("admin_id")} AS admin_id, administered_at, {_text("location")} AS location,
               {_text("indication")} AS indication, {_text("setting")} AS setting, {_text("route")} AS route,
               {_text("kind")} AS kind, dose_value, {_text("dose_unit")} AS dose_unit,
               round(weight_kg, 2) AS weight_kg, round(dose_per_kg, 4) AS dose_per_kg,
               CAST(limit_per_kg AS DOUBLE) AS limit_per_kg,
               CASE WHEN over THEN {_OVER_BY} END AS times_limit, verdict,
               concat_ws(' and ', CASE WHEN contraindicated THEN 'contraindicated' END,
                         CASE WHEN over AND documentation_error THEN 'likely documentation error'
                              WHEN over THEN 'over the limit (clinical)' END) AS departure,
               {_REASON_SQL} AS reason,
               array_to_string(statements, ' ') AS statements
        FROM f
        JOIN export_units u ON u.unit IS NOT DISTINCT FROM f.location
        LEFT JOIN titled tc ON tc.key = array_to_string(f.contra_statements, ' ')
        LEFT JOIN titled td ON td.key = array_to_string(f.dose_statements, ' ')
        WHERE category = 'departs'
        ORDER BY u.unit_no  -- each unit's COPY then reads its own row groups only
    """)


def _copy_unit(con: duckdb.DuckDBPyConnection, out_dir: Path, unit_no: int, unit: str | None) -> str:
    name = export_name(unit)
    target = sql_path(out_dir / name)
    con.execute(
        f"COPY (SELECT {', '.join(EXPORT_COLUMNS)} FROM departed WHERE unit_no = {unit_no} "
        f"ORDER BY administered_at NULLS LAST, admin_id) TO '{target}' (HEADER, DELIMITER ',')"
    )
    return f"{EXPORT_DIR}/{name}"
