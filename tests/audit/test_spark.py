"""The Spark audit writes the DuckDB audit's findings: the same columns, types and values, row for row.

Skipped when pyspark or Java is missing, unless KETAMINE_CDS_REQUIRE_SPARK is set (as CI does): then it fails.
One local Spark session (2 threads) serves the whole module.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ketamine_cds.audit.canonical import COLUMN_NAMES
from ketamine_cds.audit.duck import AuditRun, run_duckdb, summary_rows
from ketamine_cds.audit.flat import flat_source
from ketamine_cds.audit.report import aggregate
from ketamine_cds.audit.run import Form, canonical_parquet
from ketamine_cds.audit.summary import quality_summary
from ketamine_cds.audit.synth import canonical_sql, write_flat


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


MISSING = [
    what
    for what, present in (
        ("pyspark (pip install 'ketamine-cds[spark]')", importlib.util.find_spec("pyspark") is not None),
        ("a Java runtime (apt-get install openjdk-17-jre-headless)", _java() is not None),
    )
    if not present
]
if MISSING and os.environ.get("KETAMINE_CDS_REQUIRE_SPARK"):
    raise RuntimeError(f"KETAMINE_CDS_REQUIRE_SPARK is set but {' and '.join(MISSING)} is missing")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"the Spark audit needs {' and '.join(MISSING)}")

if not MISSING:
    from pyspark.sql import SparkSession

    from ketamine_cds.audit.spark import (
        _local_threads,
        configured_master,
        read_flat,
        run_spark,
        spark_session,
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = spark_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 synthetic administrations, as Parquet and as CSV."""
    return write_flat(20_000, tmp_path_factory.mktemp("synth"), seed=11, csv=True)


# --- comparing findings ------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if a == b:  # 0.0 == -0.0: DuckDB's Parquet dictionary keeps whichever zero it met first
            return True
        return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-12 * max(abs(a), abs(b))
    return type(a) is type(b) and a == b


