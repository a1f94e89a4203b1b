"""What counts as a FHIR R4 Bundle, the patient, and how errors name the field at fault."""

from __future__ import annotations

from typing import Any

import pytest
from fhir_bundles import FIXTURES, TODAY, bundle, ketamine, load, pairs, patient, read, weight

from ketamine_cds import InputError, NotFHIRError, Route, Setting
from ketamine_cds.adapters.fhir import facts_from_bundle, facts_from_resources


@pytest.mark.parametrize(
    "document",
    [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Parameters"},
        {"patient": {"weight": {"value": 80, "unit": "kg"}}},
        [],
        "Bundle",
    ],
)
def test_anything_but_a_bundle_is_not_fhir(document: Any) -> None:
    with pytest.raises(NotFHIRError) as caught:
        facts_from_bundle(document, as_of=TODAY)
    assert caught.value.code == "not-fhir-r4"


def test_a_dstu2_medication_order_is_not_r4() -> None:
    with pytest.raises(NotFHIRError) as caught:
        facts_from_bundle(load(FIXTURES / "dstu2-medicationorder.json"), as_of=TODAY)
    assert caught.value.field == "entry[1].resource.resourceType"
    assert "MedicationOrder" in caught.value.message


def test_an_entry_without_resource_type_is_not_fhir() -> None:
    document = bundle(patient())
    document["entry"].append({"resource": {"id": "x", "status": "final"}})
    with pytest.raises(NotFHIRError) as caught:
        facts_from_bundle(document, as_of=TODAY)
    assert caught.value.field == "entry[1].resource.resourceType"


def test_entries_without_a_resource_are_skipped() -> None:
    document = bundle(patient(), weight(70))
    document["entry"].append({"request": {"method": "DELETE", "url": "Observation/old"}})
    assert facts_from_bundle(document, as_of=TODAY).weight_kg == 70


def test_two_patients_cannot_be_assessed_together() -> None:
    with pytest.raises(InputError) as caught:
        read(patient(id="p1"), patient(id="p2"))
    assert caught.value.field == "Patient/p2"
    assert "one patient" in caught.value.message


def test_no_patient_leaves_age_and_sex_unknown() -> None:
    facts = read(weight(70))
    assert (facts.age_years, facts.sex) == (None, None)
    assert facts.weight_kg == 70


def test_age_at_the_assessment_date_and_sex() -> None:
    born = patient("1970-11-25", "male")
    assert read(born).age_years == 55  # the 56th birthday is tomorrow
    assert read(patient("1970-11-24")).age_years == 56
    assert read(born).sex == "male"


def test_a_birth_after_the_assessment_date_is_impossible() -> None:
    with pytest.raises(InputError) as caught:
        read(patient("2027-01-01"))
    assert caught.value.field == "Patient/p1.birthDate"


def test_an_empty_bundle_is_an_eligibility_question_with_nothing_known() -> None:
    facts = read()
    assert facts.order is None and facts.use is None and facts.weight_kg is None
    assert facts.conditions == () and facts.opioids == ()
    assert facts.setting is Setting.UNKNOWN and facts.prior_iv_ketamine is None


def test_an_error_in_a_resource_without_id_names_its_entry() -> None:
    nameless = weight(-3)
    del nameless["id"]
    with pytest.raises(InputError) as caught:
        read(patient(), nameless)
    assert caught.value.field == "entry[1].valueQuantity.value"


def test_the_ward_fixture_reads_as_a_clinician_would() -> None:
    facts = facts_from_bundle(load(FIXTURES / "ward-iv-bolus-appendectomy.json"), as_of=TODAY)
    assert (facts.age_years, facts.sex) == (65, "male")
    assert facts.weight_kg == pytest.approx(80.4)  # the amended weight of yesterday, not March's 86.5
    assert facts.setting is Setting.NON_INTENSIVE_CARE
    assert facts.use == "perioperative"
    assert facts.procedure is not None and facts.procedure.procedure_class == "abdominal"
    assert {c.concept for c in facts.conditions or ()} == {"opioid-dependence", "substance-misuse"}
    assert facts.order is not None and facts.order.route is Route.INTRAVENOUS
    assert str(facts.order.dose) == "20 mg"


def test_any_bundle_type_is_read() -> None:
    for kind in ("transaction", "searchset", "document", "batch"):
        assert facts_from_bundle(bundle(patient(), ketamine(), kind=kind), as_of=TODAY).order is not None


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_resources_read_as_their_bundle_reads(path: Any) -> None:
    """facts_from_resources is the reading of the Bundle the pairs would make: same facts, same errors."""
    document = load(path)
    try:
        expected: Any = facts_from_bundle(document, as_of=TODAY)
    except InputError as exc:
        expected = (type(exc), exc.field, exc.message)
    try:
        got: Any = facts_from_resources(pairs(document), as_of=TODAY)
    except InputError as exc:
        got = (type(exc), exc.field, exc.message)
    assert got == expected


def test_resources_are_resolved_by_full_url_and_named_by_position() -> None:
    order = ketamine(medication={"reference": "urn:uuid:med-1"})
    product = {"resourceType": "Medication", "code": {"text": "ketamine 50 MG/ML Injectable Solution"}}
    nameless = weight(-3)
    del nameless["id"]
    facts = facts_from_resources([(None, patient()), (None, order), ("urn:uuid:med-1", product)], as_of=TODAY)
    assert facts.order is not None and facts.order.source.display.startswith("ketamine 50 MG/ML")
    with pytest.raises(InputError) as caught:
        facts_from_resources([(None, patient()), (None, nameless)], as_of=TODAY)
    assert caught.value.field == "entry[1].valueQuantity.value"
    with pytest.raises(NotFHIRError) as not_fhir:
        facts_from_resources([(None, patient()), (None, {"id": "x"})], as_of=TODAY)
    assert not_fhir.value.field == "entry[1].resource.resourceType"
