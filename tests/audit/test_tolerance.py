"""Opioid tolerance in the audit: decided once per patient and day with the engine's rule, from FHIR and OMOP
prescriptions, and the same answer ``assess`` gives on the same prescriptions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketamine_cds import Coded, OpioidUse, assess, load_knowledge
from ketamine_cds._opioids import NOT_READABLE, TAKEN_AS_NEEDED
from ketamine_cds.adapters.fhir import facts_from_bundle
from ketamine_cds.audit.canonical import COLUMN_NAMES, NOT_IN_INPUT, facts_from_row
from ketamine_cds.audit.duck import run_duckdb
from ketamine_cds.audit.fhir_ndjson import NO_PRESCRIPTION_FILES
from ketamine_cds.audit.flat import flat_source
from ketamine_cds.audit.run import canonical_parquet
from ketamine_cds.audit.tolerance import END_NOT_RECORDED, Prescription, decide_day, with_tolerance
from shared_data import EXTERNAL

KB = load_knowledge()
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
DAY = dt.date(2025, 6, 1)


def _rows(source: str) -> dict[str, dict[str, Any]]:
    con = duckdb.connect()
    try:
        cursor = con.execute(f"SELECT * FROM ({source})")
        names = [d[0] for d in cursor.description]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cursor.fetchall()}
    finally:
        con.close()


# ----------------------------------------------------------------------------------------------------
# The audit's answer is assess's answer on the same prescriptions

INGREDIENTS = st.sampled_from(["oxycodone", "morphine", "hydromorphone", "methadone", "tramadol", "fentanyl"])
AMOUNTS = st.sampled_from(
    [None, "5", "8", "12.76", "12.77", "20", "24.99", "25", "29.5", "30", "59", "60", "300"]
)
USES = st.builds(
    lambda ingredient, amount, start, length, as_needed: OpioidUse(
        ingredient,
        None if as_needed or amount is None else Fraction(Decimal(amount)),
        None if start is None else DAY + dt.timedelta(days=start),
        None if start is None or length is None else DAY + dt.timedelta(days=start + length),
        Coded(ingredient),
        as_needed,
    ),
    INGREDIENTS,
    AMOUNTS,
    st.one_of(st.none(), st.integers(-60, 3)),
    st.one_of(st.none(), st.integers(0, 90)),
    st.booleans(),
)
PATIENTS = st.dictionaries(st.sampled_from(["P1", "P2", "P3"]), st.lists(USES, max_size=3), max_size=3)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(PATIENTS)
def test_the_audit_decides_tolerance_as_assess_does(
    tmp_path: Path, patients: dict[str, list[OpioidUse]]
) -> None:
    """Perioperative and sickle cell administrations of three patients on a few days, one of them opioid
    dependent: the audit (tolerance decided once per patient and day, then the decision classes) gives each the
    verdict, statements and tolerance ``assess`` gives on the facts with the patient's prescriptions."""
    con = duckdb.connect()
    table = tmp_path / f"t{abs(hash(repr(patients))) % 10**9}.parquet"
    try:
        rows = []
        for k, (patient, offset, use, conditions) in enumerate(
            (p, o, u, c)
            for p in ("P1", "P2", "P3")
            for o in (-30, 0, 5, 40)
            for u in ("perioperative", "sickle-cell-pain")
            for c in (("opioid-dependence;",) if p == "P3" else ("",))
        ):
            when = dt.datetime.combine(DAY + dt.timedelta(days=offset), dt.time(10))
            rows.append((f"A{k:03}", patient, when, use, conditions))
        con.execute(
            "CREATE TABLE administrations AS SELECT admin_id, patient_id, administered_at, 'intravenous' AS route, "
            "'bolus' AS kind, 0.3 AS dose_value, 'mg/kg' AS dose_unit, CAST(NULL AS DOUBLE) AS concentration_mg_per_ml, "
            "70.0 AS weight_value, 'kg' AS weight_unit, CAST(NULL AS VARCHAR) AS weight_problem, "
            "'non-intensive-care' AS setting, 'Ward' AS location, "
            "indication, CASE WHEN indication = 'perioperative' THEN 'mild' END AS procedure_class, conditions, "
            "CAST(NULL AS BOOLEAN) AS prior_iv_ketamine, false AS pca_sole_agent, "
            "CAST(NULL AS VARCHAR) AS opioid_tolerance, CAST(NULL AS VARCHAR) AS opioid_unknown_reason, "
            "CAST(NULL AS VARCHAR) AS opioid_basis, CAST(NULL AS VARCHAR) AS input_problem "
            "FROM (VALUES "
            + ", ".join(f"('{a}', '{p}', TIMESTAMP '{w}', '{u}', '{c}')" for a, p, w, u, c in rows)
            + ") t(admin_id, patient_id, administered_at, indication, conditions)"
        )
        prescriptions = {p: [Prescription(u) for u in uses] for p, uses in patients.items()}
        select, staged = with_tolerance(con, "administrations", prescriptions, KB)
        con.execute(f"COPY ({select}) TO '{table}' (FORMAT parquet)")
    finally:
        con.close()
    assert staged.moments <= len({(p, o) for p in patients for o in (-30, 0, 5, 40)})
    run = run_duckdb(f"SELECT * FROM read_parquet('{table}')", tmp_path / table.stem)
    canonical = _rows(f"SELECT * FROM read_parquet('{table}')")
    for admin_id, verdict, statements, tolerance in (
        duckdb.connect()
        .execute(
            f"SELECT admin_id, verdict, statements, opioid_tolerance FROM read_parquet('{run.findings}')"
        )
        .fetchall()
    ):
        row = canonical[admin_id]
        facts = dataclasses.replace(
            facts_from_row(row, KB), opioid_tolerance=None, opioids=tuple(patients.get(row["patient_id"], ()))
        )
        live = assess(facts, KB)
        assert (verdict, list(statements), tolerance) == (
            live.verdict.value,
            list(live.statement_ids),
            live.opioid.tolerant.value,
        ), (admin_id, patients.get(row["patient_id"]))


