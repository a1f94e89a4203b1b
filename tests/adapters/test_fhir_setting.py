"""Setting (intensive care or not, from the Encounter and its Location) and prior IV ketamine."""

from __future__ import annotations

from typing import Any

import pytest
from fhir_bundles import (
    FIXTURES,
    IV,
    NASAL,
    ORAL,
    TODAY,
    encounter,
    ketamine,
    load,
    location,
    patient,
    quantity,
    read,
)

from ketamine_cds import Setting
from ketamine_cds.adapters.fhir import facts_from_bundle


@pytest.mark.parametrize("code", ["ICU", "PEDICU", "PEDNICU"])
def test_an_intensive_care_location_is_intensive_care(code: str) -> None:
    facts = read(patient(), encounter(locations=("Location/unit",)), location("unit", code), ketamine())
    assert facts.setting is Setting.INTENSIVE_CARE


@pytest.mark.parametrize("code", ["HU", "HOSP", "ER", "CCU", "OF"])
def test_a_typed_location_that_is_not_intensive_care_is_not(code: str) -> None:
    facts = read(patient(), encounter(locations=("Location/unit",)), location("unit", code), ketamine())
    assert facts.setting is Setting.NON_INTENSIVE_CARE


def test_a_location_typed_by_words_only() -> None:
    unit = location("unit", None)
    unit["type"] = [{"text": "Surgical intensive care"}]
    assert read(encounter(locations=("Location/unit",)), unit).setting is Setting.INTENSIVE_CARE


def test_an_untyped_or_missing_location_is_unknown_for_an_inpatient() -> None:
    assert read(encounter(locations=("Location/unit",)), location("unit", None)).setting is Setting.UNKNOWN
    assert read(encounter(locations=("Location/elsewhere",))).setting is Setting.UNKNOWN
    assert read(encounter()).setting is Setting.UNKNOWN


@pytest.mark.parametrize("klass", ["AMB", "EMER", "VR", "HH"])
def test_outpatient_emergency_virtual_and_home_encounters_are_not_intensive_care(klass: str) -> None:
    assert read(encounter(klass=klass)).setting is Setting.NON_INTENSIVE_CARE


def test_an_icu_location_wins_over_an_emergency_class() -> None:
    facts = read(encounter(klass="EMER", locations=("Location/unit",)), location("unit", "ICU"))
    assert facts.setting is Setting.INTENSIVE_CARE


def test_no_encounter_is_unknown() -> None:
    assert read(patient(), ketamine()).setting is Setting.UNKNOWN


def test_the_orders_encounter_is_preferred_when_it_is_going_on() -> None:
    ward = encounter("ward-stay", status="in-progress", locations=("Location/ward",))
    icu = encounter("icu-stay", status="in-progress", locations=("Location/icu",))
    resources = (ward, icu, location("ward", "HU"), location("icu", "ICU"))
    assert read(*resources, ketamine(encounter="Encounter/icu-stay")).setting is Setting.INTENSIVE_CARE
    assert read(*resources, ketamine(encounter="Encounter/ward-stay")).setting is Setting.NON_INTENSIVE_CARE
    assert read(*resources, ketamine()).setting is Setting.UNKNOWN  # two going on: which one is not known


@pytest.mark.parametrize("status", ["finished", "cancelled", "planned", "entered-in-error"])
def test_an_encounter_that_is_not_going_on_says_nothing_about_the_setting(status: str) -> None:
    # the defect: a finished ICU stay switched the infusion limit off for a patient now on a ward
    old_icu = encounter("icu-stay", status=status, locations=("Location/icu",))
    resources = (patient(), old_icu, location("icu", "ICU"))
    assert read(*resources, ketamine()).setting is Setting.UNKNOWN
    assert read(*resources, ketamine(encounter="Encounter/icu-stay")).setting is Setting.UNKNOWN
    assert read(encounter("a", status=status, klass="AMB")).setting is Setting.UNKNOWN


