"""Data the prefetch did not bring is read from the client's FHIR server (a stub on loopback), with the
request's bearer token (or none, from a server the operator lists: test_fhir_servers.py). What cannot be had
is passed on as unknown and named in a card; only a patient that cannot be read at all is a 412 (CDS Hooks
2.0, Prefetch Template). Once the server was contacted, every failure reads the same."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import Server, free_port
from fhir_stub import (
    TOKEN,
    Case,
    FhirStub,
    Json,
    authorization,
    condition,
    encounter,
    hook_request,
    ketamine,
    patient,
    planned_procedure,
    prefetch_for,
    quantity,
    running,
    topics,
    weight,
)

SIGN = "/cds-services/ketamine-order-sign"


def record(*, contained: bool = True) -> list[Json]:
    """A contraindication (schizophrenia), an infusion over the limit outside ICU, a painful surgery.
    ``contained``: the ward Location inside the Encounter, else a resource of its own."""
    return [
        patient(),
        weight(70),
        planned_procedure(),
        condition("58214004", "Schizophrenia"),
        *encounter(False, contained=contained),
        weight(65, oid="w0", when="2020-01-01"),
    ]


ORDER = ketamine(rate=quantity(2, "mg/kg/h"))


def summaries(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(c["summary"] for c in response.json()["cards"])


def test_everything_fetched_gives_the_same_cards_as_everything_prefetched(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    case = Case(record(), [ORDER], encounter_id="e1")
    prefetched = summaries(client.post(SIGN, json=case.request("order-sign", templates)))
    assert len(prefetched) == 2  # contra-psychosis and the infusion limit
    with running(FhirStub(record())) as stub:
        body = hook_request(
            "order-sign", [ORDER], encounter_id="e1", fhirServer=stub.base, fhirAuthorization=authorization()
        )
        fetched = summaries(client.post(SIGN, json=body))
    assert fetched == prefetched
    assert all(auth == f"Bearer {TOKEN}" for _, auth in stub.requests)
    paths = stub.paths()
    assert "/fhir/Patient/p1" in paths and "/fhir/Encounter/e1" in paths  # instance reads
    assert any(p.startswith("/fhir/Condition?patient=p1") for p in paths)
    assert len(paths) == len(templates)  # every template, once


def test_the_location_an_encounter_references_is_read_from_the_fhir_server(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    """The recommended prefetch subset has no _include: the Encounter comes by an instance read, and the
    Location it names is read afterwards, by id."""
    resources = record(contained=False)
    case = Case(resources, [ORDER], encounter_id="e1")
    prefetch = prefetch_for(templates, resources, case.context)
    with running(FhirStub(resources)) as stub:
        body = hook_request(
            "order-sign",
            [ORDER],
            prefetch=prefetch,
            encounter_id="e1",
            fhirServer=stub.base,
            fhirAuthorization=authorization(),
        )
        cards = summaries(client.post(SIGN, json=body))
    assert stub.paths() == ["/fhir/Location/e1-loc"]
    assert "Infusion 2 mg/kg/h (140 mg/h) is over the 1 mg/kg/h limit outside ICU: max 70 mg/h" in cards
    assert not any(c.startswith("Checked without") for c in cards)


def test_a_location_that_cannot_be_read_leaves_the_setting_unknown_and_is_named(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    resources = record(contained=False)
    case = Case(resources, [ORDER], encounter_id="e1")
    body = case.request("order-sign", templates)  # no fhirServer: the Location cannot be had
    response = client.post(SIGN, json=body)
    answered = response.json()["cards"]
    assert "contra-psychosis" in topics(answered)
    (over,) = [c for c in answered if c["source"].get("topic", {}).get("code") == "dose-infusion-limit"]
    assert over["indicator"] in ("critical", "warning")  # the infusion limit still applies: it interrupts
    cards = {c["summary"]: c for c in answered}
    unread = cards["Checked without part of the record: encounter location could not be read"]
    assert unread["indicator"] == "warning" and "intensive care is not known" in unread["detail"]


def test_only_the_missing_keys_are_fetched(client: httpx.Client, templates: dict[str, str]) -> None:
    case = Case(record(), [ORDER], encounter_id="e1")
    prefetch = prefetch_for(templates, case.record, case.context, skip=["conditions", "encounter"])
    with running(FhirStub(record())) as stub:
        body = hook_request(
            "order-sign",
            [ORDER],
            prefetch=prefetch,
            encounter_id="e1",
            fhirServer=stub.base,
            fhirAuthorization=authorization(),
        )
        cards = summaries(client.post(SIGN, json=body))
    assert "Relative contraindication: Schizophrenia" in cards  # the Condition came from the FHIR server
    assert sorted(p.split("?")[0] for p in stub.paths()) == ["/fhir/Condition", "/fhir/Encounter/e1"]


def _signed_with_conditions_from(
    client: httpx.Client, templates: dict[str, str], conditions: Callable[[str], Json]
) -> list[str]:
    """Sign with everything prefetched except ``conditions`` (made from the stub's base URL): the cards, once
    the service has read the Condition search, and only it, from the FHIR server."""
    case = Case(record(), [ORDER], encounter_id="e1")
    prefetch = prefetch_for(templates, case.record, case.context)
    with running(FhirStub(record())) as stub:
        prefetch["conditions"] = conditions(stub.base)
        body = hook_request(
            "order-sign",
            [ORDER],
            prefetch=prefetch,
            encounter_id="e1",
            fhirServer=stub.base,
            fhirAuthorization=authorization(),
        )
        cards = summaries(client.post(SIGN, json=body))
    assert [p.split("?")[0] for p in stub.paths()] == ["/fhir/Condition"]
    return cards


def _first_of_two_pages(next_url: str) -> Json:
    """A searchset page with no entries and a link to the next page."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": next_url}],
        "entry": [],
    }


