"""The flat table's column names: matched to the canonical columns ignoring case, an unknown one refused
(exit 2, naming it and the expected ones) unless the user maps it (``--column NAME=COLUMN``, or ``NAME=-`` to
leave it out). Before, ``WEIGHT_VALUE`` or ``weight_kg`` was read as no weight at all, without a word."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ketamine_cds import InputError
from ketamine_cds.audit.canonical import COLUMN_NAMES
from ketamine_cds.audit.duck import run_duckdb
from ketamine_cds.audit.flat import flat_source, parse_column_mappings, resolve_columns

ROW = {
    "admin_id": "a1",
    "patient_id": "P1",
    "administered_at": "2025-05-01 08:00:00",
    "route": "intravenous",
    "kind": "bolus",
    "dose_value": "20",
    "dose_unit": "mg",
    "weight_value": "70",
    "weight_unit": "kg",
    "indication": "perioperative",
    "procedure_class": "abdominal",
    "setting": "non-intensive-care",
    "conditions": "",
}


def table(path: Path, renamed: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> Path:
    """The one-row flat table with some columns renamed (canonical -> written) and extra ones."""
    renamed = renamed or {}
    row = {renamed.get(k, k): v for k, v in ROW.items()} | (extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(row))
        writer.writeheader()
        writer.writerow(row)
    return path


def findings(source: str, out: Path) -> dict[str, Any]:
    run = run_duckdb(source, out)
    con = duckdb.connect()
    try:
        cursor = con.execute(f"SELECT * FROM read_parquet('{run.findings}')")
        names = [d[0] for d in cursor.description]
        [row] = cursor.fetchall()
    finally:
        con.close()
    return dict(zip(names, row, strict=True))


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketamine_cds", "audit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_column_names_in_another_case_are_the_canonical_columns(tmp_path: Path) -> None:
    upper = {k: k.upper() for k in ROW}
    found = findings(flat_source(table(tmp_path / "upper.csv", upper)), tmp_path / "out")
    assert found["weight_kg"] == 70 and found["verdict"] == "consider"  # was: no weight, needs-information


def test_an_unknown_column_exits_2_naming_it_and_the_expected_ones(tmp_path: Path) -> None:
    flat = table(tmp_path / "kg.csv", {"weight_value": "weight_kg"})
    with pytest.raises(InputError) as caught:
        flat_source(flat)
    assert "'weight_kg'" in caught.value.message and "weight_value" in caught.value.message
    done = audit_cli(str(flat), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "'weight_kg'" in done.stderr and "--column" in done.stderr
    assert all(name in done.stderr for name in COLUMN_NAMES if name != "input_problem")
    assert not (tmp_path / "out" / "findings.parquet").exists()


def test_a_column_can_be_mapped_or_left_out(tmp_path: Path) -> None:
    flat = table(tmp_path / "kg.csv", {"weight_value": "weight_kg"}, {"Notes": "reviewed"})
    out = tmp_path / "out"
    done = audit_cli(
        str(flat), "--out", str(out), "--column", "weight_kg=weight_value", "--column", "notes=-"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdicts"] == {"consider": 1}
    mapped = flat_source(flat, parse_column_mappings(["weight_kg=WEIGHT_VALUE", "Notes=-"]))
    assert findings(mapped, tmp_path / "again")["weight_kg"] == 70


@pytest.mark.parametrize(
    ("mappings", "message"),
    [
        (["weight_kg"], "NAME=COLUMN"),
        (["weight_kg=weight_in_kilos"], "'weight_in_kilos' is not a column"),
        (["no_such=weight_value", "weight_kg=weight_value"], "'no_such'"),
        (["weight_kg=weight_value", "weight_kg=dose_value"], "twice"),
    ],
)
def test_a_wrong_mapping_is_refused_naming_it(tmp_path: Path, mappings: list[str], message: str) -> None:
    flat = table(tmp_path / "kg.csv", {"weight_value": "weight_kg"})
    with pytest.raises(InputError) as caught:
        flat_source(flat, parse_column_mappings(mappings))
    assert caught.value.field == "--column" and message in caught.value.message


def test_two_columns_that_name_one_canonical_column_are_refused(tmp_path: Path) -> None:
    # a CSV header naming one column twice but for case or spaces: DuckDB renames the second (Weight_Value_1),
    # which no column name matches: refused, never read as one of them
    with pytest.raises(InputError) as caught:
        flat_source(table(tmp_path / "case.csv", extra={"Weight_Value ": "7"}))
    assert "'Weight_Value_1'" in caught.value.message
    # where both names reach the reader (a Parquet file written elsewhere)
    with pytest.raises(InputError) as caught:
        resolve_columns([*ROW, "Weight_Value "])
    assert "'weight_value' and 'Weight_Value '" in caught.value.message
    assert resolve_columns([*ROW, "Weight_Value "], {"Weight_Value ": "-"})["weight_value"] == "weight_value"


def test_the_same_rule_for_parquet(tmp_path: Path) -> None:
    flat = table(tmp_path / "upper.csv", {"weight_value": "Weight_Value", "dose_value": "dose_mg"})
    parquet = tmp_path / "upper.parquet"
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM read_csv('{flat}', all_varchar = true)) TO '{parquet}' (FORMAT parquet)"
        )
    finally:
        con.close()
    with pytest.raises(InputError) as caught:
        flat_source(parquet)
    assert "'dose_mg'" in caught.value.message
    found = findings(flat_source(parquet, {"dose_mg": "dose_value"}), tmp_path / "out")
    assert (found["weight_kg"], found["dose_value"]) == (70, 20)
