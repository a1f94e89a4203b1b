"""The record a hook call assesses: the draft orders, then what the prefetch holds, each resource once."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketamine_cds import load_knowledge
from ketamine_cds.service.prefetch import (
    applies,
    patient_view_templates,
    record_resources,
    render,
    templates,
)


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


# CDS Hooks 2.0, "Prefetch query restrictions": instance reads; type searches by the patient reference;
# token parameters with equality (a comma: any of the values); _count; _sort (for most recent and first).
_READ = re.compile(r"[A-Z][A-Za-z]+/\{\{context\.[A-Za-z]+\}\}")
_TOKEN_PARAMETERS = {"code", "status"}
_TOKEN_VALUE = re.compile(r"(?:[^|,:]+|[a-z]+:[^|,]+\|[^|,]+)(?:,(?:[^|,:]+|[a-z]+:[^|,]+\|[^|,]+))*")


def _in_subset(template: str) -> bool:
    path, _, query = template.partition("?")
    if not query:
        return _READ.fullmatch(path) is not None
    if not re.fullmatch(r"[A-Z][A-Za-z]+", path):
        return False
    seen: set[str] = set()
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True):
        if name in seen and name != "code":
            return False
        seen.add(name)
        if name == "patient":
            ok = value == "{{context.patientId}}"
        elif name == "_count":
            ok = value.isdigit()
        elif name == "_sort":
            ok = re.fullmatch(r"-?[a-z]+", value) is not None
        else:  # no modifiers (name:missing), no chains (subject.name), no _include or _has
            ok = name in _TOKEN_PARAMETERS and _TOKEN_VALUE.fullmatch(value) is not None
        if not ok:
            return False
    return "patient" in seen


@pytest.mark.parametrize("hook", ["order", "patient-view"])
def test_every_prefetch_template_is_in_the_recommended_subset(hook: str) -> None:
    kb = load_knowledge()
    chosen = templates(kb) if hook == "order" else patient_view_templates(kb)
    assert chosen and all(_in_subset(t) for t in chosen.values()), chosen
    assert chosen["encounter"] == "Encounter/{{context.encounterId}}"


@pytest.mark.parametrize(
    "outside",
    [
        "Encounter?_id={{context.encounterId}}&_include=Encounter:location",
        "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication",
        "Condition?patient={{context.patientId}}&code:not=1",
        "Observation?subject.name=x&patient={{context.patientId}}",
        "Observation?patient={{context.patientId}}&date=sa2020",
    ],
)
def test_the_subset_check_knows_what_is_outside(outside: str) -> None:
    assert not _in_subset(outside)