@pytest.mark.parametrize("status", ["in-progress", "arrived", "triaged", "onleave"])
def test_an_encounter_going_on_now_gives_the_setting(status: str) -> None:
    stay = encounter("stay", status=status, locations=("Location/icu",))
    assert read(stay, location("icu", "ICU")).setting is Setting.INTENSIVE_CARE


def test_a_finished_icu_stay_beside_a_ward_stay_in_progress_is_the_ward() -> None:
    old = encounter("old", status="finished", locations=("Location/icu",))
    now = encounter("now", status="in-progress", locations=("Location/ward",))
    assert (
        read(old, now, location("icu", "ICU"), location("ward", "HU")).setting is Setting.NON_INTENSIVE_CARE
    )


@pytest.mark.parametrize("entry_status", ["planned", "reserved", "completed"])
def test_a_location_the_patient_is_not_in_now_does_not_count(entry_status: str) -> None:
    stay = encounter(locations=("Location/icu",))
    stay["location"][0]["status"] = entry_status
    assert read(stay, location("icu", "ICU")).setting is Setting.UNKNOWN


def test_a_location_entry_without_a_status_counts() -> None:
    stay = encounter(locations=("Location/icu",))
    del stay["location"][0]["status"]
    assert read(stay, location("icu", "ICU")).setting is Setting.INTENSIVE_CARE


def test_the_active_location_of_a_transfer_is_the_current_one() -> None:
    facts = facts_from_bundle(load(FIXTURES / "icu-infusion-ml-per-h.json"), as_of=TODAY)
    assert facts.setting is Setting.INTENSIVE_CARE  # moved from the emergency room (completed) to the MICU


def test_a_contained_location() -> None:
    stay = encounter(locations=("#bed",))
    stay["contained"] = [location("bed", "PEDICU")]
    assert read(stay).setting is Setting.INTENSIVE_CARE


# --- prior IV ketamine ------------------------------------------------------------------------------


def administration(
    route: dict[str, Any] | None, *, status: str = "completed", id: str = "ma1", infusion: bool = True
) -> dict[str, Any]:
    """A ketamine MedicationAdministration: an infusion (a rate) by default, else a single bolus."""
    given: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": id,
        "status": status,
        "medicationCodeableConcept": {"text": "ketamine 10 mg/mL injection"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-10-01T10:00:00Z",
    }
    if route is not None:
        given["dosage"] = {"route": route}
        if infusion:
            given["dosage"]["rateQuantity"] = quantity(20, "mg/h", code="mg/h")
        else:
            given["dosage"]["dose"] = quantity(20, "mg", code="mg")
    return given


def statement(route: dict[str, Any], *, status: str = "completed", rate: bool = True) -> dict[str, Any]:
    """A ketamine MedicationStatement: an IV infusion course the patient had (or a bolus without ``rate``)."""
    entry = (
        {"rateQuantity": quantity(0.5, "mg/kg/h", code="mg/kg/h")}
        if rate
        else {"doseQuantity": quantity(20, "mg")}
    )
    return {
        "resourceType": "MedicationStatement",
        "id": "ms1",
        "status": status,
        "medicationCodeableConcept": {"text": "ketamine"},
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2026-06-01", "end": "2026-06-05"},
        "dosage": [{"route": route, "doseAndRate": [entry]}],
    }


def test_no_other_ketamine_leaves_prior_iv_ketamine_unknown_not_ruled_out() -> None:
    assert read(patient(), ketamine()).prior_iv_ketamine is None


@pytest.mark.parametrize(
    ("status", "prior"), [("completed", True), ("active", True), ("stopped", None), ("on-hold", None)]
)
def test_a_completed_or_active_iv_ketamine_infusion_request_is_prior_iv_ketamine(
    status: str, prior: bool | None
) -> None:
    # REFERENCE: a course "may be recorded as ... a completed or active MedicationRequest"; one stopped or on
    # hold may never have run: not found, so unknown (never "no")
    earlier = ketamine(id="earlier", status=status, route=IV, rate=quantity(20, "mg/h", code="mg/h"))
    facts = read(patient(), earlier, ketamine(id="now", route=NASAL), order_id="now")
    assert facts.prior_iv_ketamine is prior


