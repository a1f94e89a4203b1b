"""The FHIR Bulk Data and OMOP CDM forms: the same administrations give the same findings as the flat form, and
hand-made records check the reading rules (time, weight, conditions, units, bad rows)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ketamine_cds import load_knowledge
from ketamine_cds.audit.canonical import COLUMN_NAMES
from ketamine_cds.audit.decide import unit_rows
from ketamine_cds.audit.duck import AuditRun, run_duckdb
from ketamine_cds.audit.fhir_ndjson import _reader, fhir_source
from ketamine_cds.audit.flat import flat_source
from ketamine_cds.audit.omop import omop_source
from ketamine_cds.audit.run import canonical_parquet, detect_form
from ketamine_cds.audit.synth import write_all
from shared_data import EXTERNAL

KB = load_knowledge()
ROWS, SEED = 5_000, 11
SNOMED, ICD10CM, RXNORM, LOINC = (
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://loinc.org",
)


def _rows(source: str) -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        cursor = con.execute(f"SELECT * FROM ({source}) ORDER BY admin_id NULLS LAST, input_problem")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def _findings(run: AuditRun, admin_id: str = "admin_id") -> dict[str, tuple[Any, ...]]:
    """admin_id -> (verdict, statements, problem) of every finding written (``admin_id``: an SQL expression)."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT {admin_id}, verdict, statements, problem FROM read_parquet('{run.findings}')"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == run.rows
    found = {r[0]: (r[1], tuple(r[2] or ()), r[3]) for r in rows}
    assert len(found) == len(rows), "admin ids are unique"
    return found


# ----------------------------------------------------------------------------------------------------
# The same synthetic administrations in three forms


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_all(ROWS, tmp_path_factory.mktemp("synth"), seed=SEED)


