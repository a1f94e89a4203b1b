"""Terse builders of FHIR R4 resources and Bundles for the FHIR adapter's tests (plain JSON dicts)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from ketamine_cds import Facts
from ketamine_cds.adapters.fhir import facts_from_bundle

Json = dict[str, Any]

TODAY = dt.date(2026, 11, 24)
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
EXTERNAL = SHARED / "external-test-data"
FIXTURES = REPO / "tests" / "data" / "fhir"

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

IV = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}
ORAL = {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]}
NASAL = {"coding": [{"system": SNOMED, "code": "46713006", "display": "Nasal route"}]}
IM = {"coding": [{"system": SNOMED, "code": "78421000", "display": "Intramuscular route"}]}
KETAMINE_50_MG_PER_ML = {
    "coding": [{"system": RXNORM, "code": "238083", "display": "ketamine 50 MG/ML Injectable Solution"}]
}


def concept(system: str, code: str, display: str | None = None) -> Json:
    coding: Json = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def quantity(value: Any, unit: str | None = None, *, code: str | None = None) -> Json:
    q: Json = {"value": value if isinstance(value, int | float | Decimal) else Decimal(str(value))}
    if unit is not None:
        q["unit"] = unit
    if code is not None:
        q["system"], q["code"] = UCUM, code
    return q


def bundle(*resources: Json, kind: str = "collection") -> Json:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"fullUrl": f"urn:uuid:{r['id']}", "resource": r} if "id" in r else {"resource": r}
            for r in resources
        ],
    }


def patient(birth_date: str = "1970-05-01", gender: str = "female", id: str = "p1") -> Json:
    return {"resourceType": "Patient", "id": id, "birthDate": birth_date, "gender": gender}


def weight(
    value: Any,
    unit: str = "kg",
    *,
    code: str | None = "kg",
    when: str | None = "2026-11-01",
    id: str = "w1",
    status: str = "final",
) -> Json:
    obs: Json = {
        "resourceType": "Observation",
        "id": id,
        "status": status,
        "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")],
        "code": concept(LOINC, "29463-7", "Body weight"),
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": quantity(value, unit, code=code),
    }
    if when is not None:
        obs["effectiveDateTime"] = when
    return obs


def condition(
    system: str,
    code: str,
    display: str = "",
    *,
    id: str = "c1",
    clinical: str | None = "active",
    verification: str | None = "confirmed",
) -> Json:
    cond: Json = {
        "resourceType": "Condition",
        "id": id,
        "code": concept(system, code, display or None),
        "subject": {"reference": "Patient/p1"},
    }
    if clinical:
        cond["clinicalStatus"] = concept("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if verification:
        cond["verificationStatus"] = concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", verification
        )
    return cond


def ketamine(
    *,
    id: str = "k1",
    status: str = "draft",
    route: Json | None = IV,
    dose: Json | None = None,
    rate: Json | None = None,
    rate_ratio: Json | None = None,
    medication: Json | None = None,
    reason: Json | None = None,
    reason_reference: str | None = None,
    encounter: str | None = None,
    contained: list[Json] | None = None,
) -> Json:
    """A ketamine MedicationRequest; by default a draft IV order of 50 mg/mL ketamine with no dose."""
    request: Json = {
        "resourceType": "MedicationRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-11-24",
    }
    if medication is not None and "reference" in medication:
        request["medicationReference"] = medication
    else:
        request["medicationCodeableConcept"] = medication or KETAMINE_50_MG_PER_ML
    dose_and_rate: Json = {}
    if dose is not None:
        dose_and_rate["doseQuantity"] = dose
    if rate is not None:
        dose_and_rate["rateQuantity"] = rate
    if rate_ratio is not None:
        dose_and_rate["rateRatio"] = rate_ratio
    dosage: Json = {}
    if route is not None:
        dosage["route"] = route
    if dose_and_rate:
        dosage["doseAndRate"] = [dose_and_rate]
    if dosage:
        request["dosageInstruction"] = [dosage]
    if reason is not None:
        request["reasonCode"] = [reason]
    if reason_reference is not None:
        request["reasonReference"] = [{"reference": reason_reference}]
    if encounter is not None:
        request["encounter"] = {"reference": encounter}
    if contained is not None:
        request["contained"] = contained
    return request


def medication(id: str, text: str, strength: tuple[Any, str, Any, str] | None = None) -> Json:
    med: Json = {"resourceType": "Medication", "id": id, "code": {"text": text}}
    if strength is not None:
        num, num_unit, den, den_unit = strength
        med["ingredient"] = [
            {
                "itemCodeableConcept": {"text": "ketamine hydrochloride"},
                "strength": {
                    "numerator": quantity(num, num_unit, code=num_unit),
                    "denominator": quantity(den, den_unit, code=den_unit),
                },
            }
        ]
    return med


def opioid(
    display: str,
    *,
    id: str = "o1",
    code: str = "1049621",
    dose: Json | None = None,
    frequency: int = 1,
    period: Any = 1,
    period_unit: str = "d",
    start: str | None = "2026-10-01",
    end: str | None = None,
    status: str = "active",
    route: Json | None = None,
) -> Json:
    """An opioid MedicationRequest with a simple repeat timing."""
    repeat: Json = {"frequency": frequency, "period": period, "periodUnit": period_unit}
    if start or end:
        repeat["boundsPeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    dosage: Json = {"timing": {"repeat": repeat}}
    if dose is not None:
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    if route is not None:
        dosage["route"] = route
    return {
        "resourceType": "MedicationRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}]},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-09-30",
        "dosageInstruction": [dosage],
    }


def encounter(
    id: str = "e1", *, status: str = "in-progress", klass: str = "IMP", locations: tuple[str, ...] = ()
) -> Json:
    return {
        "resourceType": "Encounter",
        "id": id,
        "status": status,
        "class": {"system": ACT_CODE, "code": klass},
        "subject": {"reference": "Patient/p1"},
        "location": [{"location": {"reference": ref}, "status": "active"} for ref in locations],
    }


def location(id: str, role_code: str | None, display: str = "") -> Json:
    loc: Json = {"resourceType": "Location", "id": id, "name": display or id}
    if role_code is not None:
        loc["type"] = [concept(ROLE_CODE, role_code, display or None)]
    return loc


def procedure(code: str, display: str, *, status: str = "preparation", id: str = "proc1") -> Json:
    return {
        "resourceType": "Procedure",
        "id": id,
        "status": status,
        "code": concept(SNOMED, code, display),
        "subject": {"reference": "Patient/p1"},
    }


def read(*resources: Json, as_of: dt.date = TODAY, order_id: str | None = None) -> Facts:
    """Facts of a collection Bundle holding the given resources."""
    return facts_from_bundle(bundle(*resources), as_of=as_of, order_id=order_id)


def pairs(document: Json) -> list[tuple[str | None, Json]]:
    """The (fullUrl, resource) pairs of a Bundle's entries that hold a resource (facts_from_resources)."""
    return [(e.get("fullUrl"), e["resource"]) for e in document["entry"] if "resource" in e]


def load(path: Path) -> Any:
    return json.loads(path.read_text(), parse_float=Decimal)
