"""The OMOP reader's CTE groups (``omop.omop_source``), each on a few rows of CSV tables (no vocabulary)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import duckdb

from ketamine_cds._kb import load_knowledge
from ketamine_cds.audit import omop as o
from ketamine_cds.audit.reader_sql import knowledge_ctes

KB = load_knowledge()


def _table(folder: Path, name: str, rows: list[dict[str, str]]) -> None:
    with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _exposure(
    exposure_id: str, name: str = "ketamine 10 MG/ML Injectable Solution", **extra: str
) -> dict[str, str]:
    row = {
        "drug_exposure_id": exposure_id,
        "person_id": "1",
        "drug_source_value": name,
        "drug_exposure_start_datetime": "2026-01-01 10:00:00",
        "quantity": "20",
        "dose_unit_source_value": "mg",
        "route_source_value": "IV",
        "visit_occurrence_id": "v1",
        "visit_detail_id": "",
        "sig": "",
    }
    return row | extra


def _exposures(folder: Path, *more: str) -> list[str]:
    """The groups up to the exposures (what every later group reads), then ``more``."""
    r = o.readers(folder)
    units = f"units AS ({o._unit_table(r['drug_exposure'])})"
    return [knowledge_ctes(KB), units, o.vocabulary_ctes(r, KB, False), o.exposure_ctes(r, KB), *more]


def _rows(groups: list[str], select: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        return con.execute("WITH " + ",\n".join(groups) + "\n" + select).fetchall()
    finally:
        con.close()


def test_exposure_ctes_keep_ketamine_and_read_the_dose(tmp_path: Path) -> None:
    _table(
        tmp_path,
        "drug_exposure",
        [
            _exposure("1"),
            _exposure("2", name="morphine sulfate 4 MG/ML Injectable Solution"),
            _exposure("3", quantity="2", dose_unit_source_value="mL"),
            _exposure("4", dose_unit_source_value="mg/h", sig="PCA"),
        ],
    )
    rows = _rows(
        _exposures(tmp_path),
        "SELECT admin_id, route, kind, dose_value, concentration_mg_per_ml, pca_sole_agent FROM admins ORDER BY 1",
    )
    assert rows == [
        ("1", "intravenous", "bolus", 20.0, None, False),
        ("3", "intravenous", "bolus", 2.0, 10.0, False),
        ("4", "intravenous", "infusion", 20.0, None, True),
    ]


def test_weight_ctes_the_visits_weight_else_the_persons_latest(tmp_path: Path) -> None:
    _table(tmp_path, "drug_exposure", [_exposure("1"), _exposure("2", visit_occurrence_id="v2")])

    def weight(measurement_id: str, when: str, kg: str, visit: str) -> dict[str, str]:
        return {
            "measurement_id": measurement_id,
            "person_id": "1",
            "measurement_source_value": "29463-7",
            "measurement_datetime": when,
            "value_as_number": kg,
            "unit_source_value": "kg",
            "visit_occurrence_id": visit,
        }

    _table(
        tmp_path,
        "measurement",
        [weight("m1", "2025-12-01 08:00:00", "80", "v0"), weight("m2", "2025-11-01 08:00:00", "75", "v1")],
    )
    groups = _exposures(tmp_path, o.weight_ctes(o.readers(tmp_path), False))
    assert _rows(groups, "SELECT admin_id, w.value FROM visit_weight ORDER BY 1") == [("1", 75.0)]
    assert _rows(groups, "SELECT admin_id, w.value FROM latest_weight ORDER BY 1") == [
        ("1", 80.0),
        ("2", 80.0),
    ]


def _condition(code: str, start: str, end: str = "", visit: str = "v1") -> dict[str, str]:
    return {
        "person_id": "1",
        "condition_source_value": code,
        "condition_start_date": start,
        "condition_end_date": end,
        "visit_occurrence_id": visit,
    }


def test_condition_ctes_the_conditions_in_effect(tmp_path: Path) -> None:
    _table(tmp_path, "drug_exposure", [_exposure("1")])
    _table(
        tmp_path,
        "condition_occurrence",
        [
            _condition("78275009", "2025-01-01"),  # sleep apnoea, in effect
            _condition("ICD10CM:F11.20", "2025-01-01"),  # opioid dependence, substance misuse (below F11)
            _condition("69322001", "2025-01-01", end="2025-06-01"),  # psychosis, over
            _condition("370143000", "2026-02-01"),  # depression, later
        ],
    )
    groups = _exposures(tmp_path, o.condition_ctes(o.readers(tmp_path), KB))
    assert _rows(groups, "SELECT admin_id, conditions FROM admin_conditions") == [
        ("1", "opioid-dependence;sleep-apnea;substance-misuse")
    ]


def test_indication_ctes_an_observed_use_and_a_use_of_the_visits_conditions(tmp_path: Path) -> None:
    _table(tmp_path, "drug_exposure", [_exposure("1")])
    _table(tmp_path, "condition_occurrence", [_condition("30925003", "2026-01-01")])  # sickle cell crisis
    _table(
        tmp_path,
        "observation",
        [
            {
                "observation_event_id": "1",
                "observation_source_value": "Indication",
                "value_as_string": "Acute pain",
            }
        ],
    )
    r = o.readers(tmp_path)
    groups = _exposures(tmp_path, o.condition_ctes(r, KB), o.indication_ctes(r))
    assert _rows(groups, "SELECT admin_id, use_id FROM observed_use") == [("1", "acute-pain")]
    assert _rows(groups, "SELECT visit_id, use_id FROM visit_use") == [("v1", "sickle-cell-pain")]


def test_procedure_ctes_a_procedure_of_the_visit(tmp_path: Path) -> None:
    _table(tmp_path, "drug_exposure", [_exposure("1"), _exposure("2", visit_occurrence_id="v2")])
    _table(
        tmp_path,
        "procedure_occurrence",
        [
            {"person_id": "1", "procedure_source_value": "80146002", "procedure_date": "2026-01-01",
             "visit_occurrence_id": "v1"},
            {"person_id": "1", "procedure_source_value": "73761001", "procedure_date": "2026-03-01",
             "visit_occurrence_id": "v9"},
        ],
    )  # fmt: skip
    groups = _exposures(tmp_path, o.procedure_ctes(o.readers(tmp_path)))
    rows = _rows(
        groups, "SELECT a.admin_id, p.pclass FROM admins a LEFT JOIN admin_procedure p USING (admin_id)"
    )
    assert sorted(rows) == [("1", "abdominal"), ("2", None)]


def test_visit_ctes_and_the_setting_they_give(tmp_path: Path) -> None:
    _table(tmp_path, "drug_exposure", [_exposure("1")])
    _table(
        tmp_path,
        "visit_occurrence",
        [{"visit_occurrence_id": "v1", "visit_concept_id": "9201", "care_site_id": "7"}],
    )
    _table(tmp_path, "care_site", [{"care_site_id": "7", "care_site_name": "Surgical ICU"}])
    groups = _exposures(tmp_path, o.visit_ctes(o.readers(tmp_path)))
    assert _rows(groups, "SELECT visit_occurrence_id, concept_id, site FROM visits") == [
        ("v1", "9201", "Surgical ICU")
    ]
    setting = o.setting_sql(None)
    rows = _rows(
        ["x AS (SELECT 1)"],
        f"""SELECT name, {setting} FROM (VALUES
              ('icu detail', true, '32037', ['Bay 3', NULL], '9201', [NULL, NULL]),
              ('ward detail', true, '581379', [NULL, NULL], '32037', [NULL, NULL]),
              ('icu named', false, NULL, [NULL, NULL], '9201', ['Surgical ICU', NULL]),
              ('emergency', false, NULL, [NULL, NULL], '9203', [NULL, NULL]),
              ('inpatient', false, NULL, [NULL, NULL], '9201', [NULL, NULL])
            ) t(name, has_detail, detail_concept, detail_names, visit_concept, visit_names) ORDER BY 1""",
    )
    assert rows == [
        ("emergency", "non-intensive-care"),
        ("icu detail", "intensive-care"),
        ("icu named", "intensive-care"),
        ("inpatient", "unknown"),
        ("ward detail", "non-intensive-care"),
    ]


def test_prior_course_ctes_an_observed_answer_and_an_earlier_iv_infusion(tmp_path: Path) -> None:
    _table(
        tmp_path,
        "drug_exposure",
        [
            _exposure("1", drug_exposure_start_datetime="2025-12-01 10:00:00", dose_unit_source_value="mg/h"),
            _exposure("2", route_source_value="oral"),
        ],
    )
    _table(
        tmp_path,
        "observation",
        [
            {
                "observation_event_id": "2",
                "observation_source_value": "prior IV ketamine",
                "value_as_string": "no",
            }
        ],
    )
    groups = _exposures(tmp_path, o.prior_course_ctes(o.readers(tmp_path)))
    assert _rows(groups, "SELECT patient, CAST(t AS VARCHAR) FROM first_course") == [
        ("1", "2025-12-01 10:00:00")
    ]
    assert _rows(groups, "SELECT admin_id, yes, no FROM observed_course") == [("2", False, True)]


def test_the_canonical_select_names_the_rows_problem(tmp_path: Path) -> None:
    _table(tmp_path, "drug_exposure", [_exposure("1"), _exposure("2", quantity="lots")])
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT admin_id, input_problem FROM ({o.omop_source(tmp_path, KB)}) ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert rows == [("1", None), ("2", "drug_exposure/2: quantity is not a number: lots")]
