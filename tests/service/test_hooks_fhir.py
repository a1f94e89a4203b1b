"""Data the prefetch did not bring is read from the client's FHIR server (a stub on loopback), with the
request's bearer token; when it cannot be had the service answers 412 (CDS Hooks 2.0, Prefetch Template)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest
from conftest import free_port
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
    weight,
)

SIGN = "/cds-services/ketamine-order-sign"


def record() -> list[Json]:
    """A contraindication (schizophrenia), an infusion over the limit outside ICU, a painful surgery."""
    return [
        patient(),
        weight(70),
        planned_procedure(),
        condition("58214004", "Schizophrenia"),
        *encounter(False),
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
    assert "/fhir/Patient/p1" in paths
    assert any(p.startswith("/fhir/Encounter?_id=e1&_include=Encounter:location") for p in paths)
    assert any(p.startswith("/fhir/Condition?patient=p1") for p in paths)
    assert len(paths) == len(templates)  # every template, once


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
    assert sorted(p.split("?")[0] for p in stub.paths()) == ["/fhir/Condition", "/fhir/Encounter"]


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


def test_a_paginated_prefetch_without_a_fhir_server_is_412(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    case = Case(record(), [ORDER], encounter_id="e1")
    prefetch = prefetch_for(templates, case.record, case.context)
    prefetch["conditions"] = _first_of_two_pages("https://ehr.example/fhir/Condition?page=2")
    response = client.post(
        SIGN, json=hook_request("order-sign", [ORDER], prefetch=prefetch, encounter_id="e1")
    )
    _precondition_failed(response, "no fhirServer")
    assert response.json()["missingPrefetch"] == ["conditions"]


# --- 412 --------------------------------------------------------------------------------------------


def _precondition_failed(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 412, response.text
    error = response.json()
    assert reason in error["error"]
    assert error["missingPrefetch"]


def test_412_when_prefetch_is_missing_and_there_is_no_fhir_server(client: httpx.Client) -> None:
    _precondition_failed(client.post(SIGN, json=hook_request("order-sign", [ORDER])), "no fhirServer")


def test_412_when_a_prefetch_key_is_missing_and_there_is_no_fhir_server(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    case = Case(record(), [ORDER])
    prefetch = prefetch_for(templates, case.record, case.context, skip=["conditions"])
    response = client.post(SIGN, json=hook_request("order-sign", [ORDER], prefetch=prefetch))
    _precondition_failed(response, "no fhirServer")
    assert response.json()["missingPrefetch"] == ["conditions"]


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


def test_412_when_the_fhir_server_is_down(client: httpx.Client) -> None:
    port = free_port()  # nothing listens here
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    body = hook_request(
        "order-sign", [ORDER], fhirServer=f"http://127.0.0.1:{port}/fhir", fhirAuthorization=authorization()
    )
    _precondition_failed(client.post(SIGN, json=body), "could not be reached")


@pytest.mark.parametrize("status", [500, 503, 403])
def test_412_when_the_fhir_server_fails(client: httpx.Client, status: int) -> None:
    with running(FhirStub(record(), fail_status=status)) as stub:
        body = hook_request("order-sign", [ORDER], fhirServer=stub.base, fhirAuthorization=authorization())
        _precondition_failed(client.post(SIGN, json=body), f"answered {status}")


def test_412_when_the_fhir_server_refuses_the_token(client: httpx.Client) -> None:
    with running(FhirStub(record())) as stub:
        body = hook_request(
            "order-sign", [ORDER], fhirServer=stub.base, fhirAuthorization=authorization(token="wrong-token")
        )
        _precondition_failed(client.post(SIGN, json=body), "answered 401")


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
    _precondition_failed(client.post(SIGN, json=body), "could not be reached")