def test_a_past_prescription_without_an_end_is_decided_with_and_without_it() -> None:
    def use(amount: int, start: int = -60, end: int | None = None) -> OpioidUse:
        ending = None if end is None else DAY + dt.timedelta(days=end)
        return OpioidUse(
            "oxycodone", Fraction(amount), DAY + dt.timedelta(days=start), ending, Coded("oxycodone")
        )

    tolerant, known = Prescription(use(40), end_known=False), Prescription(use(40, end=10))
    assert decide_day([tolerant], DAY, KB).unknown_because == END_NOT_RECORDED  # tolerant if it was, else not
    assert decide_day([tolerant, known], DAY, KB).state.value == "present"  # tolerant either way
    small = Prescription(use(10), end_known=False)
    assert (
        decide_day([small], DAY, KB).state.value == "unknown"
    )  # absent if it was taken, not recorded if not
    assert decide_day([small, Prescription(use(15, end=10))], DAY, KB).state.value == "absent"  # either way
    later = Prescription(use(40, start=5), end_known=False)
    assert decide_day([later], DAY, KB).state.value == "not-recorded"  # it had not begun


# ----------------------------------------------------------------------------------------------------
# FHIR: the prescriptions of an export


def _request(id_: str, text: str, tablets: int, per_day: int, start: str, **more: Any) -> dict[str, Any]:
    dosage: dict[str, Any] = {
        "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": tablets, "unit": "tablet"}}],
    }
    dosage.update(more.pop("dosage", {}))
    return {
        "resourceType": "MedicationRequest",
        "id": id_,
        "status": "completed",
        "intent": "order",
        "medicationCodeableConcept": {"text": text},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": start,
        "dosageInstruction": [dosage],
        **more,
    }


def _given(id_: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": id_,
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6130", "display": "ketamine"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when,
        "dosage": {
            "route": {"coding": [{"system": SNOMED, "code": "47625008"}]},
            "dose": {"value": 20, "unit": "mg"},
        },
    }


