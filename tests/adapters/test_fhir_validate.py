"""Strict R4 validation (fhir.resources), kept off the reader's import path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir_bundles import EXTERNAL, FIXTURES, bundle, ketamine, load, patient, quantity, weight

from ketamine_cds import NotFHIRError
from ketamine_cds.adapters.fhir import validate_r4

INFERNO = EXTERNAL / "inferno-uscore-bundles"
SYNTHEA = sorted(p for p in (EXTERNAL / "synthea-r4-smart-sample").glob("*.json") if p.name != "index.json")


def inferno(name: str) -> Any:
    return load(INFERNO / name)


@pytest.mark.parametrize(
    "document",
    [
        bundle(patient(), weight(80), ketamine(dose=quantity(20, "mg", code="mg"))),
        load(FIXTURES / "ward-iv-bolus-appendectomy.json"),
        load(FIXTURES / "icu-infusion-ml-per-h.json"),
        inferno("uscore_bundle_patient_85.json"),
        inferno("uscore_bundle_patient_client_test.json"),
        load(SYNTHEA[0]),
        load(SYNTHEA[-1]),
    ],
)
def test_valid_bundles_pass(document: Any) -> None:
    validate_r4(document)


def test_the_inferno_bundle_with_effective_period_stop_is_rejected_at_that_field() -> None:
    document = inferno("uscore_bundle_patient_355.json")
    [bad] = [e["resource"] for e in document["entry"] if "stop" in e["resource"].get("effectivePeriod", {})]
    with pytest.raises(NotFHIRError) as caught:
        validate_r4(document)
    assert caught.value.field == f"Observation/{bad['id']}.effectivePeriod.stop"
    assert "\n" not in str(caught.value)


def test_an_attachment_link_is_not_r4() -> None:
    # R4 Attachment has no "link" (it is not in the official R4 JSON schema either)
    with pytest.raises(NotFHIRError) as caught:
        validate_r4(inferno("us_quality_core_bundle_patient.json"))
    assert caught.value.field == "Media/usqualitycore-r4-media.content.link"


def test_a_wrong_datatype_is_named() -> None:
    document = bundle(patient(), ketamine(id="k1", dose={"value": "twenty", "unit": "mg"}))
    with pytest.raises(NotFHIRError) as caught:
        validate_r4(document)
    assert caught.value.field == "MedicationRequest/k1.dosageInstruction[0].doseAndRate[0].doseQuantity.value"


def test_a_missing_required_element_is_named() -> None:
    no_status = weight(80, id="w1")
    del no_status["status"]
    with pytest.raises(NotFHIRError) as caught:
        validate_r4(bundle(no_status))
    assert caught.value.field == "Observation/w1.status"


def test_a_bundle_without_type_is_invalid() -> None:
    document = bundle(patient())
    del document["type"]
    with pytest.raises(NotFHIRError) as caught:
        validate_r4(document)
    assert caught.value.field == "Bundle.type"


@pytest.mark.parametrize(
    "document",
    [{"resourceType": "Patient", "id": "x"}, load(FIXTURES / "dstu2-medicationorder.json")],
)
def test_not_an_r4_bundle_is_rejected(document: Any) -> None:
    with pytest.raises(NotFHIRError):
        validate_r4(document)


def test_floats_and_decimals_both_validate() -> None:
    as_floats = json.loads(json.dumps(bundle(patient(), weight(80.5))))
    as_decimals = bundle(patient(), weight(Decimal("80.5")))
    validate_r4(as_floats)
    validate_r4(as_decimals)


def test_importing_the_reader_does_not_import_pydantic_or_fhir_resources() -> None:
    """The command line's cold start must stay fast: the FHIR model is only loaded to validate."""
    src = Path(__file__).resolve().parents[2] / "src"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ketamine_cds.adapters.fhir"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "ketamine_cds.adapters.fhir" in imported
    assert not {m for m in imported if m.split(".")[0] in ("pydantic", "pydantic_core", "fhir", "fhir_core")}
