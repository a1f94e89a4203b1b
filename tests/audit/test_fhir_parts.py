"""The FHIR reader's CTE groups (``fhir_ndjson.fhir_source``), each on a tiny export of a few resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from ketamine_cds._kb import load_knowledge
from ketamine_cds.audit import fhir_ndjson as f
from ketamine_cds.audit.reader_sql import knowledge_ctes

KB = load_knowledge()
SNOMED, LOINC = "http://snomed.info/sct", "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
IV, ORAL = (
    {"coding": [{"system": SNOMED, "code": "47625008"}]},
    {"coding": [{"system": SNOMED, "code": "26643006"}]},
)
KETAMINE = {"coding": [{"system": RXNORM, "code": "206967"}]}


def _admin(
    admin_id: str, patient: str = "p1", when: str = "2026-01-01T10:00:00Z", **extra: Any
) -> dict[str, Any]:
    resource = {
        "resourceType": "MedicationAdministration",
        "id": admin_id,
        "status": "completed",
        "medicationCodeableConcept": KETAMINE,
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "dosage": {"route": IV, "dose": {"value": 20, "unit": "mg", "code": "mg"}},
    }
    return resource | extra


def _export(folder: Path, *resources: dict[str, Any]) -> dict[str, str]:
    by_type: dict[str, list[str]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for kind, lines in by_type.items():
        (folder / f"{kind}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f.readers(folder)


def _administrations(r: dict[str, str], *more: str) -> list[str]:
    """The groups up to the doses (what every later group reads), then ``more``."""
    return [
        knowledge_ctes(KB),
        f.referenced_resources_ctes(r, None),
        f.drug_ctes(r, KB),
        f.dose_ctes(KB),
        *more,
    ]


def _rows(groups: list[str], select: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        with_groups = "WITH " + ",\n".join(groups) + "\n" if groups else ""
        return con.execute(with_groups + select).fetchall()
    finally:
        con.close()


def test_drug_ctes_keep_ketamine_and_what_cannot_be_told(tmp_path: Path) -> None:
    r = _export(
        tmp_path,
        _admin("a1"),
        _admin(
            "a2",
            medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "7052"}], "text": "morphine"},
        ),
        _admin("a3", medicationCodeableConcept=None, medicationReference={"reference": "Medication/gone"}),
        _admin("a4", medicationCodeableConcept={"text": "Ketamine 50 mg/mL injection"}),
    )
    groups = [knowledge_ctes(KB), f.referenced_resources_ctes(r, None), f.drug_ctes(r, KB)]
    rows = _rows(groups, "SELECT admin_id, unidentified FROM ketamine_admins ORDER BY 1")
    assert rows == [("a1", False), ("a3", True), ("a4", False)]


def test_dose_ctes_read_a_bolus_and_a_rate_per_hour(tmp_path: Path) -> None:
    ratio = {"numerator": {"value": 100, "code": "mg"}, "denominator": {"value": 60, "code": "min"}}
    r = _export(
        tmp_path,
        _admin("a1"),
        _admin("a2", dosage={"route": IV, "rateRatio": ratio}),
        _admin(
            "a3",
            dosage={"route": ORAL, "dose": {"value": 2, "unit": "mL"}},
            medicationCodeableConcept={"text": "ketamine 50 mg/mL oral solution"},
        ),
    )
    rows = _rows(
        _administrations(r),
        "SELECT admin_id, route, kind, dose_value, dose_unit, concentration_mg_per_ml FROM admins ORDER BY 1",
    )
    assert rows == [
        ("a1", "intravenous", "bolus", 20.0, "mg", None),
        ("a2", "intravenous", "infusion", 100.0, "mg/h", None),
        ("a3", "oral", None, 2.0, "mL", 50.0),
    ]


def _weight(obs_id: str, when: str, kg: float | None, patient: str = "p1") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
    }
    if kg is None:
        resource["dataAbsentReason"] = {"text": "not obtained"}
    else:
        resource["valueQuantity"] = {"value": kg, "unit": "kg", "code": "kg"}
    return resource


def test_weight_ctes_the_latest_weight_unless_the_cited_one_is_absent(tmp_path: Path) -> None:
    r = _export(
        tmp_path,
        _admin("a1"),
        _admin("a2", supportingInformation=[{"reference": "Observation/w3"}]),
        _admin("a3", when="2025-11-01T10:00:00Z"),
        _weight("w1", "2026-01-01T08:00:00Z", 70),
        _weight("w2", "2025-12-01T08:00:00Z", 80),
        _weight("w3", "2026-01-01T09:00:00Z", None),
    )
    rows = _rows(
        _administrations(r, f.weight_ctes(r)), "SELECT admin_id, weight.value FROM judged ORDER BY 1"
    )
    assert rows == [("a1", 70.0), ("a2", None), ("a3", None)]


def test_condition_ctes_those_in_effect_and_pregnancy(tmp_path: Path) -> None:
    def condition(cond_id: str, code: str, **extra: Any) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "id": cond_id,
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "onsetDateTime": "2025-01-01",
        } | extra

    pregnancy = {
        "resourceType": "Observation",
        "id": "preg",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "82810-3"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2025-12-31",
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "77386006"}]},
    }
    r = _export(
        tmp_path,
        _admin("a1"),
        condition("c1", "78275009"),  # sleep apnoea, in effect
        condition("c2", "69322001", abatementDateTime="2025-06-01"),  # psychosis, over
        condition("c3", "5602001", verificationStatus={"coding": [{"code": "refuted"}]}),  # refuted
        pregnancy,
    )
    groups = _administrations(r, f.weight_ctes(r), f.condition_ctes(r, KB))
    assert _rows(groups, "SELECT admin_id, conditions FROM admin_conditions") == [
        ("a1", "pregnancy;sleep-apnea")
    ]


def test_procedure_ctes_a_procedure_of_the_encounter_or_near_in_time(tmp_path: Path) -> None:
    def procedure(proc_id: str, code: str, when: str, patient: str = "p1", **extra: Any) -> dict[str, Any]:
        return {
            "resourceType": "Procedure",
            "id": proc_id,
            "status": "completed",
            "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "performedDateTime": when,
        } | extra

    r = _export(
        tmp_path,
        _admin("a1", context={"reference": "Encounter/e1"}),
        _admin("a2", patient="p2"),
        {"resourceType": "Encounter", "id": "e1", "status": "finished"},
        procedure("x1", "73761001", "2026-01-01T09:00:00Z", encounter={"reference": "Encounter/e1"}),  # mild
        procedure("x2", "80146002", "2026-01-01T12:00:00Z"),  # abdominal, 2 h away, no encounter
        procedure("x3", "80146002", "2026-01-02T16:00:00Z", patient="p2"),  # 30 h away
        procedure("x4", "55705006", "2026-01-01T10:00:00Z", status="not-done"),  # spine, not done
    )
    rows = _rows(
        _administrations(r, f.procedure_ctes(r)),
        "SELECT a.admin_id, p.pclass FROM admins a LEFT JOIN admin_procedure p USING (admin_id) ORDER BY 1",
    )
    assert rows == [("a1", "abdominal"), ("a2", None)]


def test_indication_ctes_a_reason_coded_or_named_in_words(tmp_path: Path) -> None:
    def request(req_id: str, reasons: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "resourceType": "MedicationRequest",
            "id": req_id,
            "status": "completed",
            "reasonCode": reasons,
        }

    r = _export(
        tmp_path,
        request("rq1", [{"text": "Procedural sedation"}]),
        request("rq2", [{"text": "crisis"}, {"coding": [{"system": SNOMED, "code": "30925003"}]}]),
    )
    groups = [knowledge_ctes(KB), f.referenced_resources_ctes(r, None), f.indication_ctes(r)]
    assert _rows(groups, "SELECT mr_id, use_id FROM coded_use ORDER BY 1") == [("rq2", "sickle-cell-pain")]
    assert _rows(groups, "SELECT mr_id, use_id FROM worded_use ORDER BY 1") == [
        ("rq1", "procedural-sedation")
    ]


def test_setting_ctes_the_encounters_location_at_the_time(tmp_path: Path) -> None:
    icu = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "ICU"}]}
    ward = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "HU"}]}
    r = _export(
        tmp_path,
        _admin("a1", context={"reference": "Encounter/e1"}),
        _admin("a2", context={"reference": "Encounter/e2"}),
        _admin("a3", context={"reference": "Encounter/e3"}),
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "location": [{"location": {"reference": "Location/icu"}, "status": "active"}],
        },
        {
            "resourceType": "Encounter",
            "id": "e2",
            "status": "finished",
            "location": [{"location": {"reference": "Location/ward"}, "status": "active"}],
        },
        {
            "resourceType": "Encounter",
            "id": "e3",
            "status": "cancelled",
            "location": [{"location": {"reference": "Location/icu"}, "status": "active"}],
        },
        {"resourceType": "Location", "id": "icu", "name": "Unit 4 ICU", "type": [icu]},
        {"resourceType": "Location", "id": "ward", "name": "Ward 7", "type": [ward]},
    )
    rows = _rows(
        _administrations(r, f.setting_ctes()),
        "SELECT admin_id, setting, location FROM admin_setting ORDER BY 1",
    )
    assert rows == [("a1", "intensive-care", "Unit 4 ICU"), ("a2", "non-intensive-care", "Ward 7")]


def test_prior_course_ctes_an_earlier_iv_infusion_and_the_cited_answer(tmp_path: Path) -> None:
    def statement(stmt_id: str, status: str, when: str) -> dict[str, Any]:
        return {
            "resourceType": "MedicationStatement",
            "id": stmt_id,
            "status": status,
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": KETAMINE,
            "effectiveDateTime": when,
            "dosage": [{"route": IV, "doseAndRate": [{"rateQuantity": {"value": 10, "unit": "mg/h"}}]}],
        }

    oral = {"route": ORAL, "dose": {"value": 50, "unit": "mg", "code": "mg"}}
    r = _export(
        tmp_path,
        _admin("a1", dosage=oral),
        _admin("a2", dosage=oral, supportingInformation=[{"reference": "MedicationStatement/s2"}]),
        statement("s1", "completed", "2025-12-01"),
        statement("s2", "not-taken", "2025-12-15"),
    )
    groups = _administrations(r, f.weight_ctes(r), f.prior_course_ctes(r, KB))
    assert _rows(groups, "SELECT patient, CAST(t AS VARCHAR) FROM first_course") == [
        ("p1", "2025-12-01 00:00:00")
    ]
    assert _rows(groups, "SELECT admin_id, yes, no FROM cited_course") == [("a2", False, True)]


def test_the_canonical_select_names_the_rows_problem(tmp_path: Path) -> None:
    _export(tmp_path, _admin("a1"), _admin("a2", status="not-done"), _admin("a3", effectiveDateTime="soon"))
    rows = _rows(
        [], f"SELECT admin_id, input_problem FROM ({f.fhir_source(tmp_path, KB)}) ORDER BY 1"
    )  # the whole reader: answer_cte and fhir_canonical_select over every group
    assert rows == [
        ("a1", None),
        ("a2", "MedicationAdministration/a2: status not-done, not given"),
        ("a3", "MedicationAdministration/a3: the time is not a FHIR dateTime: soon"),
    ]
