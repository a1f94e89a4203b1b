"""Review of issues 13 (guideline revision 2) and 15 (site protocols): each test states what the reference
(../shared/guideline/REFERENCE.md, revision 2), the contract or the issue asks, and fails on main at 1847e7e.

Most dangerous first. Nothing here is marked xfail: each failure is a defect to fix."""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import pytest

from builders import TODAY, facts, iv
from ketamine_cds import DoseStatus, Setting, assess, assessment_json, load_knowledge
from ketamine_cds._render import finding_texts
from ketamine_cds._site import Site, load_site, site_from_toml
from ketamine_cds.adapters.fhir import facts_from_bundle
from ketamine_cds.audit.duck import run_duckdb
from ketamine_cds.audit.fhir_ndjson import fhir_source
from ketamine_cds.audit.flat import flat_source

KB = load_knowledge()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site" / "example-hospital.toml"

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
IV_ROUTE = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}
ORAL_ROUTE = {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]}
KETAMINE = {"coding": [{"system": RXNORM, "code": "6130", "display": "ketamine"}]}


def _site(**sections: Any) -> Site:
    return site_from_toml(
        {"site": {"name": "Review Hospital", "version": "1"}, **sections}, KB, digest="sha256:r"
    )


def _example() -> Site:
    return load_site(EXAMPLE, KB)


def _finding(assessment: Any, statement: str) -> tuple[str, str]:
    found = [f for f in assessment.findings if f.statement.id == statement]
    assert found, f"no {statement} finding"
    return finding_texts(found[0])


# --- 1. a site's absolute cap without a weight is presented as the limit ------------------------------------


def test_without_a_weight_the_sites_bolus_limit_names_its_per_kg_cap_not_only_20_mg() -> None:
    # Issue 15: "The effective limit is the tighter of the site's caps"; reference, Boundary: "an order in
    # absolute units ... needs the patient's weight, and without one the check is reported as impossible,
    # never guessed". For 30 kg the example's limit is 9 mg (0.3 mg/kg), not 20 mg.
    a = assess(facts(weight_kg=None), site=_example())
    summary, detail = _finding(a, "dose-bolus-limit")
    assert "0.3 mg/kg" in summary + detail  # today: "Maximum IV bolus: site protocol's 20 mg; ..."


def test_without_a_weight_the_sites_infusion_limit_names_its_per_kg_cap_not_only_50_mg_per_h() -> None:
    # as above: 50 mg/h is 1.25 mg/kg/h for a 40 kg patient, over even the guideline's 1 mg/kg/h
    a = assess(facts(weight_kg=None), site=_example())
    summary, detail = _finding(a, "dose-infusion-limit")
    assert "0.5 mg/kg/h" in summary + detail  # today: "... outside intensive care: site protocol's 50 mg/h"


def test_without_a_weight_max_bolus_mg_is_not_the_sites_absolute_cap() -> None:
    # Contract: dose_limits.max_bolus_mg is the maximum bolus; with no weight the maximum depends on the
    # weight (0.3 mg/kg is below 20 mg under 66.7 kg), so no number in mg is the limit ("never guessed").
    limits = assessment_json(assess(facts(weight_kg=None), site=_example()))["dose_limits"]
    assert limits["weight_kg"] is None
    assert limits["max_bolus_mg"] is None  # today: 20
    assert limits["max_infusion_mg_per_h"] is None  # today: 50


def test_a_per_kg_order_without_a_weight_is_not_said_within_the_sites_cap_in_mg() -> None:
    # Reference, Boundary: a check that needs the weight "is reported as impossible, never guessed"; the
    # brief: no finding may say "within" when it is not known. 0.3 mg/kg is 30 mg for 100 kg, over 20 mg.
    a = assess(facts(weight_kg=None, order=iv("0.3", "mg/kg")), site=_example())
    summary, detail = _finding(a, "dose-bolus-limit")
    assert "within the site protocol's 20 mg" not in summary
    assert "for this weight" not in detail  # today: "(max 20 mg for this weight)" with no weight
    assert a.dose_check is not None and a.dose_check.status is not DoseStatus.WITHIN


