"""Conditions: classified by the value sets; resolved, inactive, refuted and erroneous records ignored."""

from __future__ import annotations

import pytest
from fhir_bundles import ICD10CM, LOINC, SNOMED, TODAY, bundle, concept, condition, patient, read

from ketamine_cds import Coded, Presence, Verdict, assess
from ketamine_cds.adapters.fhir import facts_from_bundle


def concepts(*resources: dict[str, object]) -> set[str]:
    return {c.concept for c in read(patient(), *resources).conditions or ()}


def test_a_bundle_without_conditions_has_none_in_the_record() -> None:
    assert read(patient()).conditions == ()


def test_a_snomed_condition_is_classified_with_its_source() -> None:
    facts = read(patient(), condition(SNOMED, "19943007", "Cirrhosis of liver"))
    assert facts.conditions is not None
    [fact] = facts.conditions
    assert fact.concept == "liver-disease-severe"
    assert fact.source == Coded("Cirrhosis of liver", SNOMED, "19943007")


def test_icd10cm_codes_match_by_hierarchy() -> None:
    # F11.20 (opioid dependence, uncomplicated) sits below F11.2 and F11
    assert concepts(condition(ICD10CM, "F11.20")) == {"opioid-dependence", "substance-misuse"}
    assert concepts(condition(ICD10CM, "F11.10")) == {"substance-misuse"}  # abuse, not dependence
    assert concepts(condition(ICD10CM, "G90.512")) == {"crps"}
    assert concepts(condition(ICD10CM, "O09.90")) == {"pregnancy"}


def test_unstable_angina_is_severe_cardiovascular_disease_in_either_code_system() -> None:
    assert concepts(condition(ICD10CM, "I20.0", "Unstable angina")) == {"cardiovascular-severe"}
    assert concepts(condition(SNOMED, "4557003", "Preinfarction syndrome")) == {"cardiovascular-severe"}
    assert concepts(condition(ICD10CM, "I20.9", "Angina pectoris, unspecified")) == set()


def test_unclassified_codes_are_not_conditions() -> None:
    assert concepts(condition(SNOMED, "444814009", "Viral sinusitis")) == set()


def test_every_coding_of_a_condition_is_classified() -> None:
    both = condition(SNOMED, "999999", "local")
    both["code"]["coding"].append(
        {"system": ICD10CM, "code": "F20.9", "display": "Schizophrenia, unspecified"}
    )
    assert concepts(both) == {"psychosis"}


@pytest.mark.parametrize(
    ("clinical", "verification"),
    [
        ("resolved", "confirmed"),
        ("inactive", "confirmed"),
        ("remission", "confirmed"),
        ("active", "refuted"),
        ("active", "entered-in-error"),
    ],
)
def test_resolved_inactive_refuted_records_are_ignored(clinical: str, verification: str) -> None:
    assert concepts(condition(SNOMED, "58214004", clinical=clinical, verification=verification)) == set()


@pytest.mark.parametrize(
    ("clinical", "verification"),
    [("active", "confirmed"), ("recurrence", "provisional"), ("relapse", "unconfirmed"), (None, None)],
)
def test_active_or_unqualified_records_count(clinical: str | None, verification: str | None) -> None:
    assert concepts(condition(SNOMED, "58214004", clinical=clinical, verification=verification)) == {
        "psychosis"
    }


def test_the_same_condition_recorded_twice_is_one_fact() -> None:
    facts = read(patient(), condition(SNOMED, "78275009", id="a"), condition(SNOMED, "78275009", id="b"))
    assert facts.conditions is not None and len(facts.conditions) == 1


def pregnancy_status(
    answer: str, display: str, *, when: str = "2026-11-20", id: str = "preg"
) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": concept(LOINC, "82810-3", "Pregnancy status"),
        "effectiveDateTime": when,
        "valueCodeableConcept": concept(SNOMED, answer, display),
    }


def test_a_positive_pregnancy_status_is_a_pregnancy() -> None:
    facts = read(patient(), pregnancy_status("77386006", "Pregnant"))
    assert facts.conditions is not None
    assert [(c.concept, c.source.code) for c in facts.conditions] == [("pregnancy", "77386006")]


def test_a_negative_pregnancy_status_rules_pregnancy_out() -> None:
    facts = read(patient(), pregnancy_status("60001007", "Not pregnant"))
    assert facts.conditions == () and facts.ruled_out == {"pregnancy"}


def test_the_latest_pregnancy_status_wins() -> None:
    then = pregnancy_status("77386006", "Pregnant", when="2024-01-10", id="a")
    now = pregnancy_status("60001007", "Not pregnant", when="2026-11-01", id="b")
    facts = read(patient(), then, now)
    assert facts.conditions == () and facts.ruled_out == {"pregnancy"}


def test_a_recorded_pregnancy_is_not_ruled_out_by_a_status() -> None:
    facts = read(
        patient(), condition(SNOMED, "77386006", "Pregnancy"), pregnancy_status("60001007", "Not pregnant")
    )
    assert {c.concept for c in facts.conditions or ()} == {"pregnancy"}
    assert facts.ruled_out == frozenset()


def test_conditions_of_a_transaction_bundle_are_read() -> None:
    document = bundle(patient(), condition(SNOMED, "128200000", "CRPS"), kind="transaction")
    facts = facts_from_bundle(document, as_of=TODAY)
    assert [c.concept for c in facts.conditions or ()] == ["crps"]


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("I10", "Essential (primary) hypertension"),
        ("I11.9", "Hypertensive heart disease without heart failure"),
        ("I12.9", "Hypertensive chronic kidney disease"),
        ("I13.10", "Hypertensive heart and chronic kidney disease"),
        ("I15.0", "Renovascular hypertension"),
        ("I50.9", "Heart failure, unspecified"),
    ],
)
def test_hypertension_without_severity_is_a_warning_to_verify_not_silence(code: str, display: str) -> None:
    # the defect: I10 was "not found in the record" while SNOMED 38341003 was a warning
    assessment = assess(read(patient(), condition(ICD10CM, code, display)))
    screening = {s.statement: s for s in assessment.screening}["contra-cardiovascular"]
    assert screening.status is Presence.UNKNOWN and screening.concept == "cardiovascular-disease"
    assert [f.message_key for f in assessment.findings if f.statement.id == "contra-cardiovascular"] == [
        "verify"
    ]
    assert assessment.verdict is not Verdict.CONTRAINDICATED


@pytest.mark.parametrize("code", ["I16.0", "I16.1", "I16.9"])
def test_a_hypertensive_crisis_is_uncontrolled_hypertension_the_contraindication(code: str) -> None:
    assessment = assess(read(patient(), condition(ICD10CM, code, "Hypertensive crisis")))
    assert assessment.verdict is Verdict.CONTRAINDICATED
    assert [f.message_key for f in assessment.findings if f.statement.id == "contra-cardiovascular"] == [
        "present"
    ]


@pytest.mark.parametrize(
    ("code", "concept_id"), [("F10.20", "alcohol-misuse"), ("B18.2", "chronic-hepatitis")]
)
def test_risks_of_liver_toxicity_are_read(code: str, concept_id: str) -> None:
    assert concept_id in concepts(condition(ICD10CM, code))
