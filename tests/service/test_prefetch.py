"""The record a hook call assesses: the draft orders, then what the prefetch holds, each resource once."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ketamine_cds import load_knowledge
from ketamine_cds.service.prefetch import applies, record_resources, render, templates


def searchset(*resources: dict[str, Any], base: str = "https://ehr.example/fhir") -> dict[str, Any]:
    entries = [
        {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}" if "id" in r else None, "resource": r}
        for r in resources
    ]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def test_draft_orders_come_first_and_win_over_a_prefetched_copy() -> None:
    draft = {"resourceType": "MedicationRequest", "id": "k1", "status": "draft", "note": [{"text": "new"}]}
    stored = {"resourceType": "MedicationRequest", "id": "k1", "status": "active"}
    record = record_resources({"ketamineRequests": searchset(stored)}, [(None, draft)])
    assert record == [(None, draft)]


def test_a_resource_found_by_two_searches_is_read_once() -> None:
    weight = {"resourceType": "Observation", "id": "w1", "status": "final"}
    other = {"resourceType": "Observation", "id": "w2", "status": "final"}
    record = record_resources({"weights": searchset(weight), "pregnancyStatus": searchset(weight, other)}, [])
    assert [r for _, r in record] == [weight, other]
    assert record[0][0] == "https://ehr.example/fhir/Observation/w1"


def test_resources_without_id_are_kept_and_informational_outcomes_left_out() -> None:
    nameless = {"resourceType": "Condition", "code": {"text": "pain"}}
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "x"}]}
    patient = {"resourceType": "Patient", "id": "p1"}
    record = record_resources(
        {"patient": patient, "conditions": searchset(nameless, nameless, outcome), "encounter": None}, []
    )
    assert [r for _, r in record] == [patient, nameless, nameless]


_FIELD_VALUES = st.one_of(st.none(), st.just(""), st.integers(), st.text(min_size=1, max_size=12))


@given(patient=_FIELD_VALUES, encounter=_FIELD_VALUES, user=_FIELD_VALUES)
def test_a_template_applies_exactly_when_it_renders(patient: Any, encounter: Any, user: Any) -> None:
    fields = (("patientId", patient), ("encounterId", encounter), ("userId", user))
    context = {key: value for key, value in fields if value is not None}  # None: the field is absent
    for template in templates(load_knowledge()).values():
        assert applies(template, context) == (render(template, context) is not None)
    assert applies("Encounter?_id={{context.encounterId}}", context) == (
        isinstance(encounter, str) and encounter != ""
    )