def _table(parquet: Path, order: str = "admin_id") -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    con = duckdb.connect()
    try:
        f = f"read_parquet('{parquet}')"
        described = [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE SELECT * FROM {f}").fetchall()]
        return described, con.execute(f"SELECT * FROM {f} ORDER BY {order}").fetchall()
    finally:
        con.close()


def _differences(
    names: Sequence[str], expected: list[tuple[Any, ...]], actual: list[tuple[Any, ...]]
) -> list[str]:
    found = [f"{len(expected)} rows expected, {len(actual)} written"] if len(expected) != len(actual) else []
    for want, got in zip(expected, actual, strict=False):
        for name, a, b in zip(names, want, got, strict=True):
            if not _same(a, b):
                found.append(f"{want[0]} {name}: DuckDB {a!r}, Spark {b!r}")
    return found[:20]


def _assert_same_findings(duck: AuditRun, spark_run: AuditRun) -> None:
    duck_types, duck_rows = _table(duck.findings)
    spark_types, spark_rows = _table(spark_run.findings)
    assert spark_types == duck_types
    assert _differences([n for n, _ in duck_types], duck_rows, spark_rows) == []
    assert (spark_run.rows, spark_run.classes) == (duck.rows, duck.classes)


# --- the synthetic data set, both flat files ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["administrations.parquet", "administrations.csv"])
def test_synthetic_findings_equal_duckdbs(
    spark: SparkSession, synthetic: Path, tmp_path: Path, name: str
) -> None:
    flat = synthetic / name
    duck = run_duckdb(flat_source(flat), tmp_path / "duck")
    ran = run_spark(flat, "flat", tmp_path / "spark")
    assert ran.rows == 20_000
    assert ran.findings == tmp_path / "spark" / "findings.parquet" and ran.findings.is_dir()
    _assert_same_findings(duck, ran)
    # the summary and the report read the folder of part files as they read DuckDB's single file
    assert summary_rows(ran.findings) == summary_rows(duck.findings)
    # and the same report code gives the same measures, departures and run charts from either engine
    assert quality_summary(aggregate(ran.findings)) == quality_summary(aggregate(duck.findings))


def test_synthetic_findings_against_a_site_protocol_equal_duckdbs(
    spark: SparkSession, synthetic: Path, tmp_path: Path
) -> None:
    from ketamine_cds import load_knowledge
    from ketamine_cds._site import load_site

    example = Path(__file__).resolve().parents[2] / "examples" / "site" / "example-hospital.toml"
    site = load_site(example, load_knowledge())
    flat = synthetic / "administrations.parquet"
    duck = run_duckdb(flat_source(flat), tmp_path / "duck", site=site)
    ran = run_spark(flat, "flat", tmp_path / "spark", site=site)
    _assert_same_findings(duck, ran)
    summary = summary_rows(duck.findings)
    assert summary == summary_rows(ran.findings) and summary["differs_from_guideline"] > 0


# --- a hand-made table with bad rows -----------------------------------------------------------------------

# fmt: off
HEADER = [
    "admin_id", "patient_id", "administered_at", "route", "kind", "dose_value", "dose_unit",
    "concentration_mg_per_ml", "weight_value", "weight_unit", "setting", "location", "indication",
    "procedure_class", "conditions", "prior_iv_ketamine", "pca_sole_agent", "opioid_tolerance",
    "opioid_unknown_reason",
]
# every row that cannot be assessed differs from the others in a decision column: the problem text names the
# row's own value, and DuckDB's representative for a class is any of its rows
BAD_ROWS = [
    ["B01", "P1", "2025-05-01 08:00:00", "intravenous", "bolus", "20", "tablets", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B02", "P1", "2025-05-01 08:00:00", "intravenous", "bolus", "20", "mg", "", "0", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B03", "P1", "2025-05-01 08:00:00", "intravenous", "bolus", "12,5", "mg", "", "70", "kg", "intensive-care", "ICU", "perioperative", "abdominal", "", "", "false"],
    ["B04", "P2", "2025-05-01 09:00:00", "intravenous", "bolus", "20", "mg", "", "heavy", "kg", "unknown", "", "perioperative", "spine", "", "", "false"],
    ["B05", "P2", "yesterday", "intravenous", "bolus", "20", "mg", "", "70", "kg", "non-intensive-care", "Ward", "crps", "", "", "", "false"],
    ["B06", "P2", "", "intravenous", "infusion", "1", "mg/kg/h", "", "70", "kg", "non-intensive-care", "Ward", "crps", "", "", "", "false"],
    ["B07", "P3", "2025-05-02", "intravenous", "bolus", "-5", "mg", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B08", "P3", "2025-05-02", "intravenous", "bolus", "nan", "mg", "", "70", "kg", "intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B09", "P3", "2025-05-02", "intravenous", "bolus", "inf", "mg", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B10", "P4", "2025-05-02T10:00:00Z", "intravenous", "bolus", "2.5", "mL", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B11", "P4", "2025-05-02 10:00", "intramuscular", "bolus", "20", "mg", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B12", "P4", "2025-05-02 10:00", "intravenous", "bolus", "20", "mg", "", "11", "stone", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B13", "P5", "2025-05-03 11:00", "intravenous", "bolus", "20", "mg", "", "900", "kg", "intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B14", "P5", "2025-05-03 11:00", "intravenous", "bolus", "24.5", "mg", "", "154.32", "[lb_av]", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B15", "P5", "2025-05-03 11:00", "intravenous", "bolus", "0.35", "mg/kg", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B16", "P6", "2025/05/04 12:00:00", "IV", "infusion", "16.67", "mcg/kg/min", "", "70", "kg", "non-intensive-care", "Ward", "crps", "", "sleep-apnea;", "", "true"],
    ["B17", "P6", "2025-05-04 24:00:00", "intravenous", "bolus", "20", "mg/h", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    ["B18", "P6", "2025-05-04 12:00:00.1234567", "oral", "", "50", "mg", "", "70", "kg", "non-intensive-care", "Ward", "hangover", "", "", "yes", "N"],
    ["B19", "P7", "2025-05-04 12:00:00+02:00", "intranasal", "", "50", "mg", "", "70", "kg", "non-intensive-care", "Ward", "depression", "", "unknown-thing;", "no", "0"],
    ["B20", "P7", "2025-05-05", "intravenous", "bolus", "20", "mg", "", "-0", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B21", "P7", "2025-05-05", "intravenous", "bolus", "1_000", "mcg", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B22", "P8", "2025-05-05", "\u00a0intravenous ", "infusion", " 35 ", "mL/h", "10", "70", "kg", "intensive-care", "SICU", "perioperative", "thoracic", "", "", "FALSE "],
    ["B23", "P8", "2025-05-05", "intravenous", "bolus", "0", "mg", "", "0", "kg", "unknown", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B24", "P8", "2025-05-05", "intravenous", "bolus", "20", "", "", "0", "kg", "non-intensive-care", "Ward", "acute-pain", "", "", "", "false"],
    ["B25", "P9", "2025-05-06", "intravenous", "", "", "", "", "", "", "non-intensive-care", "", "perioperative", "spine", "", "", ""],
    ["B26", "P9", "2025-05-06", "oral", "", "1e400", "mg", "", "70", "kg", "non-intensive-care", "Ward", "chronic-pain", "", "", "t", "false"],
    # too small for a patient in g and in mg (the same but for the unit: each quotes its own), and 200 g, the floor
    ["B27", "P9", "2025-05-07", "intravenous", "bolus", "20", "mg", "", "70", "g", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B28", "P9", "2025-05-07", "intravenous", "bolus", "20", "mg", "", "70", "mg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B29", "P9", "2025-05-07", "intravenous", "bolus", "20", "mg", "", "200", "g", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    # a kind in capitals; a strength of zero, below zero or not finite; a weight not finite; a dose without a
    # unit; an unknown weight unit beside another (each quoted from its own row)
    ["B30", "P10", "2025-05-08", "intravenous", "Infusion", "1.5", "mg/kg/h", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B31", "P10", "2025-05-08", "intravenous", "INFUSION", "0.5", "mg/kg/h", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B32", "P10", "2025-05-08", "intravenous", "bolus", "2.5", "mL", "0", "70", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B33", "P10", "2025-05-08", "intravenous", "bolus", "2.5", "mL", "-10", "70", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B34", "P10", "2025-05-08", "intravenous", "bolus", "2.5", "mL", "inf", "nan", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B35", "P10", "2025-05-08", "intravenous", "bolus", "20", "", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "abdominal", "", "", "false"],
    ["B36", "P10", "2025-05-08", "intravenous", "bolus", "20", "mg", "", "11", "tonnes", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false"],
    # opioid tolerance: a word in another case with spaces, one that is not a tolerance, unknown with a reason
    ["B37", "P11", "2025-05-09", "intravenous", "bolus", "20", "mg", "", "70", "kg", "non-intensive-care", "Ward", "perioperative", "mild", "", "", "false", "\u00a0Present "],
    ["B38", "P11", "2025-05-09", "intravenous", "bolus", "20", "mg", "", "70", "kg", "non-intensive-care", "Ward", "sickle-cell-pain", "", "", "", "false", "tolerant"],
    ["B39", "P11", "2025-05-09", "intravenous", "bolus", "20", "mg", "", "70", "kg", "non-intensive-care", "Ward", "sickle-cell-pain", "", "", "", "false", "unknown", "no pharmacy data"],
]
# fmt: on


def _write_csv(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows([*row, *[""] * (len(HEADER) - len(row))] for row in rows)
    return path


def _as_string_parquet(csv_path: Path) -> Path:
    """The same table as Parquet with every column a string (a flat form seen in practice)."""
    target = csv_path.with_suffix(".parquet")
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM read_csv('{csv_path}', header = true, all_varchar = true)) TO '{target}' "
            "(FORMAT parquet)"
        )
    finally:
        con.close()
    return target


def test_bad_rows_findings_equal_duckdbs(spark: SparkSession, tmp_path: Path) -> None:
    table = _write_csv(tmp_path / "bad" / "administrations.csv", BAD_ROWS)
    for flat in (table, _as_string_parquet(table)):  # the same out folder twice: the second run replaces it
        duck = run_duckdb(flat_source(flat), tmp_path / "duck")
        ran = run_spark(flat, "flat", tmp_path / "spark")
        _assert_same_findings(duck, ran)
    described, rows = _table(ran.findings)
    names = [name for name, _ in described]
    problems = {r[0]: r[names.index("problem")] for r in rows}
    assert "unknown unit 'tablets'" in problems["B01"]
    assert "above zero" in problems["B02"]
    assert problems["B03"] == "row: dose_value is not a number: 12,5"
    assert problems["B05"] == "row: administered_at is not a time: yesterday"
    assert problems["B15"] is None and problems["B22"] is None
    assert "under 0.2 kg" in problems["B27"] and "0.07 kg" in problems["B27"]
    assert "under 0.2 kg" in problems["B28"] and "7e-05 kg" in problems["B28"]
    assert problems["B29"] is None
    verdicts = {r[0]: r[names.index("verdict")] for r in rows}
    assert verdicts["B30"] == "dose-exceeds-limit" and problems["B30"] is None and problems["B31"] is None
    assert "strength must be positive" in problems["B32"] and "strength must be positive" in problems["B33"]
    assert "finite number" in problems["B34"] and "a dose without a unit" in problems["B35"]
    assert "stone" in problems["B12"] and "tonnes" in problems["B36"]
    assert verdicts["B37"] == "may-consider" and "unknown opioid tolerance 'tolerant'" in problems["B38"]
    assert verdicts["B39"] == "needs-information"
    assert problems["B18"] == "row: prior_iv_ketamine is not true or false: yes"  # neither yes/no nor 1/0
    assert problems["B26"] == "row: prior_iv_ketamine is not true or false: t"
    dose_per_kg = {r[0]: r[names.index("dose_per_kg")] for r in rows}
    assert dose_per_kg["B20"] == -math.inf and math.isnan(dose_per_kg["B23"])  # IEEE, as DuckDB divides


# --- the flat form's casts, value by value -----------------------------------------------------------------

# fmt: off
NUMBERS = [
    "1", "1.5", " 1.5 ", "\t1.5\t", "1e3", "1E-3", ".5", "5.", "+5", "-5", "1d", "0x10", "inf", "-Infinity",
    "NaN", "-nan", "1_000", "1__0", "_1", "1,5", "", "  ", "abc", "1e400", "-0", "1.5_5", "1e1_0", "\u00a02",
    "1e-400", "9" * 30, "0.1", "0.30000000000000004", "123456789.123456789e-5", "1e", ".", "+.5e+2",
]
TIMES = [
    "2023-01-01", "2023-01-01 12:34:56", "2023-01-01T12:34:56", "2023-01-01 12:34:56.1234567",
    "2023-01-01 12:34:56+02:30", "2023-01-01T12:00:00.000Z", "2023-1-1", "2023/01/02",
    "2023-01-01 24:00:00", "2023-01-01 24:00", "2023-01-01 24:00:01", "  2023-01-01", "2023-01-01 ",
    "2023-02-30", "2024-02-29 00:00", "2023-01-01 12:00:00 UTC", "2023-01-01 12:00:00 Z",
    "2023-01-01 1:2:3", "2023-01-01 12:00:00.", "2023-01-01 12:00:00+0200", "2023-01-01 12:00:00  ",
    "01/02/2023", "2023", "2023-01", "yesterday", "", "2023-01-01 25:00:00", "2023-01-01 12:60:00",
    "2023-01-01 23:59:60", "2023-01-01T01", "\t2023-03-04",
]
BOOLEANS = [
    "true", "false", "t", "f", "1", "0", "yes", "no", "y", "n", "TRUE", "Yes", " true ", "on", "2", "",
]
TEXTS = [
    "intravenous", " iv ", "\u00a0oral\u3000", "\tIV\t", "", " ", "Ward\u2003B", "x\ny",
]
# fmt: on


def _tricky_rows() -> list[list[str]]:
    """Every odd value above, in every column of its kind (numbers also as the concentration, shifted)."""
    count = max(len(NUMBERS), len(TIMES), len(BOOLEANS), len(TEXTS))
    rows = []
    for i in range(count):
        number, time = NUMBERS[i % len(NUMBERS)], TIMES[i % len(TIMES)]
        text, flag, flag2 = (
            TEXTS[i % len(TEXTS)],
            BOOLEANS[i % len(BOOLEANS)],
            BOOLEANS[(i + 5) % len(BOOLEANS)],
        )
        strength = NUMBERS[(i * 7 + 3) % len(NUMBERS)]
        values = {"admin_id": f"T{i:03}", "administered_at": time, "kind": "bolus", "dose_value": number,
                  "dose_unit": "mg", "concentration_mg_per_ml": strength, "weight_value": number, "weight_unit": "kg",
                  "indication": "crps", "procedure_class": "", "conditions": "", "prior_iv_ketamine": flag,
                  "pca_sole_agent": flag2}  # fmt: skip
        rows.append([values.get(name, text) for name in HEADER])  # patient, route, setting, location: text
    return rows


def _canonical(con: duckdb.DuckDBPyConnection, flat: Path) -> list[tuple[Any, ...]]:
    return con.execute(f"SELECT * FROM ({flat_source(flat)}) ORDER BY admin_id").fetchall()


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_flat_values_read_as_duckdb_reads_them(spark: SparkSession, tmp_path: Path, kind: str) -> None:
    flat = _write_csv(tmp_path / "administrations.csv", _tricky_rows())
    if kind == "parquet":
        flat = _as_string_parquet(flat)
    con = duckdb.connect()
    try:
        expected = _canonical(con, flat)
    finally:
        con.close()
    frame = read_flat(spark, flat)
    assert frame.columns == list(COLUMN_NAMES)
    actual = [tuple(r) for r in frame.orderBy("admin_id").collect()]
    assert _differences(COLUMN_NAMES, expected, actual) == []


def test_typed_parquet_read_as_duckdb_reads_it(spark: SparkSession, tmp_path: Path) -> None:
    """Typed columns pass through (a float32 read through its shortest text), a missing column is empty,
    identifiers keep their spaces, other types are read from their text."""
    flat = tmp_path / "typed.parquet"
    con = duckdb.connect()
    try:
        con.execute(
            f"""COPY (SELECT ' ' || admin_id AS admin_id, patient_id || ' ' AS patient_id,
                    CAST(administered_at AS DATE) AS administered_at, ' ' || route AS route, kind,
                    CAST(dose_value AS FLOAT) AS dose_value, dose_unit,
                    CAST(concentration_mg_per_ml AS DECIMAL(6, 2)) AS concentration_mg_per_ml,
                    CAST(round(weight_value) AS INTEGER) AS weight_value, weight_unit, setting, indication,
                    procedure_class, conditions, CAST(prior_iv_ketamine AS INTEGER) AS prior_iv_ketamine,
                    pca_sole_agent
                FROM ({canonical_sql(500, seed=2)})) TO '{flat}' (FORMAT parquet)"""
        )
        expected = _canonical(con, flat)
    finally:
        con.close()
    actual = [tuple(r) for r in read_flat(spark, flat).orderBy("admin_id").collect()]
    assert _differences(COLUMN_NAMES, expected, actual) == []
    assert all(r[COLUMN_NAMES.index("location")] is None for r in actual)


# --- FHIR and OMOP: read by their DuckDB readers, audited on Spark ------------------------------------------


@pytest.mark.parametrize("form", ["fhir", "omop"])
def test_fhir_and_omop_findings_equal_duckdbs(spark: SparkSession, tmp_path: Path, form: Form) -> None:
    from ketamine_cds.audit.synth import write_all

    written = write_all(2_000, tmp_path / "synth", seed=5)
    if form not in written:
        pytest.fail(f"synth.write_all wrote no {form} form (audit/synth_forms.py missing?)")
    canonical = canonical_parquet(written[form], form, tmp_path / "duck")  # opioid tolerance decided once
    duck = run_duckdb(f"SELECT * FROM read_parquet('{canonical.path}')", tmp_path / "duck")
    ran = run_spark(written[form], form, tmp_path / "spark")
    assert (tmp_path / "spark" / "canonical" / "administrations.parquet").is_file()
    _assert_same_findings(duck, ran)


# --- the session -------------------------------------------------------------------------------------------


def test_master_from_argument_environment_or_local(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPARK_MASTER", "PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR", "SPARK_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert configured_master() == "local[*]"
    assert configured_master("local[3]") == "local[3]"
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master local[5] pyspark-shell")
    assert configured_master() == "local[5]"
    monkeypatch.setenv("SPARK_MASTER", "spark://10.0.0.1:7077")
    assert configured_master() == "spark://10.0.0.1:7077"
    assert configured_master("local[1]") == "local[1]"
    assert [_local_threads(m) for m in ("local", "local[3]", "local[2,4]", "yarn")] == [1, 3, 2, None]


def test_types_compared_strictly() -> None:
    """The comparison itself: NaN equals NaN, 1e-13 relative is equal, 1e-9 is not, types must agree."""
    assert _same(math.nan, math.nan) and not _same(math.nan, 1.0) and _same(1.0, 1.0 + 1e-13)
    assert not _same(1.0, 1.0 + 1e-9) and not _same(Decimal("0.35"), 0.35) and _same([], [])
    assert _same(dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 1)) and not _same(None, "")
