"""Rows the reviewer found misread by the batch audit: each gets the engine's answer for the same facts, or a
reason of its own, never a neighbour's verdict and never a crash."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ketamine_cds import assess, facts_from_document, load_knowledge
from ketamine_cds.audit.duck import run_duckdb
from ketamine_cds.audit.flat import flat_source

KB = load_knowledge()
HEADER = [
    "admin_id", "patient_id", "administered_at", "route", "kind", "dose_value", "dose_unit",
    "concentration_mg_per_ml", "weight_value", "weight_unit", "indication", "procedure_class", "setting",
    "conditions",
]  # fmt: skip


def row(admin_id: str, kind: str, dose: str, unit: str, weight: str = "70", **more: str) -> dict[str, str]:
    values = {
        "admin_id": admin_id,
        "patient_id": "P1",
        "administered_at": "2025-05-01 08:00:00",
        "route": "intravenous",
        "kind": kind,
        "dose_value": dose,
        "dose_unit": unit,
        "concentration_mg_per_ml": "",
        "weight_value": weight,
        "weight_unit": "kg",
        "indication": "perioperative",
        "procedure_class": "abdominal",
        "setting": "non-intensive-care",
        "conditions": "",
    }
    values.update(more)
    return values


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def audit(table: Path, out: Path, columns: dict[str, str] | None = None) -> dict[str, tuple[Any, ...]]:
    """admin_id -> (verdict, statements, dose_status, problem), as the DuckDB audit wrote them."""
    run = run_duckdb(flat_source(table, columns), out)
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT admin_id, verdict, statements, dose_status, problem FROM read_parquet('{run.findings}')"
        ).fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], list(r[2] or []), r[3], r[4]) for r in rows}


def engine(
    order: dict[str, Any], weight: float | None = 70, setting: str = "non-intensive-care"
) -> tuple[Any, ...]:
    """assess() on the case document with the same facts: (verdict, statements, dose_status)."""
    patient: dict[str, Any] = {"conditions": []}
    if weight is not None:
        patient["weight"] = {"value": weight, "unit": "kg"}
    document = {
        "as_of": "2025-05-01",
        "indication": "perioperative",
        "procedure": {"class": "abdominal"},
        "setting": setting,
        "patient": patient,
        "order": {"route": "intravenous", **order},
    }
    result = assess(facts_from_document(document, today=dt.date(2025, 5, 1)), KB)
    status = result.dose_check.status.value if result.dose_check is not None else None
    return result.verdict.value, list(result.statement_ids), status


def test_kind_in_capitals_is_read_as_the_engine_reads_it(tmp_path: Path) -> None:
    table = write_csv(
        tmp_path / "kinds.csv",
        [
            row("k1", "Infusion", "0.5", "mg/kg/h"),
            row("k2", "Infusion", "1.5", "mg/kg/h"),
            row("k3", " BOLUS ", "0.5", "mg/kg"),
            row("k4", "continuous", "1.5", "mg/kg/h"),
        ],
    )
    found = audit(table, tmp_path / "out")
    for admin_id, dose, kind, unit in (
        ("k1", 0.5, "infusion", "mg/kg/h"),
        ("k2", 1.5, "infusion", "mg/kg/h"),
    ):
        want = engine({"kind": kind, "dose": {"value": dose, "unit": unit}})
        assert found[admin_id][:3] == want and found[admin_id][3] is None, admin_id
    assert found["k2"][2] == "exceeds" and found["k1"][2] == "within"
    assert found["k3"][:3] == engine({"kind": "bolus", "dose": {"value": 0.5, "unit": "mg/kg"}})
    assert found["k4"][0] is None and "unknown kind 'continuous'" in found["k4"][3]


def test_a_concentration_of_zero_or_below_is_a_row_reason_whatever_the_order(tmp_path: Path) -> None:
    good = row("c1", "bolus", "2.5", "mL", concentration_mg_per_ml="10")
    bad = [
        row("c2", "bolus", "2.5", "mL", concentration_mg_per_ml="0"),
        row("c3", "bolus", "2.5", "mL", concentration_mg_per_ml="-10"),
        row("c4", "bolus", "20", "mg", concentration_mg_per_ml="0"),
    ]
    for order, rows in enumerate(([good, *bad], [*bad, good])):
        found = audit(write_csv(tmp_path / f"c{order}.csv", rows), tmp_path / f"out{order}")
        assert found["c1"][:3] == engine(
            {
                "kind": "bolus",
                "dose": {"value": 2.5, "unit": "mL"},
                "concentration": {"value": 10, "unit": "mg/mL"},
            }
        )
        assert found["c1"][3] is None
        for admin_id in ("c2", "c3", "c4"):
            verdict, _, _, problem = found[admin_id]
            assert verdict is None and "the strength must be positive" in problem, (order, admin_id, problem)


def test_an_infinite_dose_is_a_row_reason_never_an_over_limit_class(tmp_path: Path) -> None:
    table = write_csv(
        tmp_path / "inf.csv",
        [row("d1", "bolus", "50", "mg"), row("d2", "bolus", "inf", "mg"), row("d3", "bolus", "1e400", "mg")],
    )
    for first in (True, False):
        found = audit(table, tmp_path / f"out{first}")
        assert found["d1"][:3] == engine({"kind": "bolus", "dose": {"value": 50, "unit": "mg"}})
        assert found["d1"][2] == "exceeds" and found["d1"][3] is None
        for admin_id in ("d2", "d3"):
            assert found[admin_id][0] is None and "positive number" in found[admin_id][3]
        table = write_csv(tmp_path / "inf2.csv", [row("d3", "bolus", "1e400", "mg"), row("d1", "bolus", "50", "mg"),
                                                   row("d2", "bolus", "inf", "mg")])  # fmt: skip


def test_a_nan_or_infinite_weight_or_concentration_is_a_row_reason_not_a_crash(tmp_path: Path) -> None:
    table = write_csv(
        tmp_path / "nan.csv",
        [
            row("n1", "bolus", "20", "mg", weight="nan"),
            row("n2", "bolus", "20", "mg", weight="inf"),
            row("n3", "bolus", "2", "mL", concentration_mg_per_ml="nan"),
            row("n4", "bolus", "2", "mL", concentration_mg_per_ml="inf"),
            row("n5", "bolus", "20", "mg"),
        ],
    )
    found = audit(table, tmp_path / "out")
    for admin_id in ("n1", "n2", "n3", "n4"):
        assert found[admin_id][0] is None and "finite number" in found[admin_id][3], admin_id
    assert found["n5"][:3] == engine({"kind": "bolus", "dose": {"value": 20, "unit": "mg"}})


def test_a_dose_without_a_unit_is_a_row_reason(tmp_path: Path) -> None:
    found = audit(
        write_csv(tmp_path / "u.csv", [row("u1", "bolus", "20", ""), row("u2", "", "", "")]), tmp_path / "o"
    )
    assert found["u1"][0] is None and "a dose without a unit" in found["u1"][3]
    assert found["u2"][3] is None and found["u2"][:3] == engine({})


def test_each_unknown_weight_unit_is_quoted_from_its_own_row(tmp_path: Path) -> None:
    rows = [
        row("w1", "bolus", "20", "mg", weight_unit="stone"),
        row("w2", "bolus", "20", "mg", weight_unit="tonnes"),
        row("w3", "bolus", "20", "mg", weight_unit=""),
    ]
    found = audit(write_csv(tmp_path / "w.csv", rows), tmp_path / "out")
    assert "stone" in found["w1"][3] and "tonnes" in found["w2"][3]
    assert "without a unit" in found["w3"][3]


def _fhir(folder: Path, doses: dict[str, dict[str, Any]], weight_kg: float = 83) -> Path:
    """One patient weighing ``weight_kg`` and an IV ketamine administration per dosage."""
    folder.mkdir(parents=True, exist_ok=True)
    route = {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}]}
    given = [
        {
            "resourceType": "MedicationAdministration",
            "id": admin_id,
            "status": "completed",
            "medicationCodeableConcept": {
                "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6130"}]
            },
            "subject": {"reference": "Patient/P1"},
            "effectiveDateTime": "2025-05-01T08:00:00Z",
            "dosage": {"route": route, **dosage},
        }
        for admin_id, dosage in doses.items()
    ]
    weight = {
        "resourceType": "Observation",
        "id": "w1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/P1"},
        "effectiveDateTime": "2025-05-01T07:00:00Z",
        "valueQuantity": {
            "value": weight_kg,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }
    (folder / "MedicationAdministration.ndjson").write_text("\n".join(json.dumps(r) for r in given) + "\n")
    (folder / "Observation.ndjson").write_text(json.dumps(weight) + "\n")
    (folder / "Patient.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "P1"}) + "\n")
    return folder


def _ratio(value: Any, per: Any, unit: str) -> dict[str, Any]:
    return {
        "rateRatio": {
            "numerator": {"value": value, "unit": "mg", "code": "mg"},
            "denominator": {"value": per, "unit": unit, "code": unit},
        }
    }


def test_a_fhir_rate_ratio_is_converted_to_per_hour_exactly(tmp_path: Path) -> None:
    from ketamine_cds.audit.fhir_ndjson import fhir_source

    folder = _fhir(
        tmp_path / "fhir",
        {
            "r1": _ratio(8.3, 6, "min"),
            "r2": _ratio(83, 1, "h"),
            "r3": _ratio(1992, 1, "d"),
            "r4": _ratio(10, 3, "h"),
        },
    )
    con = duckdb.connect()
    try:
        rows = dict(con.execute(f"SELECT admin_id, dose_value FROM ({fhir_source(folder)})").fetchall())
    finally:
        con.close()
    assert rows == {"r1": 83.0, "r2": 83.0, "r3": 83.0, "r4": 10 / 3}
    run = run_duckdb(fhir_source(folder), tmp_path / "out")
    con = duckdb.connect()
    try:
        found = dict(
            con.execute(f"SELECT admin_id, dose_status FROM read_parquet('{run.findings}')").fetchall()
        )
    finally:
        con.close()
    assert found["r1"] == found["r2"] == found["r3"] == "within"  # 83 mg/h for 83 kg: 1 mg/kg/h, the limit


def test_a_parquet_float_or_double_dose_is_read_as_written(tmp_path: Path) -> None:
    """15.05 mg for 43 kg is exactly 0.35 mg/kg: within, as a float32 and as a double."""
    table = tmp_path / "typed.parquet"
    con = duckdb.connect()
    try:
        con.execute(
            f"""COPY (SELECT * FROM (VALUES
                ('f1', 'P1', TIMESTAMP '2025-05-01', 'intravenous', 'bolus', CAST(15.05 AS FLOAT),
                 CAST(15.05 AS DOUBLE), 'mg', CAST(43 AS FLOAT), 'kg', 'perioperative', 'abdominal',
                 'non-intensive-care', ''))
              t(admin_id, patient_id, administered_at, route, kind, dose_value, dose_double, dose_unit,
                weight_value, weight_unit, indication, procedure_class, setting, conditions))
              TO '{table}' (FORMAT parquet)"""
        )
        con.execute(
            f"COPY (SELECT 'f2' AS admin_id, patient_id, administered_at, route, kind, dose_double AS dose_value, "
            "dose_unit, weight_value, weight_unit, indication, procedure_class, setting, conditions "
            f"FROM read_parquet('{table}')) TO '{tmp_path / 'double.parquet'}' (FORMAT parquet)"
        )
    finally:
        con.close()
    want = engine({"kind": "bolus", "dose": {"value": 15.05, "unit": "mg"}}, weight=43)
    assert want[2] == "within"
    assert audit(table, tmp_path / "out", {"dose_double": "-"})["f1"] == (*want, None)  # a column not read
    assert audit(tmp_path / "double.parquet", tmp_path / "out2")["f2"] == (*want, None)


def test_booleans_are_true_or_false_and_settings_known_words_else_a_row_reason(tmp_path: Path) -> None:
    header = [*HEADER, "pca_sole_agent"]
    rows = [
        row("b1", "bolus", "20", "mg", pca_sole_agent=" TRUE "),
        row("b2", "bolus", "20", "mg", pca_sole_agent="false"),
        row("b3", "bolus", "20", "mg", pca_sole_agent="ja"),
        row("b4", "bolus", "20", "mg", pca_sole_agent="yes"),
        row("s1", "infusion", "1.5", "mg/kg/h", setting="Intensive-Care"),
        row("s2", "infusion", "1.5", "mg/kg/h", setting="ICU"),
        row("s3", "infusion", "1.5", "mg/kg/h", setting="intensive-care\t"),
    ]
    found = audit(write_csv(tmp_path / "b.csv", rows, header), tmp_path / "out")
    dose = {"kind": "bolus", "dose": {"value": 20, "unit": "mg"}}
    assert found["b1"] == (*engine({**dose, "pca_sole_agent": True}), None)
    assert found["b2"] == (*engine({**dose, "pca_sole_agent": False}), None)
    assert found["b3"][3] == "row: pca_sole_agent is not true or false: ja"
    assert found["b4"][3] == "row: pca_sole_agent is not true or false: yes"
    infusion = {"kind": "infusion", "dose": {"value": 1.5, "unit": "mg/kg/h"}}
    assert found["s1"] == (*engine(infusion, setting="intensive-care"), None)
    for admin_id in ("s2", "s3"):
        assert found[admin_id][0] is None and "unknown setting" in found[admin_id][3], admin_id


def test_unreadable_input_exits_2_with_one_line_and_a_quote_in_out_is_a_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ketamine_cds._cli import main

    latin = tmp_path / "latin.csv"
    latin.write_bytes(
        ",".join(HEADER).encode() + b"\nA1,P1,2025-05-01,intravenous,bolus,20,mg,,70,kg,caf\xe9,,,\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (latin, empty):
        with pytest.raises(SystemExit) as exited:
            main(["audit", str(bad), "--out", str(tmp_path / "o1")])
        assert exited.value.code == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "internal error" not in err, err
    good = write_csv(tmp_path / "good.csv", [row("g1", "bolus", "20", "mg")])
    assert main(["audit", str(good), "--out", str(tmp_path / "o'brien")]) == 0, capsys.readouterr().err
    assert (tmp_path / "o'brien" / "findings.parquet").is_file()


def test_times_outside_the_calendar_are_row_reasons_and_the_report_is_written(tmp_path: Path) -> None:
    """DuckDB reads 10000-01-01 and infinity as times; Python and Spark do not. Such a row has no time, and
    data reaching December 9999 still make a report."""
    table = write_csv(
        tmp_path / "flat.csv",
        [
            row("t1", "bolus", "20", "mg", administered_at="2026-01-01 08:00:00"),
            row("t2", "bolus", "20", "mg", administered_at="9999-12-01 08:00:00"),
            row("t3", "bolus", "20", "mg", administered_at="10000-01-01 08:00:00"),
            row("t4", "bolus", "20", "mg", administered_at="infinity"),
        ],
    )
    found = audit(table, tmp_path / "out")
    assert found["t1"][0] == found["t2"][0] == "consider"
    for bad in ("t3", "t4"):
        verdict, _, _, problem = found[bad]
        assert verdict is None and "administered_at is not a time" in problem
    done = subprocess.run(
        [sys.executable, "-m", "ketamine_cds", "audit", str(table), "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / "report.html").read_text().count("9999") >= 1


def test_a_number_with_a_digit_separator_is_a_row_reason_never_read(tmp_path: Path) -> None:
    # DuckDB's TRY_CAST reads "7_0" as 70 and "0_3" as 3: a slip of the keyboard, never a weight or a dose
    table = write_csv(
        tmp_path / "flat.csv",
        [
            row("a", "bolus", "0_3", "mg/kg"),
            row("b", "bolus", "20", "mg", weight="7_0"),
            row("c", "bolus", "20", "mg"),
        ],
    )
    found = audit(table, tmp_path / "out")
    assert found["a"][3] == "row: dose_value is not a number: 0_3"
    assert found["b"][3] == "row: weight_value is not a number: 7_0"
    assert found["c"][3] is None


def test_an_omop_quantity_or_weight_with_a_digit_separator_is_a_row_reason(tmp_path: Path) -> None:
    from ketamine_cds.audit.omop import omop_source

    folder = tmp_path / "omop"
    folder.mkdir()
    (folder / "person.csv").write_text("person_id,year_of_birth\n1,1970\n2,1970\n")
    (folder / "drug_exposure.csv").write_text(
        "drug_exposure_id,person_id,drug_concept_id,drug_source_value,drug_exposure_start_datetime,quantity,"
        "dose_unit_source_value,route_source_value\n"
        "1,1,0,ketamine,2025-03-01 10:00:00,2_0,mg,IV\n"
        "2,2,0,ketamine,2025-03-01 10:00:00,20,mg,IV\n"
    )
    (folder / "measurement.csv").write_text(
        "measurement_id,person_id,measurement_concept_id,measurement_source_value,measurement_datetime,"
        "value_as_number,unit_source_value\n"
        "1,2,0,29463-7,2025-02-01 08:00:00,7_0,kg\n"
    )
    con = duckdb.connect()
    try:
        cursor = con.execute(
            f"SELECT admin_id, dose_value, weight_value, input_problem FROM ({omop_source(folder)})"
        )
        rows = {r[0]: r[1:] for r in cursor.fetchall()}
    finally:
        con.close()
    assert rows["1"][0] is None and "quantity is not a number: 2_0" in rows["1"][2]
    assert rows["2"][1] is None and "the body weight is not a number" in rows["2"][2]
