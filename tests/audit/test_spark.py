"""The audit on a real Spark cluster gives the DuckDB audit's findings and summary, every column of every row,
on the three input forms: the synthetic data, the Synthea bulk export and inputs with bad rows; and the
driver reads nothing of the input but the decision classes.

The cluster is real: a standalone master and two workers, each a process of its own on the loopback, started
once per session from pyspark's own launcher (``spark_cluster.py``); the executors run this interpreter
(``PYSPARK_PYTHON``), so they share its virtualenv, the package and DuckDB. Skipped when pyspark, pyarrow or
Java is missing, unless KETAMINE_CDS_REQUIRE_SPARK is set (as CI does): then it fails.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ketamine_cds import InputError, load_knowledge
from ketamine_cds._site import load_site
from ketamine_cds.audit.duck import AuditRun, run_duckdb
from ketamine_cds.audit.flat import flat_source
from ketamine_cds.audit.run import run_audit
from ketamine_cds.audit.synth import canonical_sql, write_all, write_flat
from ketamine_cds.audit.synth_forms import write_fhir
from shared_data import EXTERNAL
from spark_cluster import Cluster, submit_args, tree_usage


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


MISSING = [
    what
    for what, present in (
        ("pyspark (pip install 'ketamine-cds[spark]')", importlib.util.find_spec("pyspark") is not None),
        ("pyarrow (pip install 'ketamine-cds[spark]')", importlib.util.find_spec("pyarrow") is not None),
        ("a Java runtime (apt-get install openjdk-17-jre-headless)", _java() is not None),
    )
    if not present
]
if MISSING and os.environ.get("KETAMINE_CDS_REQUIRE_SPARK"):
    raise RuntimeError(f"KETAMINE_CDS_REQUIRE_SPARK is set but {' and '.join(MISSING)} is missing")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"the Spark audit needs {' and '.join(MISSING)}")

if not MISSING:
    from pyspark.sql import SparkSession

    from ketamine_cds.audit.spark import _local_threads, configured_master, run_spark, spark_session

EXAMPLE_SITE = Path(__file__).resolve().parents[2] / "examples" / "site" / "example-hospital.toml"
SYNTHEA = EXTERNAL / "synthea-bulk-10-patients"


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A standalone master and two workers (one core, 1 GiB each) on the loopback, and this process's Spark
    session on it: every audit of the tests runs there."""
    cluster = Cluster(tmp_path_factory.mktemp("spark-cluster"), workers=2).start()
    saved = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "SPARK_LOCAL_IP")}
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        _session(cluster)
        yield cluster
    finally:
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
        cluster.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _session(cluster: Cluster) -> SparkSession:
    """This process's session on the cluster (made again after a test that gave the cluster to another)."""
    return spark_session(cluster.master, cluster.session_settings())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,000 synthetic administrations as a folder of three Parquet parts (any split of a flat table is a
    bucket: three tasks), beside the same rows as one CSV file."""
    written = write_flat(6_000, tmp_path_factory.mktemp("synth"), seed=11, csv=True)
    parts = written / "parts"
    parts.mkdir()
    con = duckdb.connect()
    try:
        for i in range(3):
            con.execute(
                f"COPY (SELECT * FROM read_parquet('{written / 'administrations.parquet'}') "
                f"WHERE hash(admin_id) % 3 = {i}) TO '{parts / f'part-{i}.parquet'}' (FORMAT parquet)"
            )
    finally:
        con.close()
    return written


# --- comparing findings and summaries ----------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b  # 0.0 == -0.0: DuckDB's Parquet dictionary keeps whichever zero it met first
    return type(a) is type(b) and a == b


def _table(parquet: Path, order: str = "admin_id") -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    con = duckdb.connect()
    try:
        f = f"read_parquet('{parquet}')"
        described = [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE SELECT * FROM {f}").fetchall()]
        rows = con.execute(f"SELECT * FROM {f} ORDER BY {order}, problem, patient_id").fetchall()
        return described, rows
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


def _assert_same_findings(duck: Path, spark: Path) -> None:
    """Every column (name and type) and every row, value for value (exactly: same code, same arithmetic)."""
    duck_types, duck_rows = _table(duck)
    spark_types, spark_rows = _table(spark)
    assert spark_types == duck_types
    assert _differences([n for n, _ in duck_types], duck_rows, spark_rows) == []


def _assert_same_runs(duck: AuditRun, spark: AuditRun) -> None:
    _assert_same_findings(duck.findings, spark.findings)
    assert (spark.rows, spark.classes) == (duck.rows, duck.classes)


# what may differ between two runs of the same audit: the engine, and how long things took
_TIMINGS = {"engine", "seconds"}


def _comparable(summary: Mapping[str, Any]) -> dict[str, Any]:
    found = {k: v for k, v in summary.items() if k not in _TIMINGS}
    step = found.get("opioid_tolerance_step")
    if step is not None:
        found["opioid_tolerance_step"] = {k: v for k, v in step.items() if not k.endswith("seconds")}
    return found


def _audit_both(
    path: Path, tmp: Path, cluster: Cluster, **options: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``ketamine-cds audit`` on DuckDB and on the cluster: same findings, same summary (and the same report
    from them), and nothing of the input read into the Spark run's output folder."""
    _session(cluster)
    duck = run_audit(path, tmp / "duck", **options)
    spark = run_audit(path, tmp / "spark", engine="spark", **options)
    _assert_same_findings(tmp / "duck" / "findings.parquet", tmp / "spark" / "findings.parquet")
    assert _comparable(spark) == _comparable(duck)
    assert spark["engine"] == "spark" and not (tmp / "spark" / "canonical").exists()
    return duck, spark