def test_an_operation_outcome_in_the_prefetch_is_fetched_again(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    assert "Relative contraindication: Schizophrenia" in _signed_with_conditions_from(
        client, templates, lambda _: failed
    )


def test_search_pages_are_followed(client: httpx.Client) -> None:
    conditions = [condition("38341003", "Hypertensive disorder", cid=f"c{i}") for i in range(5)]
    resources = [*record(), *conditions]
    with running(FhirStub(resources, page_size=2)) as stub:
        body = hook_request(
            "order-sign", [ORDER], encounter_id="e1", fhirServer=stub.base, fhirAuthorization=authorization()
        )
        assert "Relative contraindication: Schizophrenia" in summaries(client.post(SIGN, json=body))
    assert any("_page=2" in p for p in stub.paths())  # 6 conditions, 2 per page


def test_the_latest_weight_is_used_from_a_fetched_search(client: httpx.Client) -> None:
    order = ketamine(dose=quantity(30, "mg"))  # 0.43 mg/kg at 70 kg (latest), 0.46 at 65 kg (2020)
    with running(FhirStub(record())) as stub:
        body = hook_request("order-sign", [order], fhirServer=stub.base, fhirAuthorization=authorization())
        cards = summaries(client.post(SIGN, json=body))
    assert "Bolus 30 mg (0.43 mg/kg) is over the 0.35 mg/kg limit: max 24.5 mg" in cards


def test_a_prefetch_bundle_with_a_next_page_is_read_whole_from_the_fhir_server(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    # page 1 of 2 is empty; the schizophrenia is on page 2
    cards = _signed_with_conditions_from(
        client, templates, lambda base: _first_of_two_pages(f"{base}/Condition?patient=p1&_page=2")
    )
    assert "Relative contraindication: Schizophrenia" in cards


def test_a_paginated_prefetch_without_a_fhir_server_is_answered_without_it_and_says_so(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    case = Case(record(), [ORDER], encounter_id="e1")
    prefetch = prefetch_for(templates, case.record, case.context)
    prefetch["conditions"] = _first_of_two_pages("https://ehr.example/fhir/Condition?page=2")
    response = client.post(
        SIGN, json=hook_request("order-sign", [ORDER], prefetch=prefetch, encounter_id="e1")
    )
    cards = summaries(response)
    assert "contra-psychosis" not in topics(response.json()["cards"])  # page 2 was never read...
    assert "Checked without part of the record: conditions could not be read" in cards  # ...and it says so
    assert any(c.startswith("Infusion 2 mg/kg/h (140 mg/h) is over the 1 mg/kg/h limit") for c in cards)


@pytest.mark.parametrize("left_out", ["ketamineAdministrations", "serviceRequests", "encounter"])
def test_a_key_the_bolus_check_does_not_need_is_no_reason_to_withhold_it(
    client: httpx.Client, templates: dict[str, str], left_out: str
) -> None:
    """Today's EHRs leave keys out: the bolus check is answered, silently for data it does not depend on."""
    order = ketamine(dose=quantity(30, "mg"))  # 0.43 mg/kg at 70 kg
    case = Case(record(), [order], encounter_id="e1")
    prefetch = prefetch_for(templates, case.record, case.context, skip=[left_out])
    response = client.post(
        SIGN, json=hook_request("order-sign", [order], prefetch=prefetch, encounter_id="e1")
    )
    assert response.status_code == 200
    assert sorted(topics(response.json()["cards"])) == ["contra-psychosis", "dose-bolus-limit"]
    select = client.post(
        "/cds-services/ketamine-order-select",
        json=hook_request("order-select", [order], prefetch=prefetch, encounter_id="e1"),
    )
    assert any(c.startswith("Checked without part of the record") for c in summaries(select))


# --- 412 --------------------------------------------------------------------------------------------


def _precondition_failed(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 412, response.text
    error = response.json()
    assert reason in error["error"]
    assert error["missingPrefetch"]


def test_412_when_prefetch_is_missing_and_there_is_no_fhir_server(client: httpx.Client) -> None:
    _precondition_failed(client.post(SIGN, json=hook_request("order-sign", [ORDER])), "no fhirServer")


def test_412_when_the_patient_is_left_out_and_there_is_no_fhir_server(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    case = Case(record(), [ORDER])
    prefetch = prefetch_for(templates, case.record, case.context, skip=["patient", "conditions"])
    response = client.post(SIGN, json=hook_request("order-sign", [ORDER], prefetch=prefetch))
    _precondition_failed(response, "no fhirServer")
    assert response.json()["missingPrefetch"] == ["conditions", "patient"]


def test_without_fhir_server_a_missing_key_is_named_not_refused(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    case = Case(record(), [ORDER])
    prefetch = prefetch_for(templates, case.record, case.context, skip=["conditions"])
    cards = summaries(client.post(SIGN, json=hook_request("order-sign", [ORDER], prefetch=prefetch)))
    assert "Checked without part of the record: conditions could not be read" in cards


def test_412_when_there_is_a_fhir_server_but_no_token(client: httpx.Client) -> None:
    with running(FhirStub(record())) as stub:
        response = client.post(SIGN, json=hook_request("order-sign", [ORDER], fhirServer=stub.base))
    _precondition_failed(response, "no fhirAuthorization")
    assert stub.requests == []


def test_412_when_the_token_has_expired(client: httpx.Client) -> None:
    with running(FhirStub(record())) as stub:
        body = hook_request(
            "order-sign", [ORDER], fhirServer=stub.base, fhirAuthorization=authorization(expires_in=0)
        )
        response = client.post(SIGN, json=body)
    _precondition_failed(response, "expired")
    assert stub.requests == []  # an expired token is never presented


def test_412_when_the_token_expires_while_reading(client: httpx.Client) -> None:
    with running(FhirStub(record(), delay_s=1.5)) as stub:
        body = hook_request(
            "order-sign", [ORDER], fhirServer=stub.base, fhirAuthorization=authorization(expires_in=1)
        )
        response = client.post(SIGN, json=body)
    _precondition_failed(response, "")
    assert "expired" in response.json()["error"] or "in time" in response.json()["error"]


NOT_READ = "the patient could not be read: the FHIR server could not be read"


def test_412_when_the_fhir_server_is_down(client: httpx.Client) -> None:
    port = free_port()  # nothing listens here
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    body = hook_request(
        "order-sign", [ORDER], fhirServer=f"http://127.0.0.1:{port}/fhir", fhirAuthorization=authorization()
    )
    _precondition_failed(client.post(SIGN, json=body), NOT_READ)


@pytest.mark.parametrize("status", [500, 503, 403, 302])
def test_412_when_the_fhir_server_fails(client: httpx.Client, status: int) -> None:
    with running(FhirStub(record(), fail_status=status)) as stub:
        body = hook_request("order-sign", [ORDER], fhirServer=stub.base, fhirAuthorization=authorization())
        _precondition_failed(client.post(SIGN, json=body), NOT_READ)


def test_412_when_the_fhir_server_refuses_the_token(client: httpx.Client) -> None:
    with running(FhirStub(record())) as stub:
        body = hook_request(
            "order-sign", [ORDER], fhirServer=stub.base, fhirAuthorization=authorization(token="wrong-token")
        )
        _precondition_failed(client.post(SIGN, json=body), NOT_READ)


def test_a_refused_connection_a_redirect_and_a_page_that_is_not_json_read_the_same(
    client: httpx.Client, dev_server: Server
) -> None:
    """What a caller learns through fhirServer is "could not be read", never what listens at an address."""
    answers: list[str] = []
    closed = free_port()
    targets = [
        f"http://127.0.0.1:{closed}/fhir",  # nothing listens
        f"{dev_server.url}/statements",  # an HTML page, 200
        f"{dev_server.url}/cds-services",  # JSON, but not FHIR
        f"{dev_server.url}/nothing-here",  # 404 JSON
    ]
    with running(FhirStub(record(), fail_status=302)) as redirecting:
        targets.append(redirecting.base)
        for target in targets:
            body = hook_request("order-sign", [ORDER], fhirServer=target, fhirAuthorization=authorization())
            response = client.post(SIGN, json=body)
            assert response.status_code == 412
            answers.append(response.json()["error"])
    assert len(set(answers)) == 1 and NOT_READ in answers[0]


def test_the_token_is_never_sent_over_plain_http_off_the_machine(client: httpx.Client) -> None:
    body = hook_request(
        "order-sign", [ORDER], fhirServer="http://ehr.example/fhir", fhirAuthorization=authorization()
    )
    _precondition_failed(client.post(SIGN, json=body), "must use https")


def test_no_fetch_and_no_412_when_no_ketamine_is_ordered(client: httpx.Client) -> None:
    with running(FhirStub(record())) as stub:
        body = hook_request(
            "order-sign",
            [
                {
                    "resourceType": "MedicationRequest",
                    "id": "x",
                    "status": "draft",
                    "intent": "order",
                    "medicationCodeableConcept": {"text": "aspirin"},
                    "subject": {"reference": "Patient/p1"},
                }
            ],
            fhirServer=stub.base,
            fhirAuthorization=authorization(),
        )
        response = client.post(SIGN, json=body)
    assert response.status_code == 200 and response.json() == {"cards": []}
    assert stub.requests == []


@pytest.mark.parametrize(
    "server", ["http://[::1", "http://127.0.0.1:abc", "https://a..b/fhir", "https://xn--a.com/fhir"]
)
def test_412_when_the_fhir_server_url_is_malformed(client: httpx.Client, server: str) -> None:
    body = hook_request("order-sign", [ORDER], fhirServer=server, fhirAuthorization=authorization())
    _precondition_failed(client.post(SIGN, json=body), "")


def test_a_token_lifetime_beyond_any_clock_is_read_not_crashed_on(client: httpx.Client) -> None:
    port = free_port()  # nothing listens here
    body = hook_request(
        "order-sign",
        [ORDER],
        fhirServer=f"http://127.0.0.1:{port}/fhir",
        fhirAuthorization=authorization(expires_in=10**400),
    )
    _precondition_failed(client.post(SIGN, json=body), NOT_READ)


# --- the audit trail says how complete each answer was ---------------------------------------------------


def _audit_rows(server: Server, hook_instance: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.data_dir / "ketamine-cds.sqlite3") as db:
        return db.execute(
            "SELECT verdict, completeness, unread, "
            "(SELECT count(*) FROM cards c WHERE c.assessment_id = a.id) "
            "FROM assessments a WHERE hook_instance = ?",
            (hook_instance,),
        ).fetchall()


def test_full_partial_and_refused_answers_are_each_recorded(
    client: httpx.Client, templates: dict[str, str], dev_server: Server
) -> None:
    case = Case(record(contained=False), [ORDER], encounter_id="e1")
    full = Case(record(), [ORDER], encounter_id="e1").request("order-sign", templates)
    assert client.post(SIGN, json=full).status_code == 200
    partial = case.request("order-sign", templates)
    del partial["prefetch"]["conditions"]
    assert client.post(SIGN, json=partial).status_code == 200
    refused = hook_request("order-sign", [ORDER], encounter_id="e1")
    assert client.post(SIGN, json=refused).status_code == 412
    assert _audit_rows(dev_server, full["hookInstance"]) == [("contraindicated", "full", "[]", 2)]
    ((verdict, *rest),) = _audit_rows(dev_server, partial["hookInstance"])
    assert verdict is not None and rest == ["partial", '["conditions", "location"]', 2]  # infusion, unread
    (row,) = _audit_rows(dev_server, refused["hookInstance"])
    assert row[:2] == (None, "precondition-failed") and row[3] == 0
    assert "patient" in json.loads(row[2])


def test_reads_from_the_fhir_server_log_no_identifier(client: httpx.Client, dev_server: Server) -> None:
    """The log names the prefetch key or the type of a referenced resource, never an id or a URL."""
    pid, eid = "pid-never-in-the-log", "enc-never-in-the-log"
    resources = [patient(pid), weight(70, pid), *encounter(False, pid=pid, eid=eid, contained=False)]
    order = ketamine(pid=pid, rate=quantity(2, "mg/kg/h"))
    order["encounter"] = {"reference": f"Encounter/{eid}"}
    with running(FhirStub(resources, fail_paths={"/Location/": 500})) as stub:
        body = hook_request(
            "order-sign", [order], pid=pid, fhirServer=stub.base, fhirAuthorization=authorization()
        )
        response = client.post(SIGN, json=body)
    assert "Checked without part of the record: encounter location could not be read" in summaries(response)
    log = dev_server.log_text()
    assert "FHIR read Location (by reference) failed: HTTP 500" in log and "not read: location" in log
    assert pid not in log and eid not in log and stub.base not in log
