"""The intended use (the order's reason) and the planned surgery."""

from __future__ import annotations

from typing import Any

import pytest
from fhir_bundles import (
    ICD10CM,
    SNOMED,
    concept,
    condition,
    ketamine,
    patient,
    procedure,
    quantity,
    read,
    weight,
)

from ketamine_cds import Coded, Verdict, assess


@pytest.mark.parametrize(
    ("reason", "use"),
    [
        (concept(SNOMED, "128200000", "Complex regional pain syndrome"), "crps"),
        (concept(ICD10CM, "G90.511", "CRPS I of right upper limb"), "crps"),
        (concept(ICD10CM, "D57.00", "Hb-SS disease with crisis"), "sickle-cell-pain"),
        (concept(SNOMED, "370143000", "Major depressive disorder"), "depression"),
        (concept(SNOMED, "203082005", "Fibromyalgia"), "fibromyalgia"),
        (concept(ICD10CM, "G43.909", "Migraine, unspecified"), "migraine"),
        # reason codes the value sets lacked before revision 2
        (concept(SNOMED, "2177002", "Postherpetic neuralgia"), "postherpetic-neuralgia"),
        (
            concept(ICD10CM, "B02.29", "Other postherpetic nervous system involvement"),
            "postherpetic-neuralgia",
        ),
        (concept(ICD10CM, "B02.23", "Postherpetic polyneuropathy"), "postherpetic-neuralgia"),
        (concept(ICD10CM, "G54.6", "Phantom limb syndrome with pain"), "phantom-limb-pain"),
        (concept(ICD10CM, "G54.7", "Phantom limb syndrome without pain"), "phantom-limb-pain"),
        (concept(ICD10CM, "M79.2", "Neuralgia and neuritis, unspecified"), "neuropathic-pain"),
        (concept(SNOMED, "72641008", "Administration of sedative"), "procedural-sedation"),
        (concept(SNOMED, "35489007", "Depressive disorder"), "depression"),
        (concept(ICD10CM, "F32.9", "Major depressive disorder, single episode, unspecified"), "depression"),
        (concept(ICD10CM, "F33.1", "Major depressive disorder, recurrent, moderate"), "depression"),
    ],
)
def test_the_reason_code_is_the_use(reason: dict[str, Any], use: str) -> None:
    facts = read(patient(), ketamine(reason=reason))
    assert facts.use == use
    coding = reason["coding"][0]
    assert facts.use_source == Coded(coding["display"], coding["system"], coding["code"])


SCI_SEQUELA = concept(ICD10CM, "S14.109S", "Unspecified injury of cervical spinal cord, sequela")
CHRONIC_PAIN = concept(ICD10CM, "G89.29", "Other chronic pain")


@pytest.mark.parametrize(
    "injury",
    [SCI_SEQUELA, concept(ICD10CM, "G82.20", "Paraplegia, unspecified")],
    ids=["sequela", "paraplegia"],
)
def test_spinal_cord_injury_pain_needs_the_injury_and_chronic_pain_together(injury: dict[str, Any]) -> None:
    """The guideline's use is chronic pain after a spinal cord injury: the injury alone (a fresh or acute one)
    names no use, so the verdict asks for it rather than reading an acute injury as the chronic pain use."""
    assert read(patient(), ketamine(reason=injury)).use is None
    order = ketamine(reason=injury)
    order["reasonCode"].append(CHRONIC_PAIN)
    facts = read(patient(), order)
    assert facts.use == "spinal-cord-injury-pain"
    coding = injury["coding"][0]
    assert facts.use_source == Coded(coding["display"], coding["system"], coding["code"])
    assert assess(facts).verdict is Verdict.MAY_CONSIDER
    pain_alone = ketamine(reason=CHRONIC_PAIN)
    assert read(patient(), pain_alone).use != "spinal-cord-injury-pain"


def test_a_reason_reference_to_a_condition_is_the_use() -> None:
    crisis = condition(ICD10CM, "D57.00", "Hb-SS disease with crisis", id="scd")
    assert read(patient(), crisis, ketamine(reason_reference="Condition/scd")).use == "sickle-cell-pain"
    assert read(patient(), crisis, ketamine(reason_reference="urn:uuid:scd")).use == "sickle-cell-pain"


def test_a_refuted_reason_condition_is_not_the_use() -> None:
    refuted = condition(SNOMED, "128200000", id="c9", verification="refuted")
    assert read(patient(), refuted, ketamine(reason_reference="Condition/c9")).use is None


def test_a_reason_that_names_no_use_is_ignored() -> None:
    reason = concept(SNOMED, "75544000", "Opioid dependence")  # a condition, but not a use of ketamine
    assert read(patient(), ketamine(reason=reason)).use is None


def test_no_reason_with_a_planned_surgery_is_perioperative() -> None:
    facts = read(patient(), procedure("80146002", "Appendectomy"), ketamine())
    assert facts.use == "perioperative" and facts.use_source is None


def test_a_recognised_reason_wins_over_a_planned_surgery() -> None:
    facts = read(
        patient(), procedure("80146002", "Appendectomy"), ketamine(reason=concept(SNOMED, "128200000"))
    )
    assert facts.use == "crps"


def test_no_reason_and_no_surgery_leaves_the_use_unknown() -> None:
    assert read(patient(), ketamine()).use is None


