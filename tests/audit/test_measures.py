"""The audit's measures on small tables with known answers: every numerator, denominator and exclusion, the
documentation-error rule, departures by reason, per-unit run charts and the per-unit CSV exports.

Each row below says what the engine answers for it and why; the tests check that the report layer counts it
where the definitions (``audit/measures.py``, ``audit/departures.py``) say, in summary.json, in the page and in
the unit's CSV, with DuckDB as the real database.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ketamine_cds._assessment import DoseStatus, Verdict
from ketamine_cds.audit.canonical import COLUMN_NAMES
from ketamine_cds.audit.departures import export_name, swappable_units
from ketamine_cds.audit.measures import CATEGORIES, classify
from ketamine_cds.audit.run import run_audit, write_outputs
from report_html import Page

COLUMNS = [c for c in COLUMN_NAMES if c != "input_problem"]
BASE: dict[str, Any] = {
    "patient_id": "P",
    "administered_at": "2025-03-01 10:00:00",
    "route": "intravenous",
    "kind": "bolus",
    "dose_unit": "mg",
    "concentration_mg_per_ml": "",
    "weight_value": 80,
    "weight_unit": "kg",
    "setting": "non-intensive-care",
    "location": "Ward A",
    "indication": "perioperative",
    "procedure_class": "abdominal",
    "conditions": "",
    "prior_iv_ketamine": "",
    "pca_sole_agent": "false",
}

# 80 kg throughout: the bolus limit 0.35 mg/kg is 28 mg
KNOWN: list[dict[str, Any]] = [
    {"admin_id": "W1", "dose_value": 20},  # 0.25 mg/kg, severe-pain surgery: follows
    {"admin_id": "O1", "dose_value": 0.5, "dose_unit": "mg/kg"},  # a real 0.5 mg/kg bolus: 1.43x, clinical
    {"admin_id": "E1", "dose_value": 20000},  # mcg recorded as mg: 714x; read as mcg 0.71x: unit swap
    {"admin_id": "E2", "dose_value": 10, "dose_unit": "g"},  # mg recorded as g: 357x; unit swap
    {"admin_id": "M1", "dose_value": 300000, "dose_unit": "mcg"},  # 3.75 mg/kg = 10.7x; no swap (mcg)
    {"admin_id": "B10", "dose_value": 280},  # exactly 10x: an error; read as mcg 0.01x: no swap explains it
    {"admin_id": "B9", "dose_value": 279},  # 9.96x: clinical
    {"admin_id": "C1", "dose_value": 20, "conditions": "pregnancy"},  # contraindicated, dose within
    {
        "admin_id": "C2",
        "dose_value": 40,
        "conditions": "psychosis;pregnancy",
        "location": "Ward B",
    },  # and 1.43x
    {"admin_id": "U1", "dose_value": 20, "procedure_class": "mild", "location": "Ward B"},  # not-indicated
    {
        "admin_id": "U2",
        "dose_value": 20,
        "indication": "fibromyalgia",
        "procedure_class": "",
        "location": "Ward B",
    },
    {
        "admin_id": "N1",
        "dose_value": 20,
        "indication": "",
        "procedure_class": "",
        "location": "Ward B",
    },  # needs-info
    {
        "admin_id": "NW",
        "dose_value": 20,
        "weight_value": "",
        "weight_unit": "",
        "location": "Ward B",
    },  # no weight
    # an infusion over the outside-intensive-care limit, setting unknown (never read as intensive care, so it
    # departs: 1.5x); no location recorded
    {
        "admin_id": "S1",
        "kind": "infusion",
        "dose_value": 1.5,
        "dose_unit": "mg/kg/h",
        "setting": "unknown",
        "location": "",
    },
    # 2 mg/kg/h in intensive care: within the highest rate the guidelines describe (7 mg/kg/h)
    {
        "admin_id": "I1",
        "kind": "infusion",
        "dose_value": 2,
        "dose_unit": "mg/kg/h",
        "setting": "intensive-care",
        "location": "ICU",
    },
    {
        "admin_id": "OS",
        "dose_value": 100,
        "indication": "procedural-sedation",
        "procedure_class": "",
        "location": "ICU",
    },
    {
        "admin_id": "OR",
        "route": "oral",
        "kind": "",
        "dose_value": "",
        "dose_unit": "",
        "indication": "crps",
        "procedure_class": "",
        "prior_iv_ketamine": "true",
        "location": "Pain clinic",
    },
    {"admin_id": "BAD", "dose_value": 20, "dose_unit": "mgs"},  # unknown unit: not assessed
]


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({**BASE, **row} for row in rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("known")
    run_audit(write_rows(root / "in" / "known.csv", KNOWN), root / "out")
    return json.loads((root / "out" / "summary.json").read_text()), root / "out"


# --- the rules themselves -------------------------------------------------------------------------------


def test_every_verdict_and_dose_status_the_engine_gives_has_a_category() -> None:
    """A verdict or dose status added to the engine must be placed here before the report counts it."""
    statuses: list[str | None] = [None, *(s.value for s in DoseStatus)]
    for verdict, status in itertools.product([v.value for v in Verdict], statuses):
        assert classify(False, verdict, status).category != "unclassified", (verdict, status)
    assert classify(False, "a-newer-verdict", None).category == "unclassified"  # never "follows"
    assert classify(True, None, None).category == "not-assessed"
    assert {key for key, _, _ in CATEGORIES} >= {"follows", "unsupported", "unclear", "departs", "scope"}


def test_only_mg_and_g_units_can_be_read_a_thousand_times_smaller() -> None:
    units = ["mg", "mg/kg", "mg/h", "mg/kg/h", "g", "mcg", "mcg/kg/min", "mL", "mL/h", "mgs", None]
    assert swappable_units(units) == ["mg", "mg/kg", "mg/h", "mg/kg/h", "g"]


def test_export_names_are_safe_readable_and_distinct() -> None:
    names = [
        export_name(x) for x in ("Ward 4B", "ward-4b", "WARD 4B", "../../etc/passwd", "<script>", "", None)
    ]
    assert names[0].startswith("ward-4b-") and names[0].endswith(".csv")
    assert len(set(names)) == len(names)  # one file per distinct unit name
    assert all(
        n == n.lower() and "/" not in n and n.replace("-", "").replace(".", "").isalnum() for n in names
    )
    assert names[-1] == "not-recorded.csv" and names[-2].startswith("unit-")


# --- the known table ------------------------------------------------------------------------------------


def test_headline_measures_have_the_known_numerators_denominators_and_exclusions(
    known: tuple[dict[str, Any], Path],
) -> None:
    summary, _ = known
    m = summary["measures"]
    assert summary["administrations"] == 18 and summary["bad_rows"] == 1
    dose = m["dose-within-limit"]
    assert (dose["numerator"], dose["denominator"]) == (6, 14)  # W1 C1 N1 U1 U2 I1 of those and 8 over
    assert dose["parts"] == {
        "within the limit": 6,
        "over the limit, clinical": 4,  # O1 B9 C2 S1
        "over the limit, likely documentation error": 4,  # E1 E2 M1 B10
    }
    assert dose["excluded"] == {
        "row not assessed (could not be read)": 1,
        "no IV dose compared with a limit (oral or intranasal use, out of scope, or no dose recorded)": 2,
        "dose not checked: no weight for a dose in mg": 1,
    }
    in_scope_excluded = {
        "row not assessed (could not be read)": 1,
        "use outside the guideline's scope (anesthesia, procedural sedation, depression)": 1,
    }
    contra = m["contraindicated"]
    assert (contra["numerator"], contra["denominator"], contra["excluded"]) == (2, 16, in_scope_excluded)
    assert contra["parts"] == {"dose also over the limit": 1, "dose not over the limit": 1}
    unsupported = m["unsupported"]
    assert (unsupported["numerator"], unsupported["denominator"]) == (2, 16)
    assert unsupported["parts"] == {"verdict not-indicated": 2}  # U1 (mild pain), U2 (fibromyalgia, grade D)
    unclear = m["cannot-tell"]
    assert (unclear["numerator"], unclear["denominator"], unclear["excluded"]) == (2, 16, in_scope_excluded)
    assert set(unclear["parts"].values()) == {1} and len(unclear["parts"]) == 2  # N1, NW: one reason each
    assert unclear["share"] == round(2 / 16, 4)
    for measure in m.values():
        assert measure["denominator"] + sum(measure["excluded"].values()) == 18
    assert summary["categories"] == {
        "not assessed": 1,
        "outside the guideline's scope": 1,
        "departs from it": 9,
        "use the guideline does not support": 2,
        "cannot tell": 2,
        "follows the guideline": 3,  # W1, I1 (within 7 mg/kg/h in intensive care), OR (oral)
    }


def test_departures_by_reason_and_the_documentation_error_rule(known: tuple[dict[str, Any], Path]) -> None:
    d = known[0]["departures"]
    assert (d["administrations"], d["contraindicated"], d["over_limit"]) == (9, 2, 8)
    assert (d["over_limit_clinical"], d["documentation_errors"], d["contraindicated_and_over_limit"]) == (
        4,
        4,
        1,
    )
    assert d["by_contraindication"] == {"contra-pregnancy": 2, "contra-psychosis": 1}
    assert d["by_dose_statement"] == [
        {"statements": ["dose-bolus-limit"], "clinical": 3, "documentation_errors": 4},
        {"statements": ["dose-infusion-limit"], "clinical": 1, "documentation_errors": 0},
    ]
    assert [(b["bin"], b["clinical"], b["documentation_errors"]) for b in d["times_the_limit"]] == [
        ("1× to 1.1×", 0, 0),
        ("1.1× to 1.25×", 0, 0),
        ("1.25× to 1.5×", 2, 0),  # O1, C2 (1.43x)
        ("1.5× to 2×", 1, 0),  # S1 (1.5x)
        ("2× to 3×", 0, 0),
        ("3× to 5×", 0, 0),
        ("5× to 10×", 1, 0),  # B9 (9.96x)
        ("10× to 100×", 0, 2),  # B10 (10x), M1 (10.7x)
        ("100× to 1,000×", 0, 2),  # E2 (357x), E1 (714x)
        ("1,000× or more", 0, 0),
    ]
    causes = d["documentation_error_causes"]
    assert list(causes.values()) == [2, 2] and any("thousand times too large" in c for c in causes)


def test_each_unit_gets_its_departures_with_the_reason_in_a_csv(known: tuple[dict[str, Any], Path]) -> None:
    summary, out = known
    units = {u["unit"]: u for u in summary["departure_rate"]["units"]}
    assert {k: (u["assessed"], u["departed"]) for k, u in units.items()} == {
        "Ward A": (8, 7),  # BAD is not assessed
        "Ward B": (5, 1),
        None: (1, 1),  # S1
        "ICU": (1, 0),  # OS is outside the scope
        "Pain clinic": (1, 0),
    }
    everyone = summary["departure_rate"]["all_units"]
    assert (everyone["assessed"], everyone["departed"], everyone["departure_rate"]) == (16, 9, 0.5625)
    assert "unit" not in everyone and everyone["rules_applied"] is False  # one month: no rule applies
    ward_a = units["Ward A"]
    assert (ward_a["contraindicated"], ward_a["over_limit_clinical"], ward_a["documentation_errors"]) == (
        1,
        2,
        4,
    )
    assert ward_a["departures_file"] == f"departures/{export_name('Ward A')}"
    assert units[None]["departures_file"] == f"departures/{export_name(None)}"  # S1, no unit recorded
    assert units["ICU"]["departures_file"] is None
    assert sorted(p.name for p in (out / "departures").iterdir()) == sorted(
        [export_name("Ward A"), export_name("Ward B"), export_name(None)]
    )
    rows = {r["admin_id"]: r for r in read_csv(out / ward_a["departures_file"])}
    assert set(rows) == {"O1", "E1", "E2", "M1", "B10", "B9", "C1"}
    assert "patient_id" not in next(iter(rows.values()))
    assert rows["O1"]["departure"] == "over the limit (clinical)" and rows["O1"]["times_limit"] == "1.43"
    assert (
        rows["O1"]["reason"]
        == "dose over the limit: 1.43 times the limit of dose-bolus-limit (IV bolus limit (acute pain))"
    )
    assert rows["E1"]["departure"] == "likely documentation error"
    assert "thousand times too large; read so it is 0.71 times the limit" in rows["E1"]["reason"]
    assert "thousand times" not in rows["B10"]["reason"] and rows["B10"]["times_limit"] == "10.0"
    assert (
        rows["C1"]["reason"] == "contraindicated: contra-pregnancy (Pregnancy)"
        and rows["C1"]["times_limit"] == ""
    )
    (c2,) = read_csv(out / units["Ward B"]["departures_file"])
    assert c2["departure"] == "contraindicated and over the limit (clinical)"
    assert c2["reason"].startswith("contraindicated: contra-pregnancy (Pregnancy), contra-psychosis (")
    assert "; dose over the limit: 1.43 times" in c2["reason"]


def test_the_page_shows_the_measures_with_their_definitions(known: tuple[dict[str, Any], Path]) -> None:
    _, out = known
    text = (out / "report.html").read_text()
    page = Page(text)
    assert page.by_id["m-dose-within-limit"] == "42.9%6 of 14"
    assert page.by_id["m-contraindicated"] == "12.5%2 of 16"
    assert page.by_id["m-unsupported"] == "12.5%2 of 16"
    assert page.by_id["m-cannot-tell"] == "12.5%2 of 16"
    excluded = page.table_after("Doses within the limit: not in the denominator", text)
    assert excluded[-1] == ["Excluded", "4"] and len(excluded) == 5  # header, three reasons, total
    assert "at least 10 times the limit" in page.by_id["documentation-rule"]
    assert (
        "4 are clinical over-limit doses and 4 are likely documentation errors"
        in page.by_id["departures-summary"]
    )
    multiples = page.table_after("Doses over the limit by multiple of the limit", text)
    assert len(multiples) == 12 and multiples[3] == ["1.25× to 1.5×", "2", "0"]  # header, 10 bins, total
    assert multiples[8:] == [
        ["10× to 100×", "0", "2"],
        ["100× to 1,000×", "0", "2"],
        ["1,000× or more", "0", "0"],
        ["Doses over the limit", "4", "4"],
    ]
    errors = page.table_after("Likely documentation errors to review", text)[1:]
    assert [r[0].split()[0] for r in errors] == ["E1", "E2", "M1", "B10"]  # most times the limit first
    clinical = page.table_after("Highest clinical over-limit doses", text)[1:]
    assert [r[0].split()[0] for r in clinical] == ["B9", "S1", "C2", "O1"]
    assert "1.43× the limit" in clinical[3][3]  # 1.4286, rounded up: never reads as within
    units = page.table_after("Departures by unit", text)
    assert units[1][:4] == ["Ward A", "8", "7", "87.5%"] and units[-1][:4] == [
        "All units",
        "16",
        "9",
        "56.2%",
    ]
    assert "1 month: too few" in units[1][7]  # one month: the run-chart rules are not applied


# --- run charts per unit and month ----------------------------------------------------------------------


def _month(m: int) -> str:
    return f"2025-{m:02d}-15 08:00:00"


def test_a_shift_in_one_unit_is_signalled_by_month(tmp_path: Path) -> None:
    """Ward S: 1 of 10 over the limit a month for six months, then 5 of 10: a shift each side, too few runs.
    Ward T: steady (2 of 10 every month but one): no signal."""
    rows: list[dict[str, Any]] = []
    for month in range(1, 13):
        over = 1 if month <= 6 else 5
        for i in range(10):
            rows.append(
                {
                    "admin_id": f"S{month}-{i}",
                    "administered_at": _month(month),
                    "location": "Ward S",
                    "dose_value": 40 if i < over else 20,
                }
            )
            rows.append(
                {
                    "admin_id": f"T{month}-{i}",
                    "administered_at": _month(month),
                    "location": "Ward T",
                    "dose_value": 40 if i < (3 if month == 4 else 2) else 20,
                }
            )
    out = tmp_path / "out"
    summary = run_audit(write_rows(tmp_path / "in.csv", rows), out)
    units = {u["unit"]: u for u in summary["departure_rate"]["units"]}
    ward_s = units["Ward S"]
    assert [p["departed"] for p in ward_s["periods"]] == [1] * 6 + [5] * 6
    assert ward_s["median_rate"] == 0.3 and ward_s["rules_applied"] is True
    assert ward_s["signals"] == [
        {"rule": "shift", "from": "2025-01", "to": "2025-06", "direction": "below"},
        {"rule": "too-few-runs", "from": "2025-01", "to": "2025-12"},
        {"rule": "shift", "from": "2025-07", "to": "2025-12", "direction": "above"},
    ]
    assert ward_s["runs"] == 2 and ward_s["runs_expected"] == [4, 10]
    # Ward T: eleven months on the median (20%), one above: nothing to signal
    assert units["Ward T"]["median_rate"] == 0.2 and units["Ward T"]["signals"] == []
    text = (out / "report.html").read_text()
    page = Page(text)
    table = page.table_after("Departures by unit", text)
    row_s = next(r for r in table if r[0] == "Ward S")
    assert "Shift below the median, 2025-01 to 2025-06" in row_s[7] and "Too few runs: 2" in row_s[7]
    months = page.table_after("Ward S: departures per month", text)
    assert months[1] == ["2025-01", "10", "1", "10.0%", "Shift"] and months[7][-1] == "Shift"
    chart = next(f for f in page.figures if f.svgs and f.svgs[0].title == "Departure rate per month: Ward S")
    assert "signals: shift, too few runs" in chart.svgs[0].attrs["aria-label"]
    assert "Too few runs: 2 (chance: 4 to 10)" in chart.svgs[0].texts


# --- hostile data in the exports and the page -------------------------------------------------------------


def test_unit_names_and_cells_from_the_data_are_neutralised(tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://evil.example","x")'
    rows = [
        {"admin_id": "+1", "location": formula, "dose_value": 40},
        {"admin_id": "@2", "location": "<script>alert(1)</script>", "dose_value": 40},
        {"admin_id": "-3", "location": "../../x", "dose_value": 40},
    ]
    out = tmp_path / "out"
    summary = run_audit(write_rows(tmp_path / "in.csv", rows), out)
    files = sorted((out / "departures").iterdir())
    assert len(files) == 3 and all(f.parent == out / "departures" for f in files)
    cells = [row for f in files for row in read_csv(f)]
    for row in cells:
        for key in ("admin_id", "location"):
            assert not row[key].startswith(("=", "+", "-", "@")), row  # a spreadsheet never runs them
    assert {r["admin_id"] for r in cells} == {"'+1", "'@2", "'-3"}
    assert any(r["location"] == "'" + formula for r in cells)
    text = (out / "report.html").read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "script" not in Page(text).tags
    links = [v for tag, attr, v in Page(text).urls if tag == "a" and v.startswith("departures/")]
    assert sorted(links) == sorted(u["departures_file"] for u in summary["departure_rate"]["units"])


def test_the_exports_of_an_earlier_audit_do_not_linger(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_audit(write_rows(tmp_path / "a.csv", [{"admin_id": "A", "dose_value": 40, "location": "Old"}]), out)
    assert (out / "departures" / export_name("Old")).exists()
    (out / "departures" / "notes.txt").write_text("mine")
    run_audit(write_rows(tmp_path / "b.csv", [{"admin_id": "B", "dose_value": 20, "location": "New"}]), out)
    assert sorted(p.name for p in (out / "departures").iterdir()) == ["notes.txt"]  # only our CSVs removed


def test_duckdb_reads_the_exports_back(known: tuple[dict[str, Any], Path]) -> None:
    """The CSVs are plain CSV with a header: any tool reads them (here DuckDB, as a quality team might)."""
    _, out = known
    con = duckdb.connect()
    try:
        n = con.execute(f"SELECT count(*) FROM read_csv('{out / 'departures'}/*.csv')").fetchone()
    finally:
        con.close()
    assert n == (9,)


def test_a_verdict_the_report_does_not_know_is_flagged_not_counted_as_following(
    known: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    """Findings from a newer engine: W1 carries a verdict no rule here places. It is in the denominators,
    in no numerator, and the page says so."""
    _, out = known
    findings = tmp_path / "findings.parquet"
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * REPLACE (CASE WHEN admin_id = 'W1' THEN 'a-newer-verdict' ELSE verdict END AS verdict) "
            f"FROM read_parquet('{out / 'findings.parquet'}')) TO '{findings}' (FORMAT parquet)"
        )
    finally:
        con.close()
    summary = write_outputs(findings, tmp_path, {})
    assert summary["unclassified"] == {"verdict a-newer-verdict, dose status within": 1}
    assert summary["categories"]["follows the guideline"] == 2  # W1 no longer
    assert summary["measures"]["cannot-tell"]["denominator"] == 16
    text = (tmp_path / "report.html").read_text()
    assert "verdict a-newer-verdict, dose status within (1)" in Page(text).by_id["unclassified"]