# --- the synthetic data set ------------------------------------------------------------------------------


def test_synthetic_flat_table_on_the_cluster(spark_cluster: Cluster, synthetic: Path, tmp_path: Path) -> None:
    """A folder of Parquet parts (one bucket each, on both workers), and one CSV file (one bucket)."""
    duck, spark = _audit_both(synthetic / "parts", tmp_path / "parts", spark_cluster)
    assert spark["administrations"] == 6_000 and spark["decision_classes"] == duck["decision_classes"]
    csv_file = synthetic / "administrations.csv"
    ran = run_spark(csv_file, None, tmp_path / "csv" / "spark", master=spark_cluster.master)
    _assert_same_runs(run_duckdb(flat_source(csv_file), tmp_path / "csv" / "duck"), ran)
    assert ran.findings.is_dir() and ran.form == "flat"


def test_synthetic_flat_table_against_a_site_protocol(
    spark_cluster: Cluster, synthetic: Path, tmp_path: Path
) -> None:
    site = load_site(EXAMPLE_SITE, load_knowledge())
    duck, _ = _audit_both(synthetic / "parts", tmp_path, spark_cluster, site=site)
    assert duck["differs_from_guideline"] > 0


@pytest.mark.parametrize("form", ["fhir", "omop"])
def test_synthetic_fhir_and_omop_on_the_cluster(spark_cluster: Cluster, tmp_path: Path, form: str) -> None:
    """Each patient's resources (rows) in one bucket: opioid tolerance per patient-day, the prior IV course,
    the weight in effect all read as on one machine; Location, Medication, concept tables in every bucket."""
    written = write_all(1_500, tmp_path / "synth", seed=5)
    _, spark = _audit_both(written[form], tmp_path, spark_cluster)
    assert spark["form"] == form and spark["opioid_tolerance_step"]["moments"] > 0


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


