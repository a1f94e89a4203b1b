"""patient-view, on the application in this process: a chart with a running ketamine infusion, new
contraindications, follow-up after an IV course; nothing for a chart without ketamine; never an
interruption."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import InProcessClient, in_process
from fhir_stub import (
    SNOMED,
    Case,
    FhirStub,
    Json,
    authorization,
    concept,
    condition,
    encounter,
    hook_request,
    ketamine,
    patient,
    planned_procedure,
    quantity,
    running,
    templates_in,
    topics,
    weight,
)

VIEW = "/cds-services/ketamine-patient-view"
CRPS = concept(SNOMED, "128200000", "Complex regional pain syndrome")
TODAY = dt.date.today()


def days_ago(days: int) -> str:
    return (TODAY - dt.timedelta(days=days)).isoformat()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("patient-view")


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[InProcessClient]:
    with in_process(data_dir) as c:
        yield c


@pytest.fixture(scope="module")
def view_templates(client: InProcessClient) -> dict[str, str]:
    return templates_in(client.get("/cds-services").json(), "patient-view")


WRITTEN = days_ago(10)  # when the running order was written (every date is relative to today)


def running_infusion(rate: Json, written: str = WRITTEN, oid: str = "run") -> Json:
    order = ketamine(oid=oid, rate=rate, status="active")
    order["authoredOn"] = written
    return order


def ward(*extra: Json, kg: float | str = 70) -> list[Json]:
    return [patient(), weight(kg), planned_procedure(), *encounter(False), *extra]


def view(
    client: InProcessClient, record: list[Json], templates: dict[str, str], **extra: Any
) -> httpx.Response:
    body = Case(record, [], encounter_id="e1").request("patient-view", templates, **extra)
    return client.post(VIEW, json=body)


def cards(response: httpx.Response) -> list[Json]:
    assert response.status_code == 200, response.text
    found: list[Json] = response.json()["cards"]
    assert all(c["indicator"] in ("info", "warning") for c in found)  # never an interruption
    assert not any("overrideReasons" in c or "suggestions" in c for c in found)
    return found


def summaries(response: httpx.Response) -> list[str]:
    return [c["summary"] for c in cards(response)]


def recorded(resource: Json, when: str) -> Json:
    return {**resource, "recordedDate": when}


# --- nothing to say ------------------------------------------------------------------------------------


def test_a_chart_without_ketamine_gets_nothing_and_nothing_else_is_read(client: InProcessClient) -> None:
    with running(FhirStub([patient(), weight(70), condition("58214004", "Schizophrenia")])) as stub:
        body = hook_request("patient-view", [], fhirServer=stub.base, fhirAuthorization=authorization())
        assert client.post(VIEW, json=body).json() == {"cards": []}
    assert sorted(p.split("?")[0] for p in stub.paths()) == [
        "/fhir/MedicationAdministration",
        "/fhir/MedicationRequest",
    ]


def test_an_old_or_stopped_ketamine_order_gets_nothing(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    old = ketamine(oid="old", rate=quantity("0.35", "mg/kg/h"), status="completed")
    old.update(authoredOn=days_ago(200), reasonCode=[CRPS])
    stopped = ketamine(oid="stopped", rate=quantity(2, "mg/kg/h"), status="stopped")
    assert view(client, ward(old, stopped), view_templates).json() == {"cards": []}


def test_412_only_when_the_ketamine_orders_cannot_be_read(
    client: InProcessClient, view_templates: dict[str, str], data_dir: Path
) -> None:
    body = Case(ward(running_infusion(quantity(2, "mg/kg/h"))), [], encounter_id="e1").request(
        "patient-view", view_templates
    )
    del body["prefetch"]["ketamineRequests"]
    response = client.post(VIEW, json=body)
    assert response.status_code == 412 and response.json()["missingPrefetch"] == ["ketamineRequests"]
    assert "ketamine orders could not be read" in response.json()["error"]
    with sqlite3.connect(data_dir / "ketamine-cds.sqlite3") as db:
        rows = db.execute(
            "SELECT verdict, completeness FROM assessments WHERE hook_instance = ?", (body["hookInstance"],)
        ).fetchall()
    assert rows == [(None, "precondition-failed")]


# --- the running infusion --------------------------------------------------------------------------------


def test_a_running_infusion_over_the_limit_is_a_warning_and_within_it_information(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    (over,) = cards(view(client, ward(running_infusion(quantity(2, "mg/kg/h"))), view_templates))
    assert over["indicator"] == "warning"
    assert over["summary"] == (
        "Infusion 2 mg/kg/h (140 mg/h) is over the 1 mg/kg/h limit outside ICU: max 70 mg/h"
    )
    assert over["detail"].startswith(f"**Active ketamine order** (written {WRITTEN})")
    assert "body weight 70 kg" in over["detail"] and "outside intensive care" in over["detail"]
    assert over["source"]["topic"]["code"] == "dose-infusion-limit"
    (within,) = cards(view(client, ward(running_infusion(quantity("0.5", "mg/kg/h"))), view_templates))
    assert within["indicator"] == "info" and "is within the 1 mg/kg/h limit" in within["summary"]


def test_the_running_rate_is_checked_against_the_weight_recorded_now(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    """60 mg/h was 1 mg/kg/h for the 60 kg the patient weighed; at 50 kg now it is 1.2 mg/kg/h."""
    before, now = weight(60, when=days_ago(30)), weight(50, oid="w-now", when=days_ago(1))
    infusion = running_infusion(quantity(60, "mg/h"))
    record = [patient(), planned_procedure(), *encounter(False), before, now, infusion]
    found = cards(view(client, record, view_templates))
    (over,) = [c for c in found if "1.2 mg/kg/h" in c["summary"]]
    assert over["indicator"] == "warning" and over["source"]["topic"]["code"] == "dose-infusion-limit"


def test_in_intensive_care_the_infusion_limit_does_not_apply(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    infusion = running_infusion(quantity(2, "mg/kg/h"))
    record = [patient(), weight(70), planned_procedure(), *encounter(True), infusion]
    found = cards(view(client, record, view_templates))
    assert {c["indicator"] for c in found} == {"info"}
    assert all("in intensive care" in c["detail"] for c in found)


# --- contraindications recorded since it was ordered ------------------------------------------------------


def test_a_contraindication_recorded_after_the_order_is_a_warning(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    infusion = running_infusion(quantity("0.5", "mg/kg/h"), written=f"{WRITTEN}T08:00:00Z")
    new = recorded(condition("58214004", "Schizophrenia"), days_ago(9))
    found = cards(view(client, ward(new, infusion), view_templates))
    assert topics(found) == ["contra-psychosis", "dose-infusion-limit"]  # the warning first
    assert found[0]["indicator"] == "warning" and found[0]["detail"].startswith("**New since the active")
    assert found[1]["summary"] == "Infusion 0.5 mg/kg/h (35 mg/h) is within the 1 mg/kg/h limit"


def test_a_contraindication_known_when_ordering_is_not_repeated(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    """It was shown at signing (and overridden there, or the order would not be running)."""
    infusion = running_infusion(quantity("0.5", "mg/kg/h"), written=f"{WRITTEN}T08:00:00Z")
    known = recorded(condition("58214004", "Schizophrenia"), f"{days_ago(14)}T10:00:00+01:00")
    assert "contra-psychosis" not in topics(cards(view(client, ward(known, infusion), view_templates)))


@pytest.mark.parametrize("when", [None, WRITTEN, WRITTEN[:7], "not a date"])
def test_a_contraindication_not_known_to_precede_the_order_counts_as_new(
    client: InProcessClient, view_templates: dict[str, str], when: str | None
) -> None:
    """No date, the same day without a time, a month that holds the order: it may be new, so it is shown."""
    infusion = running_infusion(quantity("0.5", "mg/kg/h"), written=f"{WRITTEN}T08:00:00Z")
    psychosis = condition("58214004", "Schizophrenia")
    if when is not None:
        psychosis = recorded(psychosis, when)
    assert "contra-psychosis" in topics(cards(view(client, ward(psychosis, infusion), view_templates)))


def test_a_pregnancy_reported_since_the_order_is_new(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    pregnant: Json = {
        "resourceType": "Observation",
        "id": "preg",
        "status": "final",
        "code": concept("http://loinc.org", "82810-3", "Pregnancy status"),
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": days_ago(5),
        "valueCodeableConcept": concept(SNOMED, "77386006", "Pregnant"),
    }
    found = cards(view(client, ward(pregnant, running_infusion(quantity("0.5", "mg/kg/h"))), view_templates))
    assert topics(found) == ["contra-pregnancy", "dose-infusion-limit"]


# --- follow-up after an IV course ---------------------------------------------------------------------


def _course(reason: Json | None, written: str, rate: Json | None = None) -> Json:
    course = ketamine(oid="course", rate=rate or quantity("0.35", "mg/kg/h"), status="completed")
    course["authoredOn"] = written
    if reason is not None:
        course["reasonCode"] = [reason]
    return course


def test_after_a_recent_iv_infusion_course_for_chronic_pain_the_follow_up_is_shown(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    found = cards(view(client, [patient(), weight(70), _course(CRPS, days_ago(10))], view_templates))
    assert set(topics(found)) == {"followup-oral", "followup-intranasal"}
    lead = "**After the IV ketamine infusion course** for complex regional pain"
    assert all(lead in c["detail"] for c in found)
    assert not any("Assessment of this order" in c["detail"] for c in found)  # no order is being assessed
    assert [c["indicator"] for c in found] == ["warning", "info", "info"]  # the oral abuse caution first


@pytest.mark.parametrize(
    "course",
    [
        _course(None, days_ago(10)),  # for a planned surgery: an acute use, no follow-up statement
        _course(CRPS, days_ago(120)),  # not recent
        _course(CRPS, days_ago(10)) | {"dosageInstruction": [{"route": {"text": "IV"}}]},  # no rate
    ],
    ids=["perioperative", "long-ago", "not-an-infusion"],
)
def test_no_follow_up_after_other_courses(
    client: InProcessClient, view_templates: dict[str, str], course: Json
) -> None:
    record = [patient(), weight(70), planned_procedure(), course]
    assert view(client, record, view_templates).json() == {"cards": []}


# --- what could not be read -----------------------------------------------------------------------------


def test_a_chart_read_with_parts_missing_says_which(
    client: InProcessClient, view_templates: dict[str, str], data_dir: Path
) -> None:
    body = Case(ward(running_infusion(quantity(60, "mg/h"))), [], encounter_id="e1").request(
        "patient-view", view_templates
    )
    del body["prefetch"]["weights"], body["prefetch"]["conditions"]
    response = client.post(VIEW, json=body)
    found = {c["summary"]: c for c in cards(response)}
    assert "Checked without part of the record: conditions, body weight could not be read" in found
    assert any("no body weight" in s for s in found)
    with sqlite3.connect(data_dir / "ketamine-cds.sqlite3") as db:
        (row,) = db.execute(
            "SELECT completeness, unread FROM assessments WHERE hook_instance = ?", (body["hookInstance"],)
        ).fetchall()
    assert row[0] == "partial" and json.loads(row[1]) == ["conditions", "weight"]


def test_everything_from_the_fhir_server_gives_the_prefetched_cards(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    record = [*ward(running_infusion(quantity(2, "mg/kg/h"))), condition("58214004", "Schizophrenia")]
    prefetched = summaries(view(client, record, view_templates))
    with running(FhirStub(record)) as stub:
        body = hook_request(
            "patient-view", [], encounter_id="e1", fhirServer=stub.base, fhirAuthorization=authorization()
        )
        fetched = summaries(client.post(VIEW, json=body))
    assert fetched == prefetched and len(fetched) == 2


def test_a_running_dose_with_two_weights_at_one_time_that_disagree_says_the_weight_is_not_used(
    client: InProcessClient, view_templates: dict[str, str]
) -> None:
    # 60 mg/h is within 1 mg/kg/h for 70 kg and six times over it for 10 kg: checked against neither
    when = TODAY.isoformat() + "T08:00:00Z"
    record = ward(
        running_infusion(quantity(60, "mg/h")), weight(10, oid="a", when=when), weight(70, oid="b", when=when)
    )
    found = cards(view(client, record, view_templates))
    [said] = [c for c in found if c["summary"].startswith("Body weight not used")]
    assert said["indicator"] == "warning" and "10 kg and 70 kg" in said["summary"]
    assert all(
        "no usable body weight (two body weights" in c["detail"]
        for c in found
        if "checked against" in c["detail"]
    )