def test_a_single_earlier_iv_bolus_is_not_a_course() -> None:
    # the defect: one IV bolus counted as a prior infusion course for oral follow-up
    bolus = ketamine(id="earlier", status="completed", route=IV, dose=quantity(20, "mg", code="mg"))
    assert read(patient(), bolus, ketamine(id="now", route=ORAL), order_id="now").prior_iv_ketamine is None
    assert read(patient(), administration(IV, infusion=False), ketamine(route=ORAL)).prior_iv_ketamine is None


def test_an_administration_over_time_is_an_infusion() -> None:
    given = administration(IV, infusion=False)
    del given["dosage"]["dose"], given["effectiveDateTime"]
    given["effectivePeriod"] = {"start": "2026-10-01T10:00:00Z", "end": "2026-10-01T14:00:00Z"}
    assert read(patient(), given, ketamine(route=ORAL)).prior_iv_ketamine is True


@pytest.mark.parametrize(("status", "prior"), [("completed", True), ("active", True), ("not-taken", None)])
def test_a_medication_statement_of_an_iv_infusion_course_counts(status: str, prior: bool | None) -> None:
    assert read(patient(), statement(IV, status=status), ketamine(route=NASAL)).prior_iv_ketamine is prior
    assert read(patient(), statement(IV, rate=False), ketamine(route=NASAL)).prior_iv_ketamine is None
    assert read(patient(), statement(ORAL), ketamine(route=NASAL)).prior_iv_ketamine is None


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "draft"])
def test_requests_never_given_are_not_prior_iv_ketamine(status: str) -> None:
    facts = read(
        patient(), ketamine(id="other", status=status), ketamine(id="now", status="active"), order_id="now"
    )
    assert facts.prior_iv_ketamine is None


def test_earlier_oral_ketamine_is_not_iv() -> None:
    assert (
        read(patient(), ketamine(id="earlier", status="completed", route=ORAL), ketamine()).prior_iv_ketamine
        is None
    )


def test_an_earlier_request_without_route_leaves_prior_iv_ketamine_unknown() -> None:
    assert (
        read(patient(), ketamine(id="earlier", status="completed", route=None), ketamine()).prior_iv_ketamine
        is None
    )


def test_an_iv_ketamine_infusion_administration_is_prior_iv_ketamine() -> None:
    assert read(patient(), administration(IV), ketamine(route=NASAL)).prior_iv_ketamine is True
    assert read(patient(), administration(ORAL)).prior_iv_ketamine is None
    assert read(patient(), administration(IV, status="not-done")).prior_iv_ketamine is None
    assert read(patient(), administration(None)).prior_iv_ketamine is None


@pytest.mark.parametrize("words", ["Surgical ICU", "Intensive care overflow"])
def test_a_coded_type_decides_over_the_words_beside_it(words: str) -> None:
    ward = location("unit", "HU")
    ward["type"][0]["text"] = words
    assert read(encounter(locations=("Location/unit",)), ward).setting is Setting.NON_INTENSIVE_CARE


@pytest.mark.parametrize(
    "words",
    ["Surgical step-down (non-ICU)", "Non ICU ward", "Post-ICU recovery", "Step-down from intensive care"],
)
def test_words_that_deny_intensive_care_are_not_intensive_care(words: str) -> None:
    unit = location("unit", None)
    unit["type"] = [{"text": words}]
    assert read(encounter(locations=("Location/unit",)), unit).setting is Setting.NON_INTENSIVE_CARE


@pytest.mark.parametrize("words", ["Medical ICU", "Neuro intensive-care unit"])
def test_words_that_name_intensive_care_are_intensive_care(words: str) -> None:
    unit = location("unit", None)
    unit["type"] = [{"text": words}]
    assert read(encounter(locations=("Location/unit",)), unit).setting is Setting.INTENSIVE_CARE
