"""The hook contract in this process (no server): discovery, the OpenAPI request bodies, every 400 with its
stable code, 404, CORS, an order-sign answer and feedback. Fast enough for every run (``-m "not slow"``);
the conformance, hardening and hook modules check the same on a real server, with much more."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import InProcessClient, in_process
from fhir_stub import hook_request, ketamine, patient, planned_procedure, prefetch_for, quantity, weight

from ketamine_cds.service.hooks import contract

SIGN = "/cds-services/ketamine-order-sign"
SELECT = "/cds-services/ketamine-order-select"
VIEW = "/cds-services/ketamine-patient-view"
FEEDBACK = SIGN + "/feedback"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessClient]:
    with in_process(tmp_path_factory.mktemp("contract")) as c:
        yield c


@pytest.fixture(scope="module")
def prefetch(client: InProcessClient) -> dict[str, Any]:
    """Every template of order-sign satisfied, as an EHR would (a search that finds nothing: null)."""
    services = client.get("/cds-services").json()["services"]
    templates = next(s for s in services if s["hook"] == "order-sign")["prefetch"]
    record = [patient(), weight(70), planned_procedure()]
    found: dict[str, Any] = prefetch_for(templates, record, {"patientId": "p1"})
    return found


def sign(**changes: Any) -> dict[str, Any]:
    body = hook_request("order-sign", [ketamine(oid="k1", dose=quantity(10, "mg"))])
    body.update(changes)
    return body


def test_discovery_lists_the_three_services(client: InProcessClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    hooks = {s["id"]: s["hook"] for s in response.json()["services"]}
    assert hooks == {
        "ketamine-order-select": "order-select",
        "ketamine-order-sign": "order-sign",
        "ketamine-patient-view": "patient-view",
    }
    assert response.headers["access-control-allow-origin"] == "*"


def test_the_openapi_request_bodies_are_the_contract_models(client: InProcessClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def body(path: str) -> dict[str, Any]:
        schema: dict[str, Any] = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return schema

    call = body("/cds-services/{service_id}")
    assert call["required"] == ["hook", "hookInstance", "context"]
    assert call["properties"]["hook"]["enum"] == ["order-select", "order-sign", "patient-view"]
    assert call["properties"]["context"]["required"] == ["patientId"]
    assert "$ref" not in str(call)  # the models' definitions inlined
    item = body("/cds-services/{service_id}/feedback")["properties"]["feedback"]["items"]
    assert item["required"] == ["card", "outcome"]
    assert item["properties"]["outcome"]["enum"] == ["accepted", "overridden"]


def test_an_order_within_the_limit_is_silent_and_one_over_it_gets_a_card(
    client: InProcessClient, prefetch: dict[str, Any]
) -> None:
    within = client.post(SIGN, json=sign(prefetch=prefetch))
    assert within.status_code == 200, within.text
    assert within.json() == {"cards": []}
    over = hook_request("order-sign", [ketamine(oid="k1", dose=quantity(2, "mg/kg"))], prefetch=prefetch)
    cards = client.post(SIGN, json=over).json()["cards"]
    assert cards and cards[0]["indicator"] == "critical"
    assert cards[0]["source"]["topic"]["code"] == "dose-bolus-limit"


def test_no_ketamine_order_is_answered_with_no_cards_at_once(client: InProcessClient) -> None:
    body = hook_request("order-sign", [{"resourceType": "MedicationRequest", "id": "o1", "status": "draft"}])
    assert client.post(SIGN, json=body).json() == {"cards": []}


def test_an_unknown_service_is_404(client: InProcessClient) -> None:
    response = client.post("/cds-services/no-such-service", json=sign())
    assert response.status_code == 404 and "no-such-service" in response.json()["error"]


def _too_many() -> dict[str, Any]:
    body = sign()
    body["context"]["draftOrders"]["entry"] *= contract.MAX_DRAFT_ORDERS + 1
    return body


def _duplicate_ids() -> dict[str, Any]:
    body = sign()
    body["context"]["draftOrders"]["entry"] *= 2
    return body


def _without(*path: str) -> dict[str, Any]:
    body = sign()
    where = body
    for key in path[:-1]:
        where = where[key]
    del where[path[-1]]
    return body


def _in_context(**changes: Any) -> dict[str, Any]:
    body = sign()
    body["context"].update(changes)
    return body


BAD_REQUESTS: list[tuple[str, Any, str, str]] = [
    # (case, body (bytes: sent as they are), code, error)
    ("empty", b"", "invalid-request", "the request body is empty; a JSON object is required"),
    ("not JSON", b"{", "not-json", "the request body is not JSON"),
    ("a key twice", b'{"hook": "order-sign", "hook": "x"}', "duplicate-key", "cannot be read"),
    ("an array", b"[]", "invalid-request", "the request body must be a JSON object"),
    ("no hook", _without("hook"), "invalid-request", "hook must be a non-empty string"),
    ("another hook", sign(hook="order-select"), "invalid-request", "answers the order-sign hook, not"),
    ("a line break", sign(hookInstance="a\nb"), "control-character", "hookInstance must not contain"),
    ("a NUL", sign(hookInstance="a\x00b"), "control-character", "hookInstance must not contain a NUL"),
    ("too long", sign(hookInstance="x" * 257), "field-too-long", "hookInstance is longer than 256"),
    (
        "a token without a server",
        sign(fhirAuthorization={"access_token": "t", "token_type": "Bearer", "expires_in": 300}),
        "invalid-request",
        "fhirServer is required when fhirAuthorization is given",
    ),
    (
        "not Bearer",
        sign(
            fhirServer="https://f",
            fhirAuthorization={"access_token": "t", "token_type": "Mac", "expires_in": 1},
        ),
        "invalid-request",
        "fhirAuthorization.token_type must be Bearer",
    ),
    (
        "a lifetime in words",
        sign(
            fhirServer="https://f",
            fhirAuthorization={"access_token": "t", "token_type": "Bearer", "expires_in": "1"},
        ),
        "invalid-request",
        "fhirAuthorization.expires_in must be an integer",
    ),
    ("no context", _without("context"), "invalid-request", "context must be a JSON object"),
    (
        "no patient",
        _without("context", "patientId"),
        "invalid-request",
        "context.patientId must be a non-empty",
    ),
    (
        "no drafts",
        _without("context", "draftOrders"),
        "invalid-request",
        "context.draftOrders must be a JSON object",
    ),
    (
        "drafts not a Bundle",
        _in_context(draftOrders={"entry": []}),
        "invalid-request",
        "context.draftOrders must be a FHIR Bundle of the draft orders",
    ),
    (
        "entries not an array",
        _in_context(draftOrders={"resourceType": "Bundle", "entry": {}}),
        "invalid-request",
        "context.draftOrders.entry must be an array",
    ),
    (
        "an entry not an object",
        _in_context(draftOrders={"resourceType": "Bundle", "entry": [5]}),
        "invalid-request",
        "context.draftOrders.entry[0] must be a JSON object",
    ),
    (
        "an entry without a resource",
        _in_context(draftOrders={"resourceType": "Bundle", "entry": [{}]}),
        "invalid-request",
        "context.draftOrders.entry[0].resource must be a FHIR resource",
    ),
    ("too many drafts", _too_many(), "too-many-draft-orders", "this service reads at most 200 draft orders"),
    ("one id twice", _duplicate_ids(), "invalid-request", "entry[1].resource: two draft MedicationRequests"),
    ("prefetch not an object", sign(prefetch=[]), "invalid-request", "prefetch must be a JSON object"),
]


@pytest.mark.parametrize(
    ("body", "code", "error"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_a_malformed_call_is_400_with_its_stable_code(
    client: InProcessClient, body: Any, code: str, error: str
) -> None:
    sent = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = client.post(SIGN, headers={"Content-Type": "application/json"}, **sent)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert error in response.json()["error"]
    assert response.headers["access-control-allow-origin"] == "*"  # CORS on errors too


def test_order_select_needs_its_selections(client: InProcessClient) -> None:
    body = hook_request("order-select", [ketamine(oid="k1", dose=quantity(10, "mg"))])
    del body["context"]["selections"]
    response = client.post(SELECT, json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("context.selections must be an array of references")


def test_a_single_draft_resource_is_read_as_a_bundle_of_one(
    client: InProcessClient, prefetch: dict[str, Any]
) -> None:
    body = sign(prefetch=prefetch)
    body["context"]["draftOrders"] = ketamine(oid="k1", dose=quantity(2, "mg/kg"))
    cards = client.post(SIGN, json=body).json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards][:1] == ["dose-bolus-limit"]


def test_patient_view_needs_no_draft_orders(client: InProcessClient) -> None:
    response = client.post(VIEW, json=hook_request("patient-view", [], prefetch={}))
    assert response.status_code in (200, 412), response.text  # never a 400: draftOrders is not read here


def test_a_cors_preflight_is_answered(client: InProcessClient) -> None:
    response = client.options(
        SIGN, headers={"Origin": "https://sandbox", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert "POST" in response.headers["access-control-allow-methods"]


def test_feedback_is_received(client: InProcessClient) -> None:
    item = {
        "card": "c1",
        "outcome": "overridden",
        "overrideReason": {
            "reason": {"code": "x", "system": "https://s"},
            "userComment": "line one\nline two",
        },
        "outcomeTimestamp": "2026-11-24T10:15:00Z",
    }
    response = client.post(FEEDBACK, json={"feedback": [item, {"card": "c2", "outcome": "accepted"}]})
    assert response.status_code == 200 and response.json() == {"received": 2}


BAD_FEEDBACK: list[tuple[str, Any, str, str]] = [
    ("not an array", {"feedback": {}}, "invalid-request", "feedback must be an array of feedback objects"),
    ("an item not an object", {"feedback": [5]}, "invalid-request", "feedback[0] must be a JSON object"),
    ("no card", {"feedback": [{"outcome": "accepted"}]}, "invalid-request", "feedback[0].card must be"),
    (
        "another outcome",
        {"feedback": [{"card": "c", "outcome": "ignored"}]},
        "invalid-request",
        "feedback[0].outcome must be accepted or overridden",
    ),
    (
        "a reason for an accepted card",
        {"feedback": [{"card": "c", "outcome": "accepted", "overrideReason": {"reason": 5}}]},
        "invalid-request",
        "feedback[0].overrideReason belongs to an overridden outcome",
    ),
    (
        "suggestions of an overridden card",
        {"feedback": [{"card": "c", "outcome": "overridden", "acceptedSuggestions": [{"id": "s"}]}]},
        "invalid-request",
        "feedback[0].acceptedSuggestions belong to an accepted outcome",
    ),
    (
        "a suggestion without id",
        {"feedback": [{"card": "c", "outcome": "accepted", "acceptedSuggestions": [{}]}]},
        "invalid-request",
        "feedback[0].acceptedSuggestions[0].id must be a non-empty string",
    ),
    (
        "a local time",
        {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:15:00+01:00"}]},
        "invalid-request",
        "feedback[0].outcomeTimestamp must be a date and time in UTC",
    ),
    (
        "a long comment",
        {"feedback": [{"card": "c", "outcome": "overridden", "overrideReason": {"userComment": "x" * 8193}}]},
        "field-too-long",
        "feedback[0].overrideReason.userComment is longer than 8192 characters",
    ),
    (
        "a code with a line break",
        {
            "feedback": [
                {
                    "card": "c",
                    "outcome": "overridden",
                    "overrideReason": {"reason": {"code": "a\nb", "system": "s"}},
                }
            ]
        },
        "control-character",
        "feedback[0].overrideReason.reason.code must not contain control characters",
    ),
]


@pytest.mark.parametrize(
    ("body", "code", "error"), [c[1:] for c in BAD_FEEDBACK], ids=[c[0] for c in BAD_FEEDBACK]
)
def test_malformed_feedback_is_400_with_its_stable_code(
    client: InProcessClient, body: Any, code: str, error: str
) -> None:
    response = client.post(FEEDBACK, json=body)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": response.json()["error"], "code": code}
    assert response.json()["error"].startswith(error)


def test_feedback_for_an_unknown_service_is_404(client: InProcessClient) -> None:
    response = client.post("/cds-services/nope/feedback", json={"feedback": []})
    assert response.status_code == 404