# --- 2. the batch audit reads intensive care where the reference says it is not ----------------------------


def _ndjson(folder: Path, resources: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for r in resources:
        lines.setdefault(r["resourceType"], []).append(json.dumps(r))
    for kind, text in lines.items():
        (folder / f"{kind}.ndjson").write_text("\n".join(text) + "\n")
    return folder


def _rows(folder: Path) -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        cursor = con.execute(f"SELECT * FROM ({fhir_source(folder)}) ORDER BY admin_id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def _infusion_in(encounter: dict[str, Any], *locations: dict[str, Any]) -> list[dict[str, Any]]:
    """A patient, an Encounter with its Locations, and a 2 mg/kg/h IV ketamine infusion given in it."""
    return [
        {"resourceType": "Patient", "id": "P1"},
        {
            "resourceType": "Encounter",
            "id": "E1",
            "class": {"code": "IMP"},
            "subject": {"reference": "Patient/P1"},
            **encounter,
        },
        *locations,
        {
            "resourceType": "MedicationAdministration",
            "id": "a1",
            "status": "completed",
            "medicationCodeableConcept": KETAMINE,
            "subject": {"reference": "Patient/P1"},
            "context": {"reference": "Encounter/E1"},
            "effectiveDateTime": "2025-03-01T10:00:00Z",
            "dosage": {"route": IV_ROUTE, "rateQuantity": {"value": 2, "unit": "mg/kg/h", "code": "mg/kg/h"}},
        },
    ]


def _location(id_: str, name: str, types: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Location", "id": id_, "name": name, "type": types}


ICU_TYPE = [{"coding": [{"system": ROLE_CODE, "code": "ICU"}]}]
WARD_TYPE = [{"coding": [{"system": ROLE_CODE, "code": "HU"}]}]


@pytest.mark.parametrize(
    "icu_entry",
    [
        {"status": "reserved"},
        {"status": "reserved", "period": {"start": "2025-03-01T08:00:00Z", "end": "2025-03-02T08:00:00Z"}},
    ],
    ids=["reserved", "reserved-with-period"],
)
def test_audit_a_reserved_icu_bed_is_not_intensive_care(tmp_path: Path, icu_entry: dict[str, Any]) -> None:
    # Reference, Settings: intensive care needs "a Location entry whose status is active or not given (not
    # planned, reserved or completed)". Reading a reserved ICU bed as ICU switches the 1 mg/kg/h limit off.
    encounter = {
        "status": "finished",
        "location": [
            {"location": {"reference": "Location/ward"}},
            {"location": {"reference": "Location/icu"}, **icu_entry},
        ],
    }
    resources = _infusion_in(
        encounter, _location("ward", "Ward 3", WARD_TYPE), _location("icu", "MICU", ICU_TYPE)
    )
    (row,) = _rows(_ndjson(tmp_path / "fhir", resources))
    assert row["setting"] != "intensive-care"  # today: intensive-care (location MICU)


@pytest.mark.parametrize(
    "types",
    [
        [{"text": "Surgical step-down (non-ICU)"}],
        [{"text": "Post-ICU ward"}],
        [{"coding": [{"system": ROLE_CODE, "code": "HU"}], "text": "Surgical ICU overflow"}],
    ],
    ids=["non-ICU-in-words", "post-ICU-in-words", "coded-HU-with-ICU-words"],
)
def test_audit_reads_a_location_type_as_the_live_adapter_does(
    tmp_path: Path, types: list[dict[str, Any]]
) -> None:
    # Issue 13, "One rule in every door": the audit's FHIR reader must give the engine's answers; the live
    # adapter (fhir._is_intensive_care) reads these as not intensive care (a coded RoleCode decides; words
    # that deny or qualify ICU are not ICU). Reference: "Never is an unknown setting read as intensive care."
    encounter = {
        "status": "in-progress",
        "location": [{"location": {"reference": "Location/u"}, "status": "active"}],
    }
    resources = _infusion_in(encounter, _location("u", "Unit 5", types))
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources[:3]],
    }
    live = facts_from_bundle(bundle, as_of=dt.date(2025, 3, 1)).setting
    assert live is not Setting.INTENSIVE_CARE
    (row,) = _rows(_ndjson(tmp_path / "fhir", resources))
    assert row["setting"] != "intensive-care"  # today: intensive-care


def test_audit_counts_the_sites_intensive_monitoring_location(tmp_path: Path) -> None:
    # Issue 15: "the command line, the page, the CDS Hooks cards and the batch audit all check against the
    # site's protocol", the example's step-down unit counting as intensive monitoring. assess reads this
    # Location (identifier 4W-STEPDOWN, name "Step-down 4 West") as intensive care with the example site.
    encounter = {
        "status": "in-progress",
        "location": [{"location": {"reference": "Location/u1"}, "status": "active"}],
    }
    stepdown = {
        "resourceType": "Location",
        "id": "u1",
        "name": "Step-down 4 West",
        "identifier": [{"system": "https://hospital.example.org/location", "value": "4W-STEPDOWN"}],
    }
    resources = _infusion_in(encounter, stepdown)
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources[:3]],
    }
    example = _example()
    assert (
        facts_from_bundle(bundle, as_of=dt.date(2025, 3, 1), site=example).setting is Setting.INTENSIVE_CARE
    )
    folder = _ndjson(tmp_path / "fhir", resources)
    run = run_duckdb(fhir_source(folder, site=example), tmp_path / "out", site=example)
    con = duckdb.connect()
    try:
        ((setting, status),) = con.execute(
            f"SELECT setting, dose_status FROM read_parquet('{run.findings}')"
        ).fetchall()
    finally:
        con.close()
    assert (setting, status) != ("unknown", "exceeds-unless-intensive-care")
    assert setting == "intensive-care"  # today: unknown, and 2 mg/kg/h "exceeds unless in intensive care"