def test_bad_rows_on_the_cluster(spark_cluster: Cluster, tmp_path: Path) -> None:
    """Rows that cannot be read, as CSV and as a Parquet file of strings: the same reasons, row by row."""
    table = _write_csv(tmp_path / "bad" / "administrations.csv", BAD_ROWS)
    for flat in (table, _as_string_parquet(table)):  # the same out folder twice: the second run replaces it
        duck = run_duckdb(flat_source(flat), tmp_path / "duck")
        ran = run_spark(flat, "flat", tmp_path / "spark", master=spark_cluster.master)
        _assert_same_runs(duck, ran)
    described, rows = _table(ran.findings)
    names = [name for name, _ in described]
    problems = {r[0]: r[names.index("problem")] for r in rows}
    assert "unknown unit 'tablets'" in problems["B01"]
    assert "above zero" in problems["B02"]
    assert problems["B03"] == "row: dose_value is not a number: 12,5"
    assert problems["B05"] == "row: administered_at is not a time: yesterday"
    assert problems["B15"] is None and problems["B22"] is None
    assert "under 0.2 kg" in problems["B27"] and "0.07 kg" in problems["B27"]
    assert problems["B29"] is None
    verdicts = {r[0]: r[names.index("verdict")] for r in rows}
    assert (
        verdicts["B30"] == "dose-exceeds-limit" and "unknown opioid tolerance 'tolerant'" in problems["B38"]
    )
    dose_per_kg = {r[0]: r[names.index("dose_per_kg")] for r in rows}
    assert dose_per_kg["B20"] == -math.inf and math.isnan(dose_per_kg["B23"])  # IEEE, as DuckDB divides
    _audit_both(table, tmp_path / "summary", spark_cluster)  # and the summary of the bad rows


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_odd_values_read_alike(spark_cluster: Cluster, tmp_path: Path, kind: str) -> None:
    """Every odd number, time, boolean and text in every column of its kind: one reader, one reading."""
    flat = _write_csv(tmp_path / "administrations.csv", _tricky_rows())
    if kind == "parquet":
        flat = _as_string_parquet(flat)
    duck = run_duckdb(flat_source(flat), tmp_path / "duck")
    _assert_same_runs(duck, run_spark(flat, "flat", tmp_path / "spark", master=spark_cluster.master))


def test_typed_parquet_read_alike(spark_cluster: Cluster, tmp_path: Path) -> None:
    """Typed columns pass through (a float32 through its shortest text, a date, an integer boolean, a decimal),
    a missing column is empty, identifiers keep their spaces."""
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
    finally:
        con.close()
    duck = run_duckdb(flat_source(flat), tmp_path / "duck")
    _assert_same_runs(duck, run_spark(flat, "flat", tmp_path / "spark", master=spark_cluster.master))


def test_column_names_matched_refused_and_mapped_as_duckdb_does(
    spark_cluster: Cluster, tmp_path: Path
) -> None:
    """A flat table's column names in another case, an unknown one and a mapped one: the tasks run
    ``flat.resolve_columns`` as DuckDB does; an unknown column stops the run with DuckDB's message."""
    flat = tmp_path / "renamed.csv"
    con = duckdb.connect()
    try:
        con.execute(
            f"""COPY (SELECT * EXCLUDE (input_problem) RENAME (weight_value AS WEIGHT_VALUE, dose_value AS dose_mg), 'x' AS Notes
                FROM ({canonical_sql(300, seed=5)})) TO '{flat}' (FORMAT csv, HEADER)"""
        )
    finally:
        con.close()
    with pytest.raises(InputError) as refused:
        run_spark(flat, "flat", tmp_path / "refused", master=spark_cluster.master)
    with pytest.raises(InputError) as by_duckdb:
        flat_source(flat)
    assert str(refused.value) == str(by_duckdb.value)
    assert "'dose_mg'" in str(refused.value) and "'Notes'" in str(refused.value)
    mappings = {"dose_mg": "dose_value", "Notes": "-"}
    duck = run_duckdb(flat_source(flat, mappings), tmp_path / "duck")
    ran = run_spark(flat, "flat", tmp_path / "spark", master=spark_cluster.master, columns=mappings)
    _assert_same_runs(duck, ran)
    described, rows = _table(ran.findings)
    names = [name for name, _ in described]
    weights = [r[names.index("weight_kg")] for r in rows]
    doses = [r[names.index("dose_value")] for r in rows]
    assert (
        len(rows) == 300
        and sum(w is not None for w in weights) > 200
        and sum(d is not None for d in doses) > 250
    )