def _audit_fhir(folder: Path, resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    export = folder / "export"
    export.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for r in resources:
        lines.setdefault(r["resourceType"], []).append(json.dumps(r))
    for kind, text in lines.items():
        (export / f"{kind}.ndjson").write_text("\n".join(text) + "\n")
    canonical = canonical_parquet(export, "fhir", folder / "out")
    return _rows(f"SELECT * FROM read_parquet('{canonical.path}')")


def test_fhir_prescriptions_in_history(tmp_path: Path) -> None:
    supplied = {
        "dispenseRequest": {
            "expectedSupplyDuration": {
                "value": 30,
                "unit": "days",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            },
            "numberOfRepeatsAllowed": 1,
        }
    }
    rows = _audit_fhir(
        tmp_path,
        [
            {"resourceType": "Patient", "id": "p1"},
            # 30 mg/day of oxycodone, supplied for 30 days twice from 2025-01-01: through 2025-03-01
            _request("r1", "oxycodone hydrochloride 5 MG Oral Tablet", 2, 3, "2025-01-01", **supplied),
            # stopped since, no end recorded: 2025-06 is decided with and without it
            _request("r2", "morphine sulfate 30 MG Oral Tablet", 1, 2, "2025-05-01", status="stopped"),
            # never taken
            _request(
                "r3", "hydromorphone hydrochloride 4 MG Oral Tablet", 2, 4, "2025-01-01", status="cancelled"
            ),
            # as needed, in force now
            _request(
                "r4",
                "tramadol hydrochloride 50 MG Oral Tablet",
                1,
                4,
                "2025-09-01",
                status="active",
                dosage={"asNeededBoolean": True},
            ),
            _given("g1", "2025-02-15T10:00:00Z"),  # oxycodone for 45 days: tolerant
            _given("g2", "2025-03-15T10:00:00Z"),  # its supply ran out: no current prescription
            _given("g3", "2025-06-15T10:00:00Z"),  # morphine 60 mg/day if still taken
            _given("g4", "2025-04-15T10:00:00Z"),  # before the morphine: nothing
            _given("g5", "2025-09-20T10:00:00Z"),  # tramadol as needed (and the morphine, perhaps)
        ],
    )
    tolerance = {k: (r["opioid_tolerance"], r["opioid_unknown_reason"]) for k, r in rows.items()}
    assert tolerance == {
        "g1": ("present", None),
        "g2": ("not-recorded", None),
        "g3": ("unknown", END_NOT_RECORDED),
        "g4": ("not-recorded", None),
        "g5": ("unknown", END_NOT_RECORDED),
    }
    assert rows["g1"]["opioid_basis"].startswith("oxycodone 30 mg/day for 45 days")
    assert "morphine sulfate 30 MG Oral Tablet" in rows["g3"]["opioid_basis"]


def test_fhir_tolerance_unknown_without_prescription_files_and_with_an_unreadable_one(tmp_path: Path) -> None:
    rows = _audit_fhir(
        tmp_path / "none", [{"resourceType": "Patient", "id": "p1"}, _given("g1", "2025-02-15T10:00:00Z")]
    )
    assert (rows["g1"]["opioid_tolerance"], rows["g1"]["opioid_unknown_reason"]) == (
        "unknown",
        NO_PRESCRIPTION_FILES,
    )
    rows = _audit_fhir(
        tmp_path / "bad",
        [
            {"resourceType": "Patient", "id": "p1"},
            _request("r1", "oxycodone hydrochloride 5 MG Oral Tablet", 2, 3, "early 2025", status="active"),
            _request(
                "r2",
                "oxycodone hydrochloride 5 MG Oral Tablet",
                1,
                1,
                "2025-01-01",
                status="active",
                dosage={"asNeededBoolean": True},
            ),
            _given("g1", "2025-02-15T10:00:00Z"),
        ],
    )
    assert rows["g1"]["opioid_tolerance"] == "unknown"
    assert rows["g1"]["opioid_unknown_reason"] == f"{TAKEN_AS_NEEDED} and {NOT_READABLE}"


def test_flat_column_absent_or_stated(tmp_path: Path) -> None:
    table = tmp_path / "flat.csv"
    table.write_text(
        "admin_id,patient_id,administered_at,route,kind,dose_value,dose_unit,weight_value,weight_unit,indication,"
        "procedure_class,opioid_tolerance,opioid_unknown_reason\n"
        "A1,P1,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,perioperative,mild,present,\n"
        "A2,P1,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,perioperative,mild,,\n"
        "A3,P1,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,sickle-cell-pain,, Absent ,\n"
        "A4,P1,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,sickle-cell-pain,,unknown,no pharmacy data\n"
        "A5,P1,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,sickle-cell-pain,,tolerant,\n"
    )
    run = run_duckdb(flat_source(table), tmp_path / "out")
    found = {
        r[0]: r[1:]
        for r in duckdb.connect()
        .execute(
            f"SELECT admin_id, verdict, opioid_tolerance, opioid_unknown_reason, problem FROM read_parquet('{run.findings}')"
        )
        .fetchall()
    }
    assert found["A1"] == ("may-consider", "present", None, None)  # mild pain, but opioid tolerant
    assert found["A2"] == ("not-indicated", "unknown", NOT_IN_INPUT, None)  # never absent
    assert found["A3"][:3] == ("insufficient-evidence", "absent", None)  # the engine: not tolerant
    assert found["A4"] == ("needs-information", "unknown", "no pharmacy data", None)
    assert found["A5"][0] is None and "unknown opioid tolerance 'tolerant'" in found["A5"][3]
    assert set(COLUMN_NAMES) >= {"opioid_tolerance", "opioid_unknown_reason", "opioid_basis"}


# ----------------------------------------------------------------------------------------------------
# A real Bulk Data export (Synthea, 10 patients) with opioids and a ketamine administration added

SYNTHEA = EXTERNAL / "synthea-bulk-10-patients"
PATIENT = "6a4160eb-a793-2f86-2302-378626f46cce"


def _ndjson(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle]


def _utc(written: str) -> dt.datetime:
    return dt.datetime.fromisoformat(written).astimezone(dt.UTC)


def _record_then(folder: Path, when: dt.datetime, encounter_id: str) -> list[dict[str, Any]]:
    """The patient's record as it stood at ``when``: what had happened by then, the encounter going on (in
    progress), and conditions that ended later still active."""
    reference = f"Patient/{PATIENT}"
    record: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.ndjson")):
        for r in _ndjson(path) if path.name != "log.ndjson" else []:
            if r["resourceType"] == "Patient" and r["id"] == PATIENT:
                record.append(r)
            if (r.get("subject") or {}).get("reference") != reference:
                continue
            kind = r["resourceType"]
            started = r.get("onsetDateTime") or r.get("authoredOn") or r.get("performedDateTime")
            started = started or (r.get("period") or r.get("performedPeriod") or {}).get("start")
            started = started or r.get("effectiveDateTime")
            if started and _utc(started if len(started) > 10 else started + "T00:00:00+00:00") > when:
                continue
            if kind == "Condition" and r.get("abatementDateTime") and _utc(r["abatementDateTime"]) > when:
                r = {**r, "clinicalStatus": {"coding": [{"code": "active"}]}}
                r.pop("abatementDateTime")
            if kind == "Encounter" and r["id"] == encounter_id:
                r = {**r, "status": "in-progress"}
            record.append(r)
    return record


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/external-test-data is not beside the repository")
@pytest.mark.parametrize("tablets_a_day", [4, 2])  # oxycodone 10 mg: 40 mg/day is tolerance, 20 is not
def test_a_real_export_with_opioids_gives_the_verdict_of_assess(tmp_path: Path, tablets_a_day: int) -> None:
    folder = tmp_path / "export"
    shutil.copytree(SYNTHEA, folder)
    encounters = [
        e
        for e in _ndjson(folder / "Encounter.000.ndjson")
        if e["subject"]["reference"] == f"Patient/{PATIENT}"
    ]
    encounter = max(encounters, key=lambda e: _utc(e["period"]["start"]))
    when = _utc(encounter["period"]["start"]) + dt.timedelta(minutes=30)
    subject = {"reference": f"Patient/{PATIENT}"}
    iv = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}
    oxycodone = {
        **_request(
            "oxy",
            "oxycodone hydrochloride 10 MG Oral Tablet",
            1,
            tablets_a_day,
            (when - dt.timedelta(days=60)).date().isoformat(),
        ),
        "status": "active",
        "subject": subject,
    }
    order = {
        "resourceType": "MedicationRequest",
        "id": "ketamine-order",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6130", "display": "ketamine"}]},
        "subject": subject,
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "authoredOn": when.date().isoformat(),
        "reasonCode": [{"coding": [{"system": SNOMED, "code": "30925003", "display": "Sickle cell crisis"}]}],
        "dosageInstruction": [{"route": iv, "doseAndRate": [{"doseQuantity": {"value": 20, "unit": "mg"}}]}],
    }
    weighed = {
        "resourceType": "Observation",
        "id": "weight",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": subject,
        "effectiveDateTime": (when - dt.timedelta(days=1)).isoformat(),
        "valueQuantity": {"value": 80, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    given = {
        **_given("ketamine-given", when.isoformat()),
        "subject": subject,
        "context": {"reference": f"Encounter/{encounter['id']}"},
        "request": {"reference": "MedicationRequest/ketamine-order"},
    }
    (folder / "MedicationRequest.001.ndjson").write_text(
        json.dumps(oxycodone) + "\n" + json.dumps(order) + "\n"
    )
    (folder / "Observation.000.ndjson").write_text(json.dumps(weighed) + "\n")
    (folder / "MedicationAdministration.000.ndjson").write_text(json.dumps(given) + "\n")

    canonical = canonical_parquet(folder, "fhir", tmp_path / "out").path
    run = run_duckdb(f"SELECT * FROM read_parquet('{canonical}')", tmp_path / "audit")
    [(verdict, statements, tolerance)] = (
        duckdb.connect()
        .execute(f"SELECT verdict, statements, opioid_tolerance FROM read_parquet('{run.findings}')")
        .fetchall()
    )

    record = _record_then(folder, when, encounter["id"])
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in record]}
    live = assess(
        facts_from_bundle(json.loads(json.dumps(bundle), parse_float=Decimal), as_of=when.date()),
        KB,
    )
    assert (verdict, list(statements), tolerance) == (
        live.verdict.value,
        list(live.statement_ids),
        live.opioid.tolerant.value,
    )
    assert tolerance == ("present" if tablets_a_day == 4 else "absent")