def test_an_eligibility_question_with_a_planned_surgery_is_perioperative() -> None:
    assert read(patient(), procedure("609588000", "Total knee replacement")).use == "perioperative"


@pytest.mark.parametrize(
    ("code", "display", "procedure_class"),
    [
        ("80146002", "Appendectomy", "abdominal"),
        ("177765008", "Opening of chest", "thoracic"),
        ("609588000", "Total knee replacement", "orthopedic-limb"),
        ("55705006", "Spinal fusion", "spine"),
        ("73761001", "Colonoscopy", "mild"),
        ("265764009", "Renal dialysis", None),
    ],
)
def test_a_planned_procedure_is_classified(code: str, display: str, procedure_class: str | None) -> None:
    facts = read(patient(), procedure(code, display))
    assert facts.procedure is not None
    assert facts.procedure.procedure_class == procedure_class
    assert facts.procedure.source == Coded(display, SNOMED, code)


@pytest.mark.parametrize("status", ["preparation", "in-progress"])
def test_procedures_being_prepared_or_under_way_are_planned(status: str) -> None:
    assert read(patient(), procedure("80146002", "Appendectomy", status=status)).procedure is not None


@pytest.mark.parametrize("status", ["completed", "not-done", "stopped", "entered-in-error"])
def test_past_or_abandoned_procedures_are_not_planned(status: str) -> None:
    facts = read(patient(), procedure("80146002", "Appendectomy", status=status))
    assert facts.procedure is None and facts.use is None


def service_request(
    code: str,
    display: str,
    *,
    status: str = "active",
    intent: str = "order",
    surgical: bool = False,
    id: str = "sr1",
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": id,
        "status": status,
        "intent": intent,
        "code": concept(SNOMED, code, display),
        "subject": {"reference": "Patient/p1"},
    }
    if surgical:
        request["category"] = [concept(SNOMED, "387713003", "Surgical procedure")]
    return request


@pytest.mark.parametrize("intent", ["order", "plan", "original-order"])
def test_an_open_service_request_for_surgery_is_planned(intent: str) -> None:
    facts = read(patient(), service_request("43075005", "Partial colectomy", intent=intent))
    assert facts.procedure is not None and facts.procedure.procedure_class == "abdominal"


@pytest.mark.parametrize(
    ("status", "intent"), [("completed", "order"), ("revoked", "order"), ("active", "proposal")]
)
def test_closed_or_proposed_service_requests_are_not_planned(status: str, intent: str) -> None:
    assert (
        read(
            patient(), service_request("43075005", "Partial colectomy", status=status, intent=intent)
        ).procedure
        is None
    )


def test_an_unclassified_surgical_service_request_is_planned_without_class() -> None:
    facts = read(patient(), service_request("112727005", "Hernia repair", surgical=True))
    assert facts.procedure is not None and facts.procedure.procedure_class is None


def test_a_service_request_that_is_not_surgery_is_not_a_planned_surgery() -> None:
    food_bank = service_request("467771000124109", "Assistance with application for food pantry program")
    assert read(patient(), food_bank).procedure is None


def test_a_severe_classified_procedure_is_preferred() -> None:
    facts = read(
        patient(),
        procedure("265764009", "Renal dialysis", id="a"),
        procedure("73761001", "Colonoscopy", id="b"),
        service_request("52734007", "Total hip replacement"),
    )
    assert facts.procedure is not None and facts.procedure.procedure_class == "orthopedic-limb"


def test_a_mild_classified_procedure_is_preferred_to_an_unclassified_one() -> None:
    facts = read(
        patient(),
        procedure("265764009", "Renal dialysis", id="a"),
        procedure("22523008", "Vasectomy", id="b"),
    )
    assert facts.procedure is not None and facts.procedure.procedure_class == "mild"


def test_a_resolved_condition_named_as_the_reason_is_still_the_reason() -> None:
    """The prescriber pointed at it; only refuted or erroneous records are set aside."""
    past = condition(SNOMED, "128200000", "CRPS", id="c9", clinical="resolved")
    facts = read(patient(), past, ketamine(reason_reference="Condition/c9"))
    assert facts.use == "crps" and facts.conditions == ()


@pytest.mark.parametrize(
    ("reason", "verdict"),
    [
        (concept(SNOMED, "72641008", "Administration of sedative"), Verdict.OUT_OF_SCOPE),
        (concept(ICD10CM, "F33.1", "Major depressive disorder, recurrent, moderate"), Verdict.OUT_OF_SCOPE),
        (concept(SNOMED, "2177002", "Postherpetic neuralgia"), Verdict.NOT_INDICATED),
        (concept(ICD10CM, "S24.101D", "Injury of thoracic spinal cord"), Verdict.NEEDS_INFORMATION),
    ],
)
def test_the_new_reason_codes_reach_their_verdicts_not_a_dose_check(
    reason: dict[str, Any], verdict: Verdict
) -> None:
    order = ketamine(reason=reason, dose=quantity(0.3, "mg/kg", code="mg/kg"))
    assessment = assess(read(patient(), weight(80), order))
    assert assessment.verdict is verdict
    if verdict is Verdict.OUT_OF_SCOPE:  # sedation is not analgesia: no dose check against pain limits
        assert assessment.dose_checks == ()