def test_the_input_is_read_where_it_is_named_never_as_a_pattern(
    spark_cluster: Cluster, tmp_path: Path
) -> None:
    """``data[1].csv`` in a folder named with a space and ``%20`` is that file, never ``data1.csv`` beside it
    (Spark's readers take a location as a glob: the listed files are escaped)."""
    folder = tmp_path / "ward 4 %20"
    folder.mkdir()
    named, decoy = folder / "data[1].csv", folder / "data1.csv"
    con = duckdb.connect()
    try:
        for path, rows in ((named, 40), (decoy, 3)):
            con.execute(
                f"COPY (SELECT * EXCLUDE (input_problem) FROM ({canonical_sql(rows, seed=rows)})) "
                f"TO '{path}' (FORMAT csv, HEADER)"
            )
    finally:
        con.close()
    duck = run_duckdb(flat_source(named), tmp_path / "duck")
    ran = run_spark(named, "flat", tmp_path / "spark", master=spark_cluster.master)
    assert ran.rows == duck.rows == 40
    _assert_same_runs(duck, ran)


# --- a real Bulk Data export ------------------------------------------------------------------------------

RXNORM, SNOMED = "http://www.nlm.nih.gov/research/umls/rxnorm", "http://snomed.info/sct"


def _lines(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle]


def _synthea_with_ketamine(folder: Path) -> Path:
    """The Synthea export (10 patients) with a ketamine administration at the start of every encounter (half
    of them citing a Medication of the export, which every bucket needs), oxycodone for two patients, a line
    that is not a resource among the administrations, the conditions gzipped and a hidden file."""
    shutil.copytree(SYNTHEA, folder)
    encounters = _lines(folder / "Encounter.000.ndjson")
    patients = sorted({e["subject"]["reference"] for e in encounters})
    ketamine = {"coding": [{"system": RXNORM, "code": "6130", "display": "ketamine"}]}
    medication = {"resourceType": "Medication", "id": "ket-50", "code": ketamine}
    given = []
    for i, e in enumerate(encounters):
        drug: dict[str, Any] = (
            {"medicationReference": {"reference": "Medication/ket-50"}}
            if i % 2
            else {"medicationCodeableConcept": ketamine}
        )
        given.append(
            {
                "resourceType": "MedicationAdministration",
                "id": f"k-{e['id']}",
                "status": "completed",
                **drug,
                "subject": e["subject"],
                "context": {"reference": f"Encounter/{e['id']}"},
                "effectiveDateTime": e["period"]["start"],
                "dosage": {
                    "route": {"coding": [{"system": SNOMED, "code": "47625008"}]},
                    "dose": {"value": 20 + i % 30, "unit": "mg"},
                },
            }
        )
    oxycodone = [
        {
            "resourceType": "MedicationRequest",
            "id": f"oxy-{n}",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "oxycodone hydrochloride 10 MG Oral Tablet"},
            "subject": {"reference": patient},
            "authoredOn": "2010-01-01",
            "dosageInstruction": [
                {
                    "timing": {"repeat": {"frequency": 4, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
                }
            ],
        }
        for n, patient in enumerate(patients[:2])
    ]
    text = "\n".join(json.dumps(r) for r in given) + "\n{not a resource\n"
    (folder / "MedicationAdministration.000.ndjson").write_text(text)
    (folder / "._MedicationAdministration.000.ndjson").write_bytes(b"\x00\x05\x16\x07")  # hidden: not read
    conditions = folder / "Condition.000.ndjson"  # compressed, as exports may be
    with gzip.open(folder / "Condition.000.ndjson.gz", "wb") as handle:
        handle.write(conditions.read_bytes())
    conditions.unlink()
    (folder / "Medication.000.ndjson").write_text(json.dumps(medication) + "\n")
    (folder / "MedicationRequest.001.ndjson").write_text("\n".join(json.dumps(r) for r in oxycodone) + "\n")
    return folder


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/external-test-data is not beside the repository")
def test_the_synthea_bulk_export_on_the_cluster(spark_cluster: Cluster, tmp_path: Path) -> None:
    """Against a site protocol, which the FHIR reader also reads (its intensive-monitoring locations)."""
    export = _synthea_with_ketamine(tmp_path / "export")
    site = load_site(EXAMPLE_SITE, load_knowledge())
    duck, spark = _audit_both(export, tmp_path, spark_cluster, site=site)
    encounters = len(_lines(export / "Encounter.000.ndjson"))
    assert spark["administrations"] == encounters + 1 and spark["bad_rows"] >= 1
    assert spark["opioid_tolerance"] == duck["opioid_tolerance"]
    assert spark["opioid_tolerance_step"]["patients"] == 2


# --- the driver reads nothing of the input -----------------------------------------------------------------


class _Recording:
    """A DuckDB connection that keeps every query it is given."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seen: list[str]) -> None:
        self._con, self._seen = con, seen

    def execute(self, query: object, *args: Any, **kwargs: Any) -> Any:
        self._seen.append(str(query))
        return self._con.execute(query, *args, **kwargs)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def test_the_driver_queries_nothing_of_the_input(
    spark_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the driver, DuckDB decides the classes and makes the report from the findings: no query of it names
    the input, and no canonical copy of the input is written."""
    export = write_all(300, tmp_path / "synth", seed=3)["fhir"]
    seen: list[str] = []
    connect = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: _Recording(connect(*a, **k), seen))
    _session(spark_cluster)
    summary = run_audit(export, tmp_path / "out", engine="spark")
    assert summary["administrations"] == 300 and seen
    assert not [q for q in seen if str(export) in q or "MedicationAdministration" in q]
    assert not (tmp_path / "out" / "canonical").exists()