@pytest.fixture(scope="module")
def canonical(forms: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each form's canonical rows as the audit reads them: FHIR and OMOP with opioid tolerance decided."""
    out = tmp_path_factory.mktemp("canonical")
    read = {form: canonical_parquet(forms[form], form, out / form).path for form in ("fhir", "omop")}
    return {
        "flat": flat_source(forms["flat"]),
        **{f: f"SELECT * FROM read_parquet('{p}')" for f, p in read.items()},
    }


@pytest.fixture(scope="module")
def audits(canonical: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, AuditRun]:
    out = tmp_path_factory.mktemp("audits")
    return {form: run_duckdb(source, out / form) for form, source in canonical.items()}


def test_every_form_is_detected(forms: dict[str, Path]) -> None:
    assert {form: detect_form(path) for form, path in forms.items()} == {
        "flat": "flat",
        "fhir": "fhir",
        "omop": "omop",
    }


def test_three_forms_give_identical_findings_for_every_administration(audits: dict[str, AuditRun]) -> None:
    flat = _findings(audits["flat"])
    fhir = _findings(audits["fhir"])
    omop = _findings(audits["omop"], admin_id="'A' || lpad(admin_id, 9, '0')")  # drug_exposure 42: A000000042
    assert len(flat) == ROWS
    assert fhir == flat
    assert omop == flat
    # the comparison means something: every verdict occurs, and some rows cannot be assessed
    verdicts = {v for v, _, _ in flat.values()}
    assert {
        "consider",
        "contraindicated",
        "dose-exceeds-limit",
        "needs-information",
        "out-of-scope",
    } <= verdicts
    assert 0 < sum(1 for _, _, problem in flat.values() if problem) < ROWS // 10


def test_fhir_form_reads_back_the_canonical_rows(canonical: dict[str, str]) -> None:
    """Column by column, not only the verdicts: the FHIR reader recovers each canonical value (opioid tolerance
    decided from the MedicationRequests included)."""
    flat = {r["admin_id"]: r for r in _rows(canonical["flat"])}
    fhir = _rows(canonical["fhir"])
    assert len(fhir) == len(flat) == ROWS
    # the synthetic prescriptions give every tolerance: the comparison means something
    assert {r["opioid_tolerance"] for r in flat.values()} == {"present", "absent", "not-recorded", "unknown"}
    for row in fhir:
        assert _normal(row) == _normal(flat[row["admin_id"]]), row["admin_id"]


def test_omop_form_reads_back_the_canonical_rows(canonical: dict[str, str]) -> None:
    """As for FHIR, with OMOP's own ids and two documented differences: a coded indication is a condition of the
    visit (so its concept is among the conditions), and an unknown dose unit gives no bolus/infusion kind."""
    flat = {int(r["admin_id"][1:]): r for r in _rows(canonical["flat"])}
    omop = _rows(canonical["omop"])
    assert len(omop) == len(flat) == ROWS
    use_concept = {u.id: u.concept for u in KB.uses.values()}
    for row in omop:
        expected = _normal(flat[int(row["admin_id"])])
        expected.update(admin_id=row["admin_id"], patient_id=str(int(expected["patient_id"][1:])))
        concept = use_concept.get(expected["indication"] or "")
        if concept:
            expected["conditions"] = ";".join(sorted({*expected["conditions"].split(";"), concept} - {""}))
        if row["kind"] is None and expected["kind"] is not None:
            assert row["route"] == "intravenous" and not _known_unit(row["dose_unit"])
            expected["kind"] = None
        assert _normal(row) == expected, row["admin_id"]


def _known_unit(text: str | None) -> bool:
    return bool(text) and unit_rows([text])[0].ok


def _normal(row: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical row as compared across forms: conditions as a sorted set, the weight in kg."""
    kg = {"kg": 1.0, "[lb_av]": 0.45359237, "lb": 0.45359237}
    out = {name: row[name] for name in COLUMN_NAMES}
    out["conditions"] = ";".join(sorted(c for c in str(row["conditions"] or "").split(";") if c))
    weight, unit = out.pop("weight_value"), out.pop("weight_unit")
    out["weight_kg"] = None if weight is None else weight * kg[unit]
    return out


def test_written_fhir_resources_are_valid_r4(forms: dict[str, Path]) -> None:
    from fhir.resources.R4B import get_fhir_model_class

    checked: dict[str, int] = {}
    for path in sorted(forms["fhir"].glob("*.ndjson")):
        with path.open() as handle:
            for _, line in zip(range(20), handle, strict=False):
                resource = json.loads(line)
                assert "null" not in line and "[]" not in line and "{}" not in line, line
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                checked[resource["resourceType"]] = checked.get(resource["resourceType"], 0) + 1
    assert set(checked) >= {
        "Patient",
        "Medication",
        "MedicationAdministration",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Condition",
        "Encounter",
        "Location",
        "Procedure",
    }


# ----------------------------------------------------------------------------------------------------
# Hand-made FHIR records


def _ndjson(folder: Path, resources: Iterable[Mapping[str, Any] | str]) -> None:
    """Resources into ``<Type>.ndjson`` files (a str is written as a line as it is)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for r in resources:
        kind = "MedicationAdministration" if isinstance(r, str) else r["resourceType"]
        lines.setdefault(kind, []).append(r if isinstance(r, str) else json.dumps(r))
    for kind, text in lines.items():
        (folder / f"{kind}.ndjson").write_text("\n".join(text) + "\n")


def _coded(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code, **({"display": display} if display else {})}
    return {"coding": [coding]}


def _quantity(value: Any, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit}


IV = {"route": _coded(SNOMED, "47625008", "Intravenous route")}
KETAMINE = {"medicationCodeableConcept": _coded(RXNORM, "6130", "ketamine")}


def _given(id_: str | None, patient: str, when: str, **more: Any) -> dict[str, Any]:
    resource = {"resourceType": "MedicationAdministration", "status": "completed", **KETAMINE, **more}
    resource.update(subject={"reference": f"Patient/{patient}"}, effectiveDateTime=when)
    if id_ is not None:
        resource["id"] = id_
    return resource


def _weight(id_: str, patient: str, when: str, kg: float, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": status,
        "code": _coded(LOINC, "29463-7", "Body weight"),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }


def _condition(id_: str, patient: str, code: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": id_,
        "code": code,
        "subject": {"reference": f"Patient/{patient}"},
        **more,
    }


def _status(system: str, code: str) -> dict[str, Any]:
    return _coded(f"http://terminology.hl7.org/CodeSystem/{system}", code)


def _fhir_record() -> list[Mapping[str, Any] | str]:
    clinical = "condition-clinical"
    return [
        {"resourceType": "Patient", "id": "P1"},
        {"resourceType": "Patient", "id": "P2"},
        # a1: ICU, weight before (70) and after (90, not used), conditions of every kind
        _given(
            "a1",
            "P1",
            "2025-03-01T10:00:00+01:00",
            context={"reference": "Encounter/E1"},
            request={"reference": "MedicationRequest/R1"},
            dosage={**IV, "dose": {**_quantity(20, "mg"), "code": "mg"}},
        ),
        {
            "resourceType": "MedicationRequest",
            "id": "R1",
            "status": "completed",
            "intent": "order",
            **KETAMINE,
            "subject": {"reference": "Patient/P1"},
            "reasonCode": [
                {"text": "something else"},
                _coded(SNOMED, "128200000", "Complex regional pain syndrome"),
            ],
        },
        {
            "resourceType": "Encounter",
            "id": "E1",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "location": [
                {
                    "location": {"reference": "Location/ward"},
                    "status": "completed",
                    "period": {"start": "2025-02-28T08:00:00Z", "end": "2025-03-01T08:00:00Z"},
                },
                {
                    "location": {"reference": "Location/icu", "display": "Surgical ICU"},
                    "status": "completed",
                    "period": {"start": "2025-03-01T08:00:00Z"},
                },
            ],
        },
        {
            "resourceType": "Location",
            "id": "icu",
            "name": "Surgical ICU",
            "type": [_coded("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "ICU")],
        },
        {
            "resourceType": "Location",
            "id": "ward",
            "name": "Ward 3",
            "type": [_coded("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "HU")],
        },
        _weight("w1", "P1", "2025-02-01T08:00:00Z", 70),
        _weight("w2", "P1", "2025-03-01T09:30:00Z", 90),  # 30 minutes after a1 (09:00 UTC)
        _weight("w3", "P1", "2025-02-20T08:00:00Z", 60, status="preliminary"),
        _condition(
            "c1",
            "P1",
            _coded(SNOMED, "69322001"),
            clinicalStatus=_status(clinical, "resolved"),
            abatementDateTime="2025-02-15",
        ),  # psychosis, over before a1
        _condition(
            "c2",
            "P1",
            _coded(ICD10CM, "G47.33"),
            clinicalStatus=_status(clinical, "active"),
            onsetDateTime="2024-01-01",
        ),  # sleep apnea
        _condition("c3", "P1", _coded(ICD10CM, "H40.11"), clinicalStatus=_status(clinical, "inactive")),
        _condition(
            "c4",
            "P1",
            _coded(ICD10CM, "Z33.1"),
            verificationStatus=_status("condition-ver-status", "refuted"),
        ),
        _condition(
            "c5",
            "P1",
            _coded(ICD10CM, "I50.9"),
            clinicalStatus=_status(clinical, "resolved"),
            onsetDateTime="2020-05-01",
            abatementDateTime="2025-06-01",
        ),  # heart failure, still then
        _condition("c6", "P1", _coded(ICD10CM, "F11.10"), onsetDateTime="2025-04-01"),  # after a1
        _condition("c7", "P1", _coded(ICD10CM, "Z79.891"), onsetDateTime="2025-03-01"),  # that day
        # a2: a unit nobody knows
        _given("a2", "P1", "2025-03-02T10:00:00Z", dosage={**IV, "rateQuantity": _quantity(5, "furlongs/h")}),
        # a3: no weight on record; an emergency encounter; a surgery in it
        _given(
            "a3",
            "P2",
            "2025-03-01T10:00:00Z",
            context={"reference": "Encounter/E2"},
            dosage={**IV, "dose": _quantity(20, "mg")},
        ),
        {
            "resourceType": "Encounter",
            "id": "E2",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
        },
        {
            "resourceType": "Procedure",
            "id": "s1",
            "status": "completed",
            "code": _coded(SNOMED, "80146002"),
            "subject": {"reference": "Patient/P2"},
            "encounter": {"reference": "Encounter/E2"},
            "performedDateTime": "2025-03-01T08:00:00Z",
        },
        # bad rows: not JSON, not given, medication not in the export, time and dose unreadable, no id
        '{"resourceType": "MedicationAdministration", "id": "broken", ',
        _given(
            "a5", "P2", "2025-03-01T11:00:00Z", status="not-done", dosage={**IV, "dose": _quantity(20, "mg")}
        ),
        {
            **_given("a7", "P2", "2025-03-01T12:00:00Z", dosage={**IV, "dose": _quantity(20, "mg")}),
            "medicationCodeableConcept": None,
            "medicationReference": {"reference": "Medication/gone"},
        },
        _given("a14", "P2", "yesterday", dosage={**IV, "dose": _quantity(20, "mg")}),
        _given("a15", "P2", "2025-03-01T13:00:00Z", dosage={**IV, "dose": _quantity("twenty", "mg")}),
        _given(None, "P2", "2025-03-01T14:00:00Z", dosage={**IV, "dose": _quantity(20, "mg")}),
        # not ketamine: not rows
        {
            **_given("m1", "P2", "2025-03-01T10:00:00Z", dosage={**IV, "dose": _quantity(4, "mg")}),
            "medicationCodeableConcept": _coded(RXNORM, "7052", "morphine"),
        },
        {
            **_given("e1", "P2", "2025-03-01T10:00:00Z"),
            "medicationCodeableConcept": {"text": "esketamine spray"},
        },
    ]


def _fhir_record_p3() -> list[Mapping[str, Any] | str]:
    """Rates, concentrations, words, and the prior IV course."""
    strength = {
        "numerator": {"value": 50, "unit": "mg", "code": "mg"},
        "denominator": {"value": 1, "unit": "mL", "code": "mL"},
    }
    medication = {
        "resourceType": "Medication",
        "code": _coded(RXNORM, "6130"),
        "ingredient": [{"itemCodeableConcept": _coded(RXNORM, "6130"), "strength": strength}],
    }
    return [
        {**medication, "id": "ket-50"},
        _weight("w4", "P3", "2025-01-01T08:00:00Z", 80),
        # a8: 100 mg per 60 min is 100 mg/h, an IV infusion (the course before a12 and a13)
        _given(
            "a8",
            "P3",
            "2025-03-01T10:00:00Z",
            dosage={
                **IV,
                "rateRatio": {
                    "numerator": _quantity(100, "mg"),
                    "denominator": {"value": 60, "unit": "min", "code": "min"},
                },
            },
        ),
        # a9: a contained Medication, the route in words
        {
            **_given(
                "a9",
                "P3",
                "2025-03-02T10:00:00Z",
                dosage={"route": {"text": "IV push"}, "dose": _quantity(0.5, "mL")},
            ),
            "medicationCodeableConcept": None,
            "medicationReference": {"reference": "#m"},
            "contained": [{**medication, "id": "m"}],
        },
        # a10: a referenced Medication known only by its code
        {
            **_given("a10", "P3", "2025-03-03T10:00:00Z", dosage={**IV, "dose": _quantity(1, "mL")}),
            "medicationCodeableConcept": None,
            "medicationReference": {"reference": "Medication/ket-50"},
        },
        # a12: oral, the route on the request, a statement saying there was no prior course
        _given(
            "a12",
            "P3",
            "2025-03-05T10:00:00Z",
            request={"reference": "MedicationRequest/R12"},
            supportingInformation=[{"reference": "MedicationStatement/S12"}],
        ),
        {
            "resourceType": "MedicationRequest",
            "id": "R12",
            "status": "completed",
            "intent": "order",
            **KETAMINE,
            "subject": {"reference": "Patient/P3"},
            "reasonCode": [{"text": "Chronic pain"}],
            "dosageInstruction": [{"route": _coded(SNOMED, "26643006", "Oral route")}],
        },
        {
            "resourceType": "MedicationStatement",
            "id": "S12",
            "status": "not-taken",
            **KETAMINE,
            "subject": {"reference": "Patient/P3"},
            "dosage": [IV],
        },
        # a13: intranasal, nothing cited: the record shows the IV infusion a8 before it
        _given("a13", "P3", "2025-03-06T10:00:00Z", request={"reference": "MedicationRequest/R13"}),
        {
            "resourceType": "MedicationRequest",
            "id": "R13",
            "status": "completed",
            "intent": "order",
            **KETAMINE,
            "subject": {"reference": "Patient/P3"},
            "dosageInstruction": [{"route": _coded(SNOMED, "46713006", "Nasal route")}],
        },
    ]


def _strip_nulls(resources: list[Mapping[str, Any] | str]) -> list[Mapping[str, Any] | str]:
    return [r if isinstance(r, str) else {k: v for k, v in r.items() if v is not None} for r in resources]


@pytest.fixture(scope="module")
def fhir_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fhir-cases")
    _ndjson(folder, _strip_nulls(_fhir_record() + _fhir_record_p3()))
    return folder


def test_fhir_reading_rules(fhir_folder: Path) -> None:
    rows = {r["admin_id"]: r for r in _rows(fhir_source(fhir_folder))}
    a1 = rows["a1"]
    assert a1["administered_at"] == dt.datetime(2025, 3, 1, 9, 0)  # +01:00 read as UTC
    assert (a1["weight_value"], a1["weight_unit"]) == (70, "kg")  # 90 kg was weighed after; 60 kg preliminary
    # resolved before, inactive, refuted and later conditions do not count; one resolved only later does
    assert a1["conditions"] == "cardiovascular-disease;opioid-dependence;sleep-apnea"
    assert (a1["setting"], a1["location"]) == ("intensive-care", "Surgical ICU")  # the location at the time
    assert a1["indication"] == "crps" and a1["procedure_class"] is None
    assert (a1["route"], a1["kind"], a1["dose_value"], a1["dose_unit"]) == ("intravenous", "bolus", 20, "mg")
    a3 = rows["a3"]
    assert a3["weight_value"] is None  # no weight on record: not guessed
    assert (a3["setting"], a3["indication"], a3["procedure_class"]) == (
        "non-intensive-care",
        "perioperative",
        "abdominal",
    )
    assert (rows["a8"]["kind"], rows["a8"]["dose_value"], rows["a8"]["dose_unit"]) == (
        "infusion",
        100,
        "mg/h",
    )
    assert (rows["a9"]["route"], rows["a9"]["concentration_mg_per_ml"]) == ("intravenous", 50)
    assert rows["a10"]["concentration_mg_per_ml"] == 50
    assert (rows["a12"]["route"], rows["a12"]["prior_iv_ketamine"], rows["a12"]["indication"]) == (
        "oral",
        False,
        "chronic-pain",
    )
    assert (rows["a13"]["route"], rows["a13"]["prior_iv_ketamine"]) == ("intranasal", True)
    assert "m1" not in rows and "e1" not in rows  # morphine, esketamine
    problems = {k: r["input_problem"] for k, r in rows.items() if r["input_problem"]}
    assert problems["a5"] == "MedicationAdministration/a5: status not-done, not given"
    assert "Medication/gone is not in the export" in problems["a7"]
    assert "not a FHIR dateTime: yesterday" in problems["a14"]
    assert "the dose is not a number" in problems["a15"]
    unnamed = sorted(r["input_problem"] for r in _rows(fhir_source(fhir_folder)) if r["admin_id"] is None)
    assert unnamed == [
        "a MedicationAdministration in MedicationAdministration.ndjson has no id",
        "a line of MedicationAdministration.ndjson is not a FHIR resource (not valid JSON, or no resourceType)",
    ]


def test_fhir_findings_account_for_every_row(fhir_folder: Path, tmp_path: Path) -> None:
    source = fhir_source(fhir_folder)
    lines = sum(1 for _ in (fhir_folder / "MedicationAdministration.ndjson").open())
    run = run_duckdb(source, tmp_path / "out")
    # every administration line is a row, except the two that are not ketamine
    assert run.rows == len(_rows(source)) == lines - 2
    con = duckdb.connect()
    try:
        found = {
            r[0]: r[1:]
            for r in con.execute(
                f"SELECT coalesce(admin_id, problem), verdict, problem, weight_kg FROM read_parquet('{run.findings}')"
            ).fetchall()
        }
        bad = con.execute(
            f"SELECT count(*) FROM read_parquet('{run.findings}') WHERE problem IS NOT NULL"
        ).fetchone()
    finally:
        con.close()
    assert found["a1"][0] is not None and found["a1"][1] is None
    assert "furlongs" in found["a2"][1]  # an unknown unit: a bad row, with its reason
    assert found["a3"][0] == "needs-information" and found["a3"][2] is None  # no weight: reported
    assert bad == (7,)  # a2; a5, a7, a14, a15 and the one without an id; the line that is not JSON


def test_fhir_without_location_or_other_files(fhir_folder: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(fhir_folder, partial)
    (partial / "Location.ndjson").unlink()
    rows = {r["admin_id"]: r for r in _rows(fhir_source(partial))}
    assert (rows["a1"]["setting"], rows["a1"]["location"]) == ("unknown", "Surgical ICU")  # display only
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(fhir_folder / "MedicationAdministration.ndjson", only / "MedicationAdministration.000.ndjson")
    bare = {r["admin_id"]: r for r in _rows(fhir_source(only))}
    assert len(bare) == len(rows)
    assert (bare["a1"]["weight_value"], bare["a1"]["setting"], bare["a1"]["conditions"]) == (
        None,
        "unknown",
        None,
    )


# ----------------------------------------------------------------------------------------------------
# A real Bulk Data export (Synthea, 10 patients) with a ketamine bolus at the start of every encounter

SYNTHEA = EXTERNAL / "synthea-bulk-10-patients"


def _utc(written: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(written)
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _active_at(condition: Mapping[str, Any], when: dt.datetime) -> bool:
    """The reading rule of ``fhir_ndjson`` for a Condition, restated in Python."""

    def codes(key: str) -> set[str]:
        return {c.get("code") for c in condition.get(key, {}).get("coding", [])}

    if codes("verificationStatus") & {"refuted", "entered-in-error"}:
        return False
    onset = condition.get("onsetDateTime") or condition.get("onsetPeriod", {}).get("start")
    onset = onset or condition.get("recordedDate")
    if onset and _utc(onset) > when:
        return False
    abated = condition.get("abatementDateTime") or condition.get("abatementPeriod", {}).get("end")
    if abated:
        end = _utc(abated) + (dt.timedelta(days=1) if len(abated) == 10 else dt.timedelta())
        return end > when
    return not codes("clinicalStatus") & {"resolved", "inactive", "remission"}


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle]


def _concepts(concept: Mapping[str, Any], prefix: str = "") -> set[str]:
    return {
        c
        for coding in concept.get("coding", [])
        for c in KB.value_sets.concepts(coding.get("system"), coding.get("code", ""))
        if c.startswith(prefix) and (prefix or c in KB.concepts)
    }


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/external-test-data is not beside the repository")
def test_a_real_bulk_export(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    shutil.copytree(SYNTHEA, folder)
    for path in sorted(
        folder.glob("*.ndjson")
    ):  # every line of every file the reader reads is read, none lost
        kind = path.name.split(".")[0]
        if kind in ("Condition", "Encounter", "Procedure", "MedicationRequest"):
            con = duckdb.connect()
            (count,) = con.execute(f"SELECT count(id) FROM ({_reader(folder, kind)})").fetchone() or (0,)
            con.close()
            assert count == len(_read(path)), path.name
    encounters = _read(folder / "Encounter.000.ndjson")
    _ndjson(
        folder,
        [
            {
                "resourceType": "MedicationAdministration",
                "id": f"k-{e['id']}",
                "status": "completed",
                **KETAMINE,
                "subject": e["subject"],
                "context": {"reference": f"Encounter/{e['id']}"},
                "effectiveDateTime": e["period"]["start"],
                "dosage": {**IV, "dose": _quantity(20, "mg")},
            }
            for e in encounters
        ],
    )
    conditions = _read(folder / "Condition.000.ndjson")
    procedures = _read(folder / "Procedure.000.ndjson")
    rows = {r["admin_id"]: r for r in _rows(fhir_source(folder))}
    assert len(rows) == len(encounters)
    for e in encounters:
        when, patient = _utc(e["period"]["start"]), e["subject"]["reference"].split("/")[1]
        classes = {
            p.split(":")[1]
            for proc in procedures
            if proc["encounter"]["reference"] == f"Encounter/{e['id']}"
            for p in _concepts(proc["code"], "procedure:")
        }
        expected = {
            "patient_id": patient,
            "administered_at": when,
            "setting": "non-intensive-care"
            if e["class"]["code"] in ("AMB", "EMER", "VR", "HH")
            else "unknown",
            "location": min((x["location"]["display"] for x in e.get("location", [])), default=None),
            "conditions": ";".join(
                sorted(
                    {
                        c
                        for cond in conditions
                        if cond["subject"]["reference"] == f"Patient/{patient}" and _active_at(cond, when)
                        for c in _concepts(cond["code"])
                    }
                )
            )
            or None,
            "procedure_class": min(classes) if classes else None,
            "indication": "perioperative" if classes else None,
            "weight_value": None,
            "input_problem": None,
        }
        row = rows[f"k-{e['id']}"]
        assert {k: row[k] for k in expected} == expected, e["id"]
    assert any(r["conditions"] for r in rows.values()) and any(r["procedure_class"] for r in rows.values())


# ----------------------------------------------------------------------------------------------------
# Hand-made OMOP tables (CSV, upper-case names, no concept table)


def _csv(path: Path, header: str, *rows: str) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.fixture(scope="module")
def omop_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("omop-cases")
    _csv(folder / "PERSON.csv", "person_id,year_of_birth", "1,1970", "2,1980", "3,1990")
    _csv(
        folder / "DRUG_EXPOSURE.csv",
        "DRUG_EXPOSURE_ID,PERSON_ID,DRUG_CONCEPT_ID,DRUG_SOURCE_VALUE,DRUG_EXPOSURE_START_DATE,"
        "DRUG_EXPOSURE_START_DATETIME,QUANTITY,DOSE_UNIT_SOURCE_VALUE,ROUTE_SOURCE_VALUE,VISIT_OCCURRENCE_ID,"
        "VISIT_DETAIL_ID",
        "1,1,0,ketamine 50 mg/mL,2025-03-01,2025-03-01 10:00:00,20,mg,IV,10,",
        "2,1,0,Ketamine,2025-03-02,2025-03-02 10:00:00,5,furlongs/h,IV,,",
        "3,2,0,KETALAR,2025-03-01,2025-03-01 10:00:00,20,mg,intravenous,20,",
        "4,2,0,ketamine,2025-03-01,2025-03-01 11:00:00,abc,mg,IV,20,",
        "5,2,0,morphine sulfate,2025-03-01,2025-03-01 10:00:00,4,mg,IV,20,",
        "6,3,0,ketamine oral solution,2025-03-05,,,,PO,,",
        "7,3,0,ketamine,2025-03-06,2025-03-06 10:00:00,0.4,mL,IV,30,",
        "8,1,0,ketamine,2025-03-03,2025-03-03 10:00:00,1,mg/kg/h,IV,11,110",
        "9,3,0,esketamine,2025-03-01,2025-03-01 10:00:00,28,mg,nasal,,",
    )
    _csv(
        folder / "MEASUREMENT.csv",
        "measurement_id,person_id,measurement_concept_id,measurement_source_value,measurement_datetime,"
        "value_as_number,unit_source_value,unit_concept_id,visit_occurrence_id",
        "1,1,3025315,,2025-02-01 08:00:00,70,kg,9529,1",
        "2,1,0,29463-7,2025-03-01 12:00:00,90,kg,9529,10",  # after exposure 1, in its visit
        "3,3,0,29463-7,2025-01-01 08:00:00,80,,9529,",  # unit only as a concept id
        "4,3,3025315,,2025-03-06 09:00:00,,,,30",  # visit 30: not weighed
    )
    _csv(
        folder / "CONDITION_OCCURRENCE.csv",
        "person_id,condition_source_value,condition_start_datetime,condition_end_datetime,condition_end_date,"
        "visit_occurrence_id",
        "1,F20.9,2024-01-01 00:00:00,2025-02-15 00:00:00,,",  # ended before
        "1,G4733,2024-01-01 00:00:00,,,",  # sleep apnea without the dot
        "1,SNOMED:84114007,2020-01-01 00:00:00,2025-06-01 00:00:00,,",  # heart failure, ended later
        "1,F11.10,2025-04-01 00:00:00,,,",  # later
        "1,H40.11,2024-01-01 00:00:00,,2025-03-01,",  # ends with that day: still on at 10:00
        "1,ICD10CM:G90.5,2025-03-01 09:00:00,2025-03-01 11:00:00,,10",  # CRPS, the visit's diagnosis
    )
    _csv(
        folder / "VISIT_OCCURRENCE.csv",
        "visit_occurrence_id,person_id,visit_concept_id",
        "10,1,9201",
        "11,1,9201",
        "20,2,9203",
        "30,3,9201",
    )
    _csv(
        folder / "VISIT_DETAIL.csv",
        "visit_detail_id,person_id,visit_detail_concept_id,care_site_id",
        "110,1,32037,5",
    )
    _csv(folder / "CARE_SITE.csv", "care_site_id,care_site_name", "5,Surgical ICU")
    _csv(
        folder / "PROCEDURE_OCCURRENCE.csv",
        "person_id,procedure_source_value,procedure_datetime,visit_occurrence_id",
        "2,80146002,2025-03-01 08:00:00,20",
    )
    _csv(
        folder / "OBSERVATION.csv",
        "observation_event_id,observation_source_value,value_as_string",
        "6,indication,chronic pain",
    )
    return folder


def test_omop_reading_rules(omop_folder: Path) -> None:
    assert detect_form(omop_folder) == "omop"
    rows = {r["admin_id"]: r for r in _rows(omop_source(omop_folder))}
    assert set(rows) == {"1", "2", "3", "4", "6", "7", "8"}  # not morphine, not esketamine
    one = rows["1"]
    assert (one["weight_value"], one["weight_unit"]) == (
        70,
        "kg",
    )  # 90 kg was weighed after, in the same visit
    assert one["conditions"] == "cardiovascular-disease;crps;intraocular-pressure;sleep-apnea"
    assert (one["indication"], one["setting"], one["kind"]) == ("crps", "unknown", "bolus")
    assert one["concentration_mg_per_ml"] is None  # a mass dose needs none
    three = rows["3"]
    assert three["weight_value"] is None  # no weight on record: not guessed
    assert (three["setting"], three["indication"], three["procedure_class"]) == (
        "non-intensive-care",
        "perioperative",
        "abdominal",
    )
    six = rows["6"]
    # no IV course in the data: not found, so unknown (not ruled out), as the FHIR reader of assess says
    assert (six["administered_at"], six["route"], six["prior_iv_ketamine"], six["indication"]) == (
        dt.datetime(2025, 3, 5),
        "oral",
        None,
        "chronic-pain",
    )
    assert rows["7"]["weight_value"] is None  # the visit says not weighed: the older 80 kg is not used
    assert rows["7"]["concentration_mg_per_ml"] is None  # a volume without a strength in the name
    eight = rows["8"]
    assert (eight["setting"], eight["location"], eight["kind"], eight["weight_value"]) == (
        "intensive-care",
        "Surgical ICU",
        "infusion",
        90,  # the latest by then, from another visit
    )
    assert rows["4"]["input_problem"] == "drug_exposure/4: quantity is not a number: abc"


def test_omop_findings_account_for_every_row(omop_folder: Path, tmp_path: Path) -> None:
    source = omop_source(omop_folder)
    run = run_duckdb(source, tmp_path / "out")
    assert run.rows == len(_rows(source)) == 7
    con = duckdb.connect()
    try:
        found = {
            r[0]: r[1:]
            for r in con.execute(
                f"SELECT admin_id, verdict, problem FROM read_parquet('{run.findings}')"
            ).fetchall()
        }
    finally:
        con.close()
    assert "furlongs" in found["2"][1]
    assert found["3"] == ("needs-information", None)
    assert found["4"][0] is None and "abc" in found["4"][1]
    assert found["7"][0] == "needs-information"  # no weight, no concentration
    assert sum(1 for _, problem in found.values() if problem) == 2


def test_omop_parquet_with_a_person_weighed_in_another_unit(tmp_path: Path) -> None:
    """Parquet tables (typed columns), the weight unit given only as a concept id (9529 kilogram)."""
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT 1::BIGINT AS drug_exposure_id, 3::BIGINT AS person_id, 'ketamine' AS drug_source_value, "
            f"TIMESTAMP '2025-03-01 10:00:00' AS drug_exposure_start_datetime, 20.0 AS quantity, "
            f"'mg' AS dose_unit_source_value, 'IV' AS route_source_value) TO '{tmp_path / 'drug_exposure.parquet'}'"
        )
        con.execute(
            f"COPY (SELECT 3::BIGINT AS person_id, 3025315 AS measurement_concept_id, "
            f"TIMESTAMP '2025-01-01 08:00:00' AS measurement_datetime, 80.0 AS value_as_number, "
            f"9529 AS unit_concept_id) TO '{tmp_path / 'measurement.parquet'}'"
        )
        con.execute(f"COPY (SELECT 3::BIGINT AS person_id) TO '{tmp_path / 'person.parquet'}'")
    finally:
        con.close()
    assert detect_form(tmp_path) == "omop"
    (row,) = _rows(omop_source(tmp_path))
    assert (row["weight_value"], row["weight_unit"], row["setting"], row["input_problem"]) == (
        80,
        "kg",
        "unknown",
        None,
    )


def test_an_administration_repeated_across_files_counts_once(tmp_path: Path) -> None:
    given = _given("R2", "p1", "2025-05-01T08:00:00Z", dosage={**IV, "dose": _quantity(20, "mg")})
    _ndjson(tmp_path, [given])
    (tmp_path / "MedicationAdministration.001.ndjson").write_text(json.dumps(given) + "\n")
    unnamed = {k: v for k, v in given.items() if k != "id"}
    with (tmp_path / "MedicationAdministration.001.ndjson").open("a") as handle:
        handle.write(json.dumps(unnamed) + "\n" + json.dumps(unnamed) + "\n")  # no id: each a bad row
    rows = _rows(fhir_source(tmp_path))
    assert [r["admin_id"] for r in rows] == ["R2", None, None]


@pytest.mark.parametrize(
    ("status", "setting"),
    [
        ("finished", "intensive-care"),  # an exported stay that took place: the location at the time counts
        ("in-progress", "intensive-care"),
        ("cancelled", "unknown"),  # an Encounter that did not take place says nothing (revision 2)
        ("planned", "unknown"),
        ("entered-in-error", "unknown"),
    ],
)
def test_fhir_setting_comes_only_from_an_encounter_that_took_place(
    status: str, setting: str, tmp_path: Path
) -> None:
    icu = {
        "resourceType": "Location",
        "id": "icu",
        "name": "MICU",
        "type": [_coded("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "ICU")],
    }
    stay = {
        "resourceType": "Encounter",
        "id": "E9",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "location": [
            {"location": {"reference": "Location/icu"}, "period": {"start": "2025-01-01T00:00:00Z"}}
        ],
    }
    given = _given(
        "g9",
        "P9",
        "2025-01-02T10:00:00Z",
        context={"reference": "Encounter/E9"},
        dosage={**IV, "rateQuantity": {**_quantity(5, "mg/kg/h"), "code": "mg/kg/h"}},
    )
    _ndjson(tmp_path / "fhir", [{"resourceType": "Patient", "id": "P9"}, icu, stay, given])
    [row] = _rows(fhir_source(tmp_path / "fhir"))
    assert row["setting"] == setting