# --- 3. the batch audit's prior IV course ------------------------------------------------------------------


def _oral_after(*history: dict[str, Any], cites: str | None = None) -> list[dict[str, Any]]:
    given: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": "a1",
        "status": "completed",
        "medicationCodeableConcept": KETAMINE,
        "subject": {"reference": "Patient/P1"},
        "effectiveDateTime": "2025-03-01T10:00:00Z",
        "dosage": {"route": ORAL_ROUTE, "dose": {"value": 20, "unit": "mg", "code": "mg"}},
    }
    if cites is not None:
        given["supportingInformation"] = [{"reference": cites}]
    return [{"resourceType": "Patient", "id": "P1"}, *history, given]


def test_audit_a_statement_of_one_iv_bolus_is_not_a_prior_course(tmp_path: Path) -> None:
    # Reference, Chronic pain: "A prior IV course means an earlier IV infusion of ketamine (a rate, or an
    # administration over time): a single IV bolus is not a course. It may be recorded as ... a
    # MedicationStatement". Issue 13's third defect, still present in the audit's FHIR reader.
    bolus = {
        "resourceType": "MedicationStatement",
        "id": "S1",
        "status": "completed",
        "medicationCodeableConcept": KETAMINE,
        "subject": {"reference": "Patient/P1"},
        "effectiveDateTime": "2025-01-01",
        "dosage": [{"route": IV_ROUTE, "doseAndRate": [{"doseQuantity": {"value": 20, "unit": "mg"}}]}],
    }
    rows = {r["admin_id"]: r for r in _rows(_ndjson(tmp_path / "fhir", _oral_after(bolus)))}
    assert rows["a1"]["prior_iv_ketamine"] is None  # today: True


