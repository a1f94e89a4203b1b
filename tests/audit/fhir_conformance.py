"""One FHIR reading rule for the live service and the batch audit: conformance fixtures.

One small FHIR record per reading rule, each with the facts it must give. A fixture is a patient's record, a
ketamine dose given at ``WHEN`` and the facts the rule decides. ``as_bundle`` renders it as the live service
sees it (a Bundle with the ketamine order, a MedicationRequest, to ``facts_from_bundle``); ``as_export`` as the
audit sees it (NDJSON with the same request and the MedicationAdministration that gave the dose). Both must
give the expected facts, and the same facts as each other, except where ``differs`` says why they may not: the
live service asks about *now*, the audit reads *history*.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Json = dict[str, Any]

WHEN = "2026-03-10T10:00:00Z"
AS_OF = dt.date(2026, 3, 10)
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
PATIENT = {"reference": "Patient/p1"}


def coded(system: str, code: str, display: str | None = None) -> Json:
    coding: Json = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def qty(value: str | int, unit: str) -> Json:
    return {"value": Decimal(str(value)), "unit": unit, "system": UCUM, "code": unit}


IV = coded(SNOMED, "47625008", "Intravenous route")
ORAL = coded(SNOMED, "26643006", "Oral route")
KETAMINE = coded(RXNORM, "6130", "ketamine")
BOLUS_20_MG = {"doseQuantity": qty(20, "mg")}


def weight(id_: str, when: str, value: str | int, unit: str = "kg", status: str = "final") -> Json:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": status,
        "code": coded(LOINC, "29463-7", "Body weight"),
        "subject": PATIENT,
        "effectiveDateTime": when,
        "valueQuantity": qty(value, unit),
    }


def bound(resource: Json, comparator: str) -> Json:
    """A body weight (or any resource with a valueQuantity) given only as a bound: "< 30 kg"."""
    return {**resource, "valueQuantity": {**resource["valueQuantity"], "comparator": comparator}}


def condition(id_: str, code: Json, clinical: str | None = "active", verification: str | None = None) -> Json:
    resource: Json = {"resourceType": "Condition", "id": id_, "code": code, "subject": PATIENT}
    if clinical:
        resource["clinicalStatus"] = coded(CLINICAL, clinical)
    if verification:
        resource["verificationStatus"] = coded(VERIFICATION, verification)
    return resource


def encounter(status: str, *locations: Json, klass: str = "IMP") -> Json:
    return {
        "resourceType": "Encounter",
        "id": "e1",
        "status": status,
        "class": {"system": ACT_CODE, "code": klass},
        "subject": PATIENT,
        "location": list(locations),
    }


def icu_location() -> Json:
    return {"resourceType": "Location", "id": "icu", "name": "MICU", "type": [coded(ROLE_CODE, "ICU", "ICU")]}


def opioid_request(
    id_: str,
    text: str,
    tablets: int,
    per_day: int,
    start: str,
    end: str | None = None,
    status: str = "active",
    as_needed: bool = False,
) -> Json:
    repeat: Json = {"frequency": per_day, "period": 1, "periodUnit": "d", "boundsPeriod": {"start": start}}
    if end:
        repeat["boundsPeriod"]["end"] = end
    dosage: Json = {
        "timing": {"repeat": repeat},
        "doseAndRate": [{"doseQuantity": {"value": tablets, "unit": "tablet"}}],
    }
    if as_needed:
        dosage["asNeededBoolean"] = True
    return {
        "resourceType": "MedicationRequest",
        "id": id_,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"text": text},
        "subject": PATIENT,
        "authoredOn": start,
        "dosageInstruction": [dosage],
    }


@dataclass(frozen=True)
class Fixture:
    rule: str
    expected: Json  # facts the rule decides (``facts_of``'s keys), which both readers must give
    record: tuple[Json, ...] = ()
    route: Json = field(default_factory=lambda: IV)
    dose: Json | None = field(default_factory=lambda: BOLUS_20_MG)  # a doseAndRate entry
    method: Json | None = None
    medication: Json = field(default_factory=lambda: {"medicationCodeableConcept": KETAMINE})
    reason: tuple[Json, ...] = ()
    reason_reference: str | None = None
    encounter: str | None = None
    method_on_order_only: bool = False  # the administration does not repeat the order's dosage method
    refused: str = (
        ""  # both readers refuse the record (the service's error, the audit's row reason) saying this
    )
    # field -> (the live service's value, the audit's value, why they legitimately differ)
    differs: Json = field(default_factory=dict)


def _dosage(fx: Fixture) -> Json:
    dosage: Json = {"route": fx.route}
    if fx.method is not None:
        dosage["method"] = fx.method
    return dosage


def _request(fx: Fixture) -> Json:
    dosage = _dosage(fx)
    if fx.dose is not None:
        dosage["doseAndRate"] = [fx.dose]
    request: Json = {
        "resourceType": "MedicationRequest",
        "id": "order",
        "status": "active",
        "intent": "order",
        **fx.medication,
        "subject": PATIENT,
        "authoredOn": AS_OF.isoformat(),
        "dosageInstruction": [dosage],
    }
    if fx.reason:
        request["reasonCode"] = list(fx.reason)
    if fx.reason_reference:
        request["reasonReference"] = [{"reference": fx.reason_reference}]
    if fx.encounter:
        request["encounter"] = {"reference": fx.encounter}
    return request


def as_bundle(fx: Fixture) -> Json:
    """The record and the ketamine order, as the live service reads them."""
    resources = [{"resourceType": "Patient", "id": "p1"}, *fx.record, _request(fx)]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def as_export(fx: Fixture) -> list[Json]:
    """The record, the order and the administration that gave the dose, as the audit reads them."""
    dosage = _dosage(fx)
    if fx.method_on_order_only:
        dosage.pop("method", None)
    for key, element in (fx.dose or {}).items():
        dosage["dose" if key == "doseQuantity" else key] = element
    given: Json = {
        "resourceType": "MedicationAdministration",
        "id": "given",
        "status": "completed",
        **fx.medication,
        "subject": PATIENT,
        "effectiveDateTime": WHEN,
        "request": {"reference": "MedicationRequest/order"},
        "dosage": dosage,
    }
    if fx.encounter:
        given["context"] = {"reference": fx.encounter}
    return [{"resourceType": "Patient", "id": "p1"}, *fx.record, _request(fx), given]


# ----------------------------------------------------------------------------------------------------
# The fixtures: one per reading rule

ICU_NOW = {"location": {"reference": "Location/icu"}, "status": "active"}
ICU_AT_THE_TIME = {
    "location": {"reference": "Location/icu"},
    "status": "completed",
    "period": {"start": "2026-03-09T00:00:00Z", "end": "2026-03-11T00:00:00Z"},
}
KETAMINE_50 = {
    "resourceType": "Medication",
    "id": "ket50",
    "code": {"text": "ketamine hydrochloride injection"},
    "ingredient": [
        {
            "itemCodeableConcept": KETAMINE,
            "strength": {"numerator": qty(50, "mg"), "denominator": qty(1, "mL")},
        }
    ],
}
KETAMINE_AND_MIDAZOLAM = {
    "resourceType": "Medication",
    "id": "mix",
    "code": {"text": "ketamine and midazolam"},
    "ingredient": [
        {"itemCodeableConcept": KETAMINE},
        {"itemCodeableConcept": coded(RXNORM, "6960", "midazolam")},
    ],
}
PRIOR_INFUSION = {
    "resourceType": "MedicationAdministration",
    "id": "earlier",
    "status": "completed",
    "medicationCodeableConcept": KETAMINE,
    "subject": PATIENT,
    "effectivePeriod": {"start": "2026-01-05T08:00:00Z", "end": "2026-01-05T12:00:00Z"},
    "dosage": {"route": IV, "rateQuantity": qty("0.3", "mg/kg/h")},
}

FIXTURES: tuple[Fixture, ...] = (
    Fixture(
        "weight in effect: the latest final body weight before the dose (a preliminary one is not used)",
        {"weight_kg": 72},
        record=(
            weight("w1", "2026-01-01T08:00:00Z", 70),
            weight("w2", "2026-03-01T08:00:00Z", 72),
            weight("w3", "2026-03-05T08:00:00Z", 90, status="preliminary"),
        ),
    ),
    Fixture(
        "weight in effect: a weight without a date",
        {},
        record=({k: v for k, v in weight("w1", "2026-03-01", 80).items() if k != "effectiveDateTime"},),
        differs={
            "weight_kg": (
                80,
                None,
                "the live service uses the record's only weight, undated, with a warning; the audit reads history "
                "and cannot tell whether an undated weight was in effect at the time of the dose",
            )
        },
    ),
    Fixture(
        "weight in effect: any mass unit ([lb_av])",
        {"weight_kg": Decimal("79.3786647500")},  # 175 lb
        record=(weight("w1", "2026-03-01T08:00:00Z", 175, "[lb_av]"),),
    ),
    Fixture(
        "active conditions: resolved, inactive, refuted and entered-in-error ones do not count",
        {"conditions": ["psychosis"]},
        record=(
            condition("c1", coded(SNOMED, "69322001", "Psychotic disorder")),
            condition("c2", coded(ICD10CM, "G47.33"), clinical="resolved"),
            condition("c3", coded(ICD10CM, "H40.11"), clinical="inactive"),
            condition("c4", coded(SNOMED, "19943007"), verification="refuted"),
            condition("c5", coded(ICD10CM, "F20.9"), verification="entered-in-error"),
        ),
    ),
    Fixture(
        "active conditions: ICD-10-CM by hierarchy (F11.20 is opioid dependence)",
        {"conditions": ["opioid-dependence", "substance-misuse"]},
        record=(condition("c1", coded(ICD10CM, "F11.20")),),
    ),
    Fixture(
        "pregnancy: a pregnancy-status Observation answering pregnant",
        {"conditions": ["pregnancy"]},
        record=(
            {
                "resourceType": "Observation",
                "id": "preg",
                "status": "final",
                "code": coded(LOINC, "82810-3", "Pregnancy status"),
                "subject": PATIENT,
                "effectiveDateTime": "2026-03-01",
                "valueCodeableConcept": coded(SNOMED, "77386006", "Pregnant"),
            },
        ),
    ),
    Fixture(
        "route words: a route given only as text",
        {"route": "intravenous", "kind": "bolus"},
        route={"text": "IV push"},
    ),
    Fixture("route words: oral", {"route": "oral", "kind": None}, route={"text": "PO"}, dose=None),
    Fixture(
        "rates: a rateQuantity is an infusion",
        {"kind": "infusion", "dose": (Decimal("0.5"), "mg/kg/h")},
        dose={"rateQuantity": qty("0.5", "mg/kg/h")},
    ),
    Fixture(
        "ratios: 100 mg per 60 min is 100 mg/h",
        {"kind": "infusion", "dose": (Decimal(100), "mg/h")},
        dose={"rateRatio": {"numerator": qty(100, "mg"), "denominator": qty(60, "min")}},
    ),
    Fixture(
        "concentration: a dose in mL through the referenced Medication's strength",
        {"concentration": 50, "dose": (Decimal(2), "mL")},
        record=(KETAMINE_50,),
        medication={"medicationReference": {"reference": "Medication/ket50"}},
        dose={"doseQuantity": qty(2, "mL")},
    ),
    Fixture(
        "indication: a coded reasonCode",
        {"use": "crps"},
        reason=(coded(SNOMED, "128200000", "Complex regional pain syndrome"),),
    ),
    Fixture(
        "indication: a reasonReference to a Condition",
        {"use": "sickle-cell-pain", "conditions": ["sickle-cell-crisis"]},
        record=(condition("sc", coded(ICD10CM, "D57.00", "Hb-SS disease with crisis")),),
        reason_reference="Condition/sc",
    ),
    Fixture(
        "procedure class: a surgery going on in the Encounter; no reason: perioperative",
        {"use": "perioperative", "procedure_class": "abdominal"},
        record=(
            encounter("in-progress"),
            {
                "resourceType": "Procedure",
                "id": "s1",
                "status": "in-progress",
                "code": coded(SNOMED, "80146002", "Appendectomy"),
                "subject": PATIENT,
                "encounter": {"reference": "Encounter/e1"},
                "performedDateTime": "2026-03-10T09:00:00Z",
            },
        ),
        encounter="Encounter/e1",
    ),
    Fixture(
        "current encounter and ICU: an Encounter in progress at an ICU location",
        {"setting": "intensive-care"},
        record=(encounter("in-progress", ICU_NOW), icu_location()),
        encounter="Encounter/e1",
    ),
    Fixture(
        "current encounter: an emergency Encounter is not intensive care",
        {"setting": "non-intensive-care"},
        record=(encounter("in-progress", klass="EMER"),),
        encounter="Encounter/e1",
    ),
    Fixture(
        "current encounter: a cancelled Encounter says nothing",
        {"setting": "unknown"},
        record=(encounter("cancelled", ICU_NOW), icu_location()),
        encounter="Encounter/e1",
    ),
    Fixture(
        "history: a finished Encounter whose ICU stay covers the dose",
        {},
        record=(encounter("finished", ICU_AT_THE_TIME), icu_location()),
        encounter="Encounter/e1",
        differs={
            "setting": (
                "unknown",
                "intensive-care",
                "the live service asks where the patient is now, so only an Encounter in progress counts; the "
                "audit reads history, where the stay is finished and its location period covers the dose",
            )
        },
    ),
    Fixture(
        "prior IV course: an earlier IV ketamine infusion given (an administration over time)",
        {"route": "oral", "prior_iv_ketamine": True},
        record=(PRIOR_INFUSION,),
        route=ORAL,
        dose=None,
    ),
    Fixture(
        "prior IV course: an earlier IV dose given over four hours",
        {"route": "oral", "prior_iv_ketamine": True},
        record=({**PRIOR_INFUSION, "dosage": {"route": IV, "dose": qty(100, "mg")}},),
        route=ORAL,
        dose=None,
    ),
    Fixture(
        "prior IV course: an earlier IV bolus given at one time is not a course",
        {"route": "oral", "prior_iv_ketamine": None},
        record=(
            {
                "resourceType": "MedicationAdministration",
                "id": "earlier",
                "status": "completed",
                "medicationCodeableConcept": KETAMINE,
                "subject": PATIENT,
                "effectiveDateTime": "2026-01-05T08:00:00Z",
                "dosage": {"route": IV, "dose": qty(20, "mg")},
            },
        ),
        route=ORAL,
        dose=None,
    ),
    Fixture(
        "prior IV course: an earlier IV infusion request (completed)",
        {"route": "oral", "prior_iv_ketamine": True},
        record=(
            {
                "resourceType": "MedicationRequest",
                "id": "earlier-order",
                "status": "completed",
                "intent": "order",
                "medicationCodeableConcept": KETAMINE,
                "subject": PATIENT,
                "authoredOn": "2026-01-05",
                "dosageInstruction": [
                    {"route": IV, "doseAndRate": [{"rateQuantity": qty("0.3", "mg/kg/h")}]}
                ],
            },
        ),
        route=ORAL,
        dose=None,
    ),
    Fixture(
        "prior IV course: a statement of an earlier IV bolus is not a course",
        {"route": "oral", "prior_iv_ketamine": None},
        record=(
            {
                "resourceType": "MedicationStatement",
                "id": "said",
                "status": "completed",
                "medicationCodeableConcept": KETAMINE,
                "subject": PATIENT,
                "effectiveDateTime": "2026-01-05",
                "dosage": [{"route": IV, "doseAndRate": [{"doseQuantity": qty(20, "mg")}]}],
            },
        ),
        route=ORAL,
        dose=None,
    ),
    Fixture(
        "prior IV course: none in the record is unknown, not no",
        {"route": "intranasal", "prior_iv_ketamine": None},
        route={"text": "intranasal"},
        dose=None,
    ),
    Fixture(
        "PCA: the order's method names PCA and the product is ketamine alone",
        {"pca_sole_agent": True},
        method={"text": "patient-controlled analgesia (PCA)"},
    ),
    Fixture(
        "PCA: written on the order the administration fulfils",
        {"pca_sole_agent": True},
        method={"text": "PCA"},
        method_on_order_only=True,
    ),
    Fixture(
        "PCA: ketamine with another ingredient is not ketamine alone",
        {"pca_sole_agent": False},
        record=(KETAMINE_AND_MIDAZOLAM,),
        medication={"medicationReference": {"reference": "Medication/mix"}},
        method={"text": "PCA"},
    ),
    Fixture(
        "opioids: oxycodone 30 mg a day for two months is tolerance",
        {"opioid_tolerance": "present"},
        record=(opioid_request("ox", "oxycodone hydrochloride 5 MG Oral Tablet", 2, 3, "2026-01-10"),),
    ),
    Fixture(
        "opioids: oxycodone 20 mg a day is below the threshold",
        {"opioid_tolerance": "absent"},
        record=(opioid_request("ox", "oxycodone hydrochloride 10 MG Oral Tablet", 1, 2, "2026-01-10"),),
    ),
    Fixture(
        "opioids: as needed is unknown, never absent",
        {"opioid_tolerance": "unknown"},
        record=(
            opioid_request(
                "ox", "oxycodone hydrochloride 10 MG Oral Tablet", 1, 4, "2026-01-10", as_needed=True
            ),
        ),
    ),
    Fixture(
        "opioids: a MedicationStatement being taken, the product a referenced Medication",
        {"opioid_tolerance": "present"},
        record=(
            {
                "resourceType": "Medication",
                "id": "mo",
                "code": {"text": "morphine sulfate 30 MG Oral Tablet"},
            },
            {
                "resourceType": "MedicationStatement",
                "id": "takes",
                "status": "active",
                "medicationReference": {"reference": "Medication/mo"},
                "subject": PATIENT,
                "effectivePeriod": {"start": "2025-11-01"},
                "dosage": [
                    {
                        "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                        "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
                    }
                ],
            },
        ),
    ),
    Fixture(
        "opioids: transdermal fentanyl 25 mcg/h",
        {"opioid_tolerance": "present"},
        record=(
            {
                "resourceType": "MedicationRequest",
                "id": "patch",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"text": "72 HR fentanyl 0.025 MG/HR Transdermal System"},
                "subject": PATIENT,
                "authoredOn": "2026-01-02",
                "dosageInstruction": [
                    {
                        "timing": {"repeat": {"frequency": 1, "period": 72, "periodUnit": "h"}},
                        "route": coded(SNOMED, "45890007", "Transdermal route"),
                        "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "patch"}}],
                    }
                ],
            },
        ),
    ),
    Fixture(
        "opioids: a date that is not a date makes tolerance unknown (the live service refuses the record)",
        {},
        record=(opioid_request("ox", "oxycodone hydrochloride 10 MG Oral Tablet", 2, 3, "last winter"),),
        differs={
            "opioid_tolerance": (
                "refused",
                "unknown",
                "the live service answers one question and refuses a record it cannot read (exit 2, HTTP 400); "
                "the audit keeps the administration and reads that prescription's dose and dates as unknown",
            )
        },
    ),
    Fixture(
        "opioids: none in the record",
        {"opioid_tolerance": "not-recorded"},
    ),
    Fixture(
        "opioids: a cancelled prescription was never taken",
        {"opioid_tolerance": "not-recorded"},
        record=(
            opioid_request(
                "ox", "oxycodone hydrochloride 10 MG Oral Tablet", 2, 3, "2026-01-10", status="cancelled"
            ),
        ),
    ),
    Fixture(
        "history: a prescription completed since, whose period covered the dose",
        {},
        record=(
            opioid_request(
                "ox",
                "oxycodone hydrochloride 10 MG Oral Tablet",
                2,
                3,
                "2026-01-10",
                "2026-04-10",
                status="completed",
            ),
        ),
        differs={
            "opioid_tolerance": (
                "not-recorded",
                "present",
                "the live service counts the prescriptions in force now (active); the audit reads history, where "
                "one completed since was taken on the day of the dose",
            )
        },
    ),
    Fixture(
        "weight in effect: two weights taken at the same time that disagree are not used, and are named",
        {
            "weight_kg": None,
            "weight_problem": "two body weights taken at the same time disagree: 7 kg and 70 kg "
            "(Observation/w2, Observation/w3; taken 2026-03-09T08:00:00Z)",
        },
        record=(
            weight("w1", "2026-01-01T08:00:00Z", 68),
            weight("w3", "2026-03-09T08:00:00Z", 70),
            weight("w2", "2026-03-09T08:00:00Z", 7),
        ),
    ),
    Fixture(
        "weight in effect: two weights taken at the same time that agree as written are one weighing (the lower)",
        {"weight_kg": Decimal("69.989302691"), "weight_problem": None},  # 154.3 lb
        record=(
            weight("w1", "2026-03-09T08:00:00Z", 70),
            weight("w2", "2026-03-09T08:00:00Z", "154.3", "[lb_av]"),
        ),
    ),
    Fixture(
        "weight in effect: the latest weight given only as a bound is not used, nor an older one instead",
        {
            "weight_kg": None,
            "weight_problem": "the latest body weight (Observation/w2) is recorded only as a bound (< 30 kg), "
            "not as a weight a dose can be worked out from",
        },
        record=(
            weight("w1", "2026-01-01T08:00:00Z", 70),
            bound(weight("w2", "2026-03-09T08:00:00Z", 30), "<"),
        ),
    ),
    Fixture(
        "weight in effect: a weight whose unit and UCUM code disagree cannot be read",
        {},
        record=(
            {**weight("w1", "2026-03-01T08:00:00Z", 154), "valueQuantity": {**qty(154, "lb"), "code": "kg"}},
        ),
        refused="the unit 'lb' and the UCUM code 'kg' name different units",
    ),
    Fixture(
        "dose: a dose whose unit and UCUM code disagree cannot be read",
        {},
        dose={"doseQuantity": {**qty(20, "mg"), "code": "ug"}},
        refused="the unit 'mg' and the UCUM code 'ug' name different units",
    ),
    Fixture(
        "dose: a dose given only as a bound cannot be checked",
        {},
        dose={"doseQuantity": {**qty(20, "mg"), "comparator": "<"}},
        refused="the quantity is only a bound (< 20 mg), not an amount",
    ),
    Fixture(
        "rates: a rate whose unit and UCUM code disagree cannot be read",
        {},
        dose={"rateQuantity": {**qty(2, "mg/min"), "unit": "mg/h"}},
        refused="the unit 'mg/h' and the UCUM code 'mg/min' name different units",
    ),
    Fixture(
        "ketamine by name: format characters in the word (a soft hyphen, a zero-width space) are not read",
        {"route": "intravenous", "kind": "bolus", "dose": (Decimal(20), "mg")},
        medication={"medicationCodeableConcept": {"text": "Keta\u00admine hydro\u200bchloride 50 mg/mL"}},
    ),
    Fixture(
        "ketamine by name: full-width letters read as their ASCII forms",
        {"route": "intravenous", "kind": "bolus", "dose": (Decimal(20), "mg")},
        medication={
            "medicationCodeableConcept": {"text": "\uff2b\uff25\uff34\uff21\uff2d\uff29\uff2e\uff25 50 mg/mL"}
        },
    ),
    Fixture(
        "ketamine by name: its name in other languages (Ketamin, ketamina, kétamine), never esketamine",
        {"route": "intravenous", "kind": "bolus", "dose": (Decimal(20), "mg")},
        medication={"medicationCodeableConcept": {"text": "Ketamin 10 mg/ml Injektionsl\u00f6sung"}},
    ),
)