def _tree_rss(root: int) -> tuple[int, int]:
    """Peak RSS so far of a process (VmHWM, KiB) and the current RSS of its descendants (KiB)."""
    own = 0
    try:
        for line in (Path("/proc") / str(root) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = int(line.split()[1])
    except OSError:
        pass  # the process has ended: its peak is what was sampled before
    return own, tree_usage(root)[0]


def _driver_peak(cluster: Cluster, export: Path, out: Path) -> tuple[float, float]:
    """``ketamine-cds audit --engine spark`` as a process of its own on the cluster: the peak RSS (MiB) of the
    Python driver and of the JVM it starts (the Spark driver)."""
    env = {
        **os.environ,
        "SPARK_MASTER": cluster.master,
        "PYSPARK_SUBMIT_ARGS": submit_args(cluster.session_settings()),
        "PYSPARK_PYTHON": sys.executable,
    }
    command = [
        sys.executable,
        "-m",
        "ketamine_cds",
        "audit",
        str(export),
        "--out",
        str(out),
        "--engine",
        "spark",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = {"own": 0, "jvm": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            own, jvm = _tree_rss(process.pid)
            peak["own"], peak["jvm"] = max(peak["own"], own), max(peak["jvm"], jvm)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, err = process.communicate(timeout=900)
    finally:
        done.set()
        sampler.join()
    assert process.returncode == 0, err.decode(errors="replace")[-3000:]
    return peak["own"] / 1024, peak["jvm"] / 1024


def test_the_drivers_memory_stays_flat_as_the_input_grows(spark_cluster: Cluster, tmp_path: Path) -> None:
    """A FHIR export ten times larger: the driver's memory (Python and its JVM) the same, within noise."""
    small = write_fhir(1_000, tmp_path / "small", seed=7)
    large = write_fhir(10_000, tmp_path / "large", seed=7)
    size = sum(p.stat().st_size for p in large.iterdir()) / 2**20
    active = SparkSession.getActiveSession()
    if active is not None:  # the cluster's cores go to the audit's own application
        active.stop()
    small_python, small_jvm = _driver_peak(spark_cluster, small, tmp_path / "out-small")
    large_python, large_jvm = _driver_peak(spark_cluster, large, tmp_path / "out-large")
    grown = f"input {size:.0f} MiB; Python {small_python:.0f} -> {large_python:.0f} MiB, JVM {small_jvm:.0f} -> {large_jvm:.0f} MiB"
    assert large_python - small_python < 48, grown
    assert large_jvm - small_jvm < 192, grown
    assert not (tmp_path / "out-large" / "canonical").exists()


# --- shipping the package to the executors ---------------------------------------------------------------


def _wheel(tmp: Path) -> Path:
    """The package's wheel, built from a copy of the sources (the tree stays as it is), named ``.zip``: Spark
    puts ``.zip``, ``.egg`` and ``.jar`` files on the executors' path, not ``.whl`` ones."""
    root = Path(__file__).resolve().parents[2]
    source = tmp / "source"
    source.mkdir()
    shutil.copy(root / "pyproject.toml", source)
    shutil.copy(root / "README.md", source)
    shutil.copytree(root / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(tmp / "dist")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = next((tmp / "dist").glob("ketamine_cds-*.whl"))
    return wheel.rename(wheel.with_suffix(".zip"))


def _hide_the_package(tmp: Path) -> Path:
    """A ``sitecustomize`` that takes this checkout off ``sys.path``: an interpreter started with it on its
    ``PYTHONPATH`` has the virtualenv (DuckDB, pyarrow) but not the package."""
    import ketamine_cds

    folder = tmp / "hide"
    folder.mkdir()
    src = str(Path(ketamine_cds.__file__).resolve().parents[1])
    (folder / "sitecustomize.py").write_text(
        f"import sys\nsys.path[:] = [p for p in sys.path if p.rstrip('/') != {src!r}]\n"
    )
    return folder


def test_executors_import_the_package_from_a_shipped_wheel(spark_cluster: Cluster, tmp_path: Path) -> None:
    """A real cluster's nodes do not share the driver's virtualenv: the wheel goes with the job
    (``addPyFile``, as ``spark-submit --py-files``); DuckDB and pyarrow are on the nodes already."""
    wheel, hide = _wheel(tmp_path), _hide_the_package(tmp_path)
    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    settings = {**cluster_settings(spark_cluster), "spark.executorEnv.PYTHONPATH": str(hide)}
    session = spark_session(spark_cluster.master, settings)
    try:
        session.sparkContext.addPyFile(str(wheel))

        def where(_: object) -> Iterator[str]:
            import ketamine_cds

            yield str(ketamine_cds.__file__)

        found = set(session.sparkContext.parallelize(range(4), 4).mapPartitions(where).collect())
        assert found and all(wheel.name in f for f in found), found
        table = _write_csv(tmp_path / "bad" / "administrations.csv", BAD_ROWS)
        duck = run_duckdb(flat_source(table), tmp_path / "duck")
        _assert_same_runs(duck, run_spark(table, "flat", tmp_path / "spark", master=spark_cluster.master))
    finally:
        session.stop()


def test_spark_submit_runs_the_command(spark_cluster: Cluster, tmp_path: Path) -> None:
    """``spark-submit ... ketamine_cds/__main__.py audit ...``, as on an existing cluster (README)."""
    import ketamine_cds
    from spark_cluster import spark_home

    table = _write_csv(tmp_path / "bad" / "administrations.csv", BAD_ROWS)
    active = SparkSession.getActiveSession()
    if active is not None:  # the cluster's cores go to the submitted application
        active.stop()
    settings = [f"--conf={k}={v}" for k, v in cluster_settings(spark_cluster).items()]
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master",
        spark_cluster.master,
        *settings,
        str(Path(ketamine_cds.__file__).parent / "__main__.py"),
        "audit",
        str(table),
        "--out",
        str(tmp_path / "spark"),
        "--engine",
        "spark",
    ]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(command, env=env, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    summary = json.loads((tmp_path / "spark" / "summary.json").read_text())
    assert summary["engine"] == "spark" and summary["administrations"] == len(BAD_ROWS)
    duck = run_duckdb(flat_source(table), tmp_path / "duck")
    _assert_same_findings(duck.findings, tmp_path / "spark" / "findings.parquet")


def cluster_settings(cluster: Cluster) -> dict[str, str]:
    return {
        **cluster.session_settings(),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }


# --- the session ---------------------------------------------------------------------------------------------


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
    """The comparison itself: NaN equals NaN, nothing else is close enough, types must agree."""
    assert _same(math.nan, math.nan) and not _same(math.nan, 1.0) and not _same(1.0, 1.0 + 1e-15)
    assert not _same(Decimal("0.35"), 0.35) and _same([], []) and _same(-0.0, 0.0)
    assert _same(dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 1)) and not _same(None, "")