def test_audit_limit_source_and_limit_are_each_rows_own_with_an_absolute_cap(tmp_path: Path) -> None:
    # Issue 15: "each dose check gains limit_source ... and the guideline's own limit beside the site's";
    # issue 13: the audit gives "exactly the engine's answers". With max_mg = 20, 0.35 mg/kg is the tighter
    # limit for 40 kg (14 mg) and the 20 mg cap for 80 kg: the audit copies one row's limit to the other.
    capped = _site(dose={"dose-bolus-limit": {"max_mg": "20"}})
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "admin_id,patient_id,administered_at,route,kind,dose_value,dose_unit,weight_value,weight_unit,"
        "setting,indication,procedure_class,conditions\n"
        "A0,P0,2025-01-01 10:00:00,intravenous,bolus,16,mg,80,kg,non-intensive-care,perioperative,spine,\n"
        "A1,P1,2025-01-01 10:00:00,intravenous,bolus,10,mg,40,kg,non-intensive-care,perioperative,spine,\n"
    )
    run = run_duckdb(flat_source(rows), tmp_path / "out", site=capped)
    con = duckdb.connect()
    try:
        found = dict(
            (r[0], r[1:])
            for r in con.execute(
                "SELECT admin_id, limit_source, limit_per_kg, max_for_weight "
                f"FROM read_parquet('{run.findings}')"
            ).fetchall()
        )
    finally:
        con.close()
    for admin, kg, dose in (("A0", 80, 16), ("A1", 40, 10)):
        check = assess(facts(weight_kg=Fraction(kg), order=iv(dose, "mg")), site=capped).dose_check
        assert check is not None and check.limit_amount is not None
        expected = (check.limit_source, float(check.limit_per_kg), float(check.limit_amount))
        assert found[admin][0] == expected[0], admin  # today A1: "site" (engine: "guideline")
        assert found[admin][1:] == pytest.approx(expected[1:]), admin  # today A1: 0.25 mg/kg, max 10 mg


# --- 5. wording: an unknown setting without a weight -------------------------------------------------------


def test_unknown_setting_without_a_weight_says_unless_the_patient_is_in_intensive_care() -> None:
    # Reference, Settings: "When the setting is not known, the limits that apply outside intensive care apply
    # (the cautious side): the finding says 'unless the patient is in intensive care'".
    a = assess(facts(setting=Setting.UNKNOWN, weight_kg=None))
    summary, detail = _finding(a, "dose-infusion-limit")
    assert "unless" in summary + detail  # today: "Maximum IV infusion rate outside intensive care: 1 mg/kg/h"


# --- 6. the live FHIR adapter's prior IV course ------------------------------------------------------------


@pytest.mark.parametrize("status", ["on-hold", "unknown"])
def test_an_iv_infusion_request_neither_completed_nor_active_is_not_a_prior_course(status: str) -> None:
    # Reference, Chronic pain: a prior IV course "may be recorded as a MedicationAdministration, a completed
    # or active MedicationRequest, or a MedicationStatement"; a request on hold (or of unknown status) may
    # never have run, and follow-up then needs the answer (verdict needs-information, not may-consider).
    def request(id_: str, status: str, route: dict[str, Any], entry: dict[str, Any] | None) -> dict[str, Any]:
        dosage: dict[str, Any] = {"route": route}
        if entry is not None:
            dosage["doseAndRate"] = [entry]
        return {
            "resourceType": "MedicationRequest",
            "id": id_,
            "status": status,
            "intent": "order",
            "medicationCodeableConcept": KETAMINE,
            "subject": {"reference": "Patient/p1"},
            "dosageInstruction": [dosage],
        }

    earlier = request(
        "earlier", status, IV_ROUTE, {"rateQuantity": {"value": 20, "unit": "mg/h", "code": "mg/h"}}
    )
    now = request("now", "draft", ORAL_ROUTE, None)
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in ({"resourceType": "Patient", "id": "p1"}, earlier, now)],
    }
    assert facts_from_bundle(bundle, as_of=TODAY, order_id="now").prior_iv_ketamine is None  # today: True


