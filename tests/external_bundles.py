"""The external FHIR data in ../shared/external-test-data as bundles: Synthea, bulk export, inferno."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from shared_data import EXTERNAL

SNOMED = "http://snomed.info/sct"
IV = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}

SYNTHEA = sorted(p for p in (EXTERNAL / "synthea-r4-smart-sample").glob("*.json") if p.name != "index.json")
INFERNO = sorted((EXTERNAL / "inferno-uscore-bundles").glob("*.json"))
BULK = EXTERNAL / "synthea-bulk-10-patients"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(), parse_float=Decimal)
    return data


def bulk_bundles() -> Iterator[tuple[str, dict[str, Any]]]:
    """The bulk export's NDJSON files grouped per patient, each as a collection Bundle."""
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    patients: dict[str, dict[str, Any]] = {}
    for path in sorted(BULK.glob("*.ndjson")):
        if path.name == "log.ndjson":
            continue
        for line in path.read_text().splitlines():
            resource = json.loads(line, parse_float=Decimal)
            if resource["resourceType"] == "Patient":
                patients[resource["id"]] = resource
                continue
            owner = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
            by_patient[owner.removeprefix("Patient/")].append(resource)
    for patient_id, patient in sorted(patients.items()):
        entries = [patient, *by_patient[patient_id]]
        yield (
            patient_id,
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in entries],
            },
        )


BULK_BUNDLES = dict(bulk_bundles())
ALL_BUNDLES = {
    **{f"synthea/{p.stem[:24]}": p for p in SYNTHEA},
    **{f"inferno/{p.stem}": p for p in INFERNO},
}


def bundle_named(name: str) -> dict[str, Any]:
    if name.startswith("bulk/"):
        return copy.deepcopy(BULK_BUNDLES[name.removeprefix("bulk/")])
    return load(ALL_BUNDLES[name])


NAMES = [*ALL_BUNDLES, *(f"bulk/{k}" for k in BULK_BUNDLES)]


def with_ketamine_bolus(document: dict[str, Any]) -> dict[str, Any]:
    patient_entry = next(
        e for e in document["entry"] if e.get("resource", {}).get("resourceType") == "Patient"
    )
    patient_ref = patient_entry.get("fullUrl") or f"Patient/{patient_entry['resource']['id']}"
    order = {
        "resourceType": "MedicationRequest",
        "id": "ketamine-test-order",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Ketamine 10 mg/mL injection"},
        "subject": {"reference": patient_ref},
        "authoredOn": "2026-11-24",
        "dosageInstruction": [
            {
                "route": IV,
                "doseAndRate": [
                    {
                        "doseQuantity": {
                            "value": 20,
                            "unit": "mg",
                            "system": "http://unitsofmeasure.org",
                            "code": "mg",
                        }
                    }
                ],
            }
        ],
    }
    document["entry"].append({"fullUrl": "urn:uuid:ketamine-test-order", "resource": order})
    return document