def test_summary_and_report_show_adherence_by_tolerance_and_why_unknown(tmp_path: Path) -> None:
    from ketamine_cds.audit.run import run_audit

    table = tmp_path / "in" / "flat.csv"
    table.parent.mkdir()
    head = "admin_id,patient_id,administered_at,route,kind,dose_value,dose_unit,weight_value,weight_unit,indication,"
    head += "procedure_class,opioid_tolerance,opioid_unknown_reason\n"
    rows = [
        "A1,P1,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,perioperative,abdominal,present,",
        "A2,P2,2025-01-01 10:00,intravenous,bolus,40,mg,70,kg,perioperative,abdominal,absent,",
        "A3,P3,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,perioperative,abdominal,,",
        "A4,P4,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,perioperative,abdominal,unknown,no pharmacy data",
        "A5,P5,2025-01-01 10:00,intravenous,bolus,20,mg,70,kg,perioperative,abdominal,not-recorded,",
        "A6,P6,2025-01-01 10:00,intravenous,bolus,20,furlongs,70,kg,perioperative,abdominal,present,",
    ]
    table.write_text(head + "\n".join(rows) + "\n")
    summary = run_audit(table, tmp_path / "out")
    groups = summary["opioid_tolerance"]["by_tolerance"]
    assert {state: g["assessed"] for state, g in groups.items()} == {
        "present": 1,  # A6 is a bad row: not assessed
        "absent": 1,
        "not-recorded": 1,
        "unknown": 2,
    }
    assert groups["absent"]["adherence"]["departs"] == 1  # 40 mg for 70 kg is over 0.35 mg/kg
    assert summary["opioid_tolerance"]["unknown_because"] == {NOT_IN_INPUT: 1, "no pharmacy data": 1}
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["opioid_tolerance"] == summary["opioid_tolerance"]
    report = (tmp_path / "out" / "report.html").read_text()
    section = report[report.index('id="opioid-tolerance"') :]
    section = section[: section.index("</section>")]
    assert (
        "Why tolerance was unknown" in section
        and "no pharmacy data: 1" in section
        and NOT_IN_INPUT in section
    )