def test_audit_omop_a_care_site_named_non_icu_is_not_intensive_care(tmp_path: Path) -> None:
    # Issue 13, "One rule in every door", and the live adapter's rule (fhir_words.HEDGED_INTENSIVE_CARE):
    # words that deny or qualify ICU ("non-ICU", "post-ICU", "step-down") are not intensive care. Reading them
    # as ICU switches the outside-ICU infusion limit off (reference: "Never is an unknown setting read as
    # intensive care").
    from ketamine_cds.audit.omop import omop_source

    files = {
        "PERSON.csv": "person_id,year_of_birth\n1,1970\n",
        "DRUG_EXPOSURE.csv": (
            "DRUG_EXPOSURE_ID,PERSON_ID,DRUG_CONCEPT_ID,DRUG_SOURCE_VALUE,DRUG_EXPOSURE_START_DATE,"
            "DRUG_EXPOSURE_START_DATETIME,QUANTITY,DOSE_UNIT_SOURCE_VALUE,ROUTE_SOURCE_VALUE,"
            "VISIT_OCCURRENCE_ID,VISIT_DETAIL_ID\n"
            "1,1,0,ketamine,2025-03-03,2025-03-03 10:00:00,2,mg/kg/h,IV,11,110\n"
        ),
        "VISIT_OCCURRENCE.csv": "visit_occurrence_id,person_id,visit_concept_id\n11,1,9201\n",
        "VISIT_DETAIL.csv": "visit_detail_id,person_id,visit_detail_concept_id,care_site_id\n110,1,0,5\n",
        "CARE_SITE.csv": "care_site_id,care_site_name\n5,Post-ICU step-down (non-ICU)\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    con = duckdb.connect()
    try:
        ((setting,),) = con.execute(f"SELECT setting FROM ({omop_source(tmp_path)})").fetchall()
    finally:
        con.close()
    assert setting != "intensive-care"  # today: intensive-care


@pytest.mark.parametrize(
    "reason",
    [
        (
            "http://hl7.org/fhir/sid/icd-10-cm",
            "S14.109A",
            "Injury of cervical spinal cord, initial encounter",
        ),
        (SNOMED, "1734006", "Fracture of vertebral column with spinal cord injury"),
    ],
    ids=["S14.109A", "SNOMED-1734006"],
)
def test_an_acute_spinal_cord_injury_alone_is_not_chronic_spinal_cord_injury_pain(
    reason: tuple[str, str, str],
) -> None:
    # Reference, Codes: "Spinal cord injury pain: ICD-10-CM G89.29 with a spinal cord injury code (S14.1-,
    # S24.1-, S34.1-, G82.-)". An order whose only reason is the injury (here a fresh one) is not the chronic
    # use, so the chronic range (2 mg/kg/h) must not replace the acute 1 mg/kg/h ward limit ("not known: the
    # acute dose limits apply"). Today 1.5 mg/kg/h on a ward passes as "may-consider".
    system, code, display = reason
    order = {
        "resourceType": "MedicationRequest",
        "id": "k1",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": KETAMINE,
        "subject": {"reference": "Patient/p1"},
        "reasonCode": [{"coding": [{"system": system, "code": code, "display": display}]}],
        "dosageInstruction": [
            {
                "route": IV_ROUTE,
                "doseAndRate": [{"rateQuantity": {"value": 1.5, "unit": "mg/kg/h", "code": "mg/kg/h"}}],
            }
        ],
    }
    ward = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "in-progress",
        "class": {"code": "IMP"},
        "location": [{"location": {"reference": "Location/w"}, "status": "active"}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": r}
            for r in (
                {"resourceType": "Patient", "id": "p1"},
                ward,
                _location("w", "Ward 3", WARD_TYPE),
                order,
            )
        ],
    }
    read = facts_from_bundle(bundle, as_of=TODAY)
    assert read.setting is Setting.NON_INTENSIVE_CARE
    assert read.use != "spinal-cord-injury-pain"  # today: spinal-cord-injury-pain
    assert assess(read).verdict.value == "dose-exceeds-limit"  # today: may-consider
