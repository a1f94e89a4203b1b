"""CDS Hooks 2.0 conformance, one test per Service-side requirement of the HL7/Inferno requirement list
(shared/external-test-data/cds-hooks-2.0-requirements), named by its id, quoting the requirement.

Every Service-side SHALL / SHALL NOT requirement is either tested here or listed in ``NOT_APPLICABLE`` with
the reason; ``test_every_service_shall_requirement_is_covered`` fails when one is neither. Some SHOULD and
MAY requirements the service implements are tested too. Responses are collected once per module from the
service in this process (``conftest.in_process``) over a spread of cases, and each card requirement is
checked on all cards; discovery without the development flag is checked on a real server.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import sqlite3
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import InProcessClient, Server, in_process
from fhir_stub import (
    Case,
    FhirStub,
    Json,
    authorization,
    condition,
    empty_values,
    encounter,
    hook_request,
    is_absolute_url,
    ketamine,
    ketamine_solution,
    oxycodone_order,
    patient,
    planned_procedure,
    prefetch_for,
    quantity,
    running,
    templates_in,
    weight,
)
from markdown_it import MarkdownIt

REQUIREMENTS_CSV = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "external-test-data"
    / "cds-hooks-2.0-requirements"
    / "cds-hooks_2.0_requirements.csv"
)
SERVICES = ("ketamine-order-select", "ketamine-order-sign", "ketamine-patient-view")
ORDER_SERVICES = SERVICES[:2]
HOOK_OF = {
    "ketamine-order-select": "order-select",
    "ketamine-order-sign": "order-sign",
    "ketamine-patient-view": "patient-view",
}

# Service-side SHALL / SHALL NOT requirements that this module does not test, and why.
NOT_APPLICABLE: dict[int, str] = {
    168: "TLS on the service's own endpoint is the deployment's (a TLS-terminating reverse proxy); the "
    "service listens on loopback by default. The outbound half (no token over plain HTTP) is tested as 002.",
    176: "JWT authentication of CDS Clients is auth.py's, tested in test_auth.py (another engineer's).",
    199: "JWK Sets communicated out of band (the trust list) belong to auth.py, tested in test_auth.py.",
    201: "Refusing JWTs signed with 'none' belongs to auth.py, tested in test_auth.py.",
    203: "Refusing symmetrically signed JWTs belongs to auth.py, tested in test_auth.py.",
    211: "Update of stale guidance across hooks: these services do not update earlier cards; each hook call "
    "is answered on its own, and the two services have distinct ids ({baseUrl}/cds-services/{id} is unique).",
}


@dataclass(frozen=True)
class Requirement:
    id: int
    url: str
    text: str
    conformance: str
    actors: str


def requirements() -> dict[int, Requirement]:
    with REQUIREMENTS_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        int(r["ID*"]): Requirement(
            int(r["ID*"]), r["URL*"], r["Requirement*"], r["Conformance*"], r["Actors*"]
        )
        for r in rows
    }


def covered_by_tests() -> set[int]:
    return {
        int(m.group(1))
        for name in globals()
        if (m := re.fullmatch(r"test_req_hl7_cds_hooks_2_0_0_(\d{3})", name))
    }


# --- the responses every card requirement is checked on ---------------------------------------------


@dataclass
class Exchange:
    service: str
    request: Json
    status: int
    body: Json
    seconds: float


@dataclass
class Corpus:
    base_url: str
    discovery: Json
    exchanges: list[Exchange]

    @property
    def cards(self) -> list[Json]:
        return [card for e in self.exchanges for card in e.body.get("cards", [])]

    def suggestions(self) -> list[Json]:
        return [s for c in self.cards for s in c.get("suggestions", [])]

    def actions(self) -> list[Json]:
        return [a for s in self.suggestions() for a in s.get("actions", [])]

    def codings(self) -> list[Json]:
        return [c["source"]["topic"] for c in self.cards if "topic" in c["source"]] + [
            r for c in self.cards for r in c.get("overrideReasons", [])
        ]


def _cases() -> list[Case]:
    surgery = [patient(), weight("69.85"), planned_procedure()]
    ward = [*surgery, *encounter(False)]
    ml_order = ketamine(
        rate=quantity(8, "mL/h"), medication={"reference": "#ket10"}, contained=[ketamine_solution(10)]
    )
    return [
        Case(surgery, [ketamine(dose=quantity("0.5", "mg/kg"))]),
        Case(surgery, [ketamine(dose=quantity(30, "mg"))]),
        Case(surgery, [ketamine(dose=quantity(20, "mg"))]),
        Case(ward, [ml_order], encounter_id="e1"),
        Case(ward, [ketamine(rate=quantity(2, "mg/kg/h"))], encounter_id="e1"),
        Case([*surgery, *encounter(True)], [ketamine(rate=quantity(2, "mg/kg/h"))], encounter_id="e1"),
        Case([*surgery, condition("58214004", "Schizophrenia")], [ketamine(dose=quantity(10, "mg"))]),
        Case([*surgery, condition("38341003", "Hypertensive disorder")], [ketamine(dose=quantity(10, "mg"))]),
        Case(
            [*surgery, condition("78275009", "Obstructive sleep apnea")], [ketamine(dose=quantity(10, "mg"))]
        ),
        Case([patient(), weight(900)], [ketamine(dose=quantity(10, "mg"))]),
        Case([patient(), weight(70)], [oxycodone_order()]),
        Case(
            [patient()],
            [ketamine(dose=quantity(1, "mg/kg")), ketamine(oid="k2", rate=quantity(5, "mg/kg/h"))],
        ),
    ]


def _view_cases() -> list[Case]:
    """Charts opened: an active infusion over the limit on a ward, one within it with a contraindication
    recorded since, a recent IV course for CRPS, ketamine long ago, and no ketamine at all."""
    ward = [patient(), weight("69.85"), planned_procedure(), *encounter(False)]
    recent = (dt.date.today() - dt.timedelta(days=10)).isoformat()
    crps = {"coding": [{"system": "http://snomed.info/sct", "code": "128200000", "display": "CRPS"}]}
    course = ketamine(oid="course", rate=quantity("0.35", "mg/kg/h"), status="completed")
    course.update(authoredOn=recent, reasonCode=[crps])
    old = ketamine(oid="old", rate=quantity(1, "mg/kg/h"), status="completed")
    schizophrenia = condition("58214004", "Schizophrenia")
    over = ketamine(oid="run", rate=quantity(2, "mg/kg/h"), status="active")
    within = ketamine(oid="run", rate=quantity("0.5", "mg/kg/h"), status="active")
    return [
        Case([*ward, over], [], encounter_id="e1"),
        Case([*ward, schizophrenia, within], [], encounter_id="e1"),
        Case([patient(), weight(70), course], []),
        Case([patient(), weight(70), old], []),
        Case([patient(), weight(70)], []),
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[InProcessClient]:
    with in_process(data_dir) as c:
        yield c


def _templates(client: InProcessClient, hook: str) -> dict[str, str]:
    return templates_in(client.get("/cds-services").json(), hook)


@pytest.fixture(scope="module")
def templates(client: InProcessClient) -> dict[str, str]:
    return _templates(client, "order-select")


@pytest.fixture(scope="module")
def corpus(client: InProcessClient, templates: dict[str, str]) -> Corpus:
    exchanges = []
    view_templates = _templates(client, "patient-view")
    calls = [(s, c, templates) for c in _cases() for s in ORDER_SERVICES]
    calls += [("ketamine-patient-view", c, view_templates) for c in _view_cases()]
    for service, case, service_templates in calls:
        request = case.request(HOOK_OF[service], service_templates)
        started = time.perf_counter()
        response = client.post(f"/cds-services/{service}", json=request)
        seconds = time.perf_counter() - started
        assert response.status_code == 200, response.text
        exchanges.append(Exchange(service, request, response.status_code, response.json(), seconds))
    corpus = Corpus(client.base_url, client.get("/cds-services").json(), exchanges)
    assert corpus.suggestions() and any(
        "overrideReasons" in c for c in corpus.cards
    )  # the corpus covers them
    views = [e.body["cards"] for e in exchanges if e.service == "ketamine-patient-view"]
    assert [len(cards) > 0 for cards in views] == [True, True, True, False, False]
    return corpus


# --- coverage of the requirement list ---------------------------------------------------------------


def test_every_service_shall_requirement_is_covered() -> None:
    reqs = requirements()
    assert len(reqs) == 220
    service_shall = {
        r.id for r in reqs.values() if "Service" in r.actors and r.conformance in ("SHALL", "SHALL NOT")
    }
    tested = covered_by_tests()
    assert not tested & set(NOT_APPLICABLE), "a requirement is both tested and listed as not applicable"
    assert service_shall - tested - set(NOT_APPLICABLE) == set(), "Service SHALL requirements not covered"
    assert all("Service" in reqs[i].actors for i in tested | set(NOT_APPLICABLE))
    assert len(service_shall) == 73


def test_each_requirement_test_quotes_its_requirement() -> None:
    reqs = requirements()
    for rid in covered_by_tests():
        test = globals()[f"test_req_hl7_cds_hooks_2_0_0_{rid:03d}"]
        assert test.__doc__ and test.__doc__.startswith(f"{reqs[rid].url} ({reqs[rid].conformance})"), rid


# --- use of JSON, discovery ---------------------------------------------------------------------------


def test_req_hl7_cds_hooks_2_0_0_001(corpus: Corpus, client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#use-of-json (SHALL): All data exchanged through production RESTful APIs
    MUST be sent and received as JSON (JavaScript Object Notation) structures."""
    for path in ("/cds-services",):
        assert client.get(path).headers["content-type"].startswith("application/json")
    response = client.post("/cds-services/ketamine-order-sign", content=b"hook=order-sign")
    assert response.status_code == 400 and response.headers["content-type"].startswith("application/json")
    feedback = client.post("/cds-services/ketamine-order-sign/feedback", json={"feedback": []})
    assert feedback.headers["content-type"].startswith("application/json") and feedback.json()
    assert all(isinstance(e.body, dict) for e in corpus.exchanges)


def test_req_hl7_cds_hooks_2_0_0_002(client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#use-of-json (SHALL): All data exchanged through production RESTful APIs
    MUST be ... transmitted over HTTPS.

    The service's own endpoint is served behind the deployment's TLS (see 168). What the service sends itself,
    the FHIR access token, goes over HTTPS only (loopback excepted): a plain-HTTP fhirServer is refused (412).
    """
    body = hook_request(
        "order-sign",
        [ketamine(dose=quantity(10, "mg"))],
        fhirServer="http://ehr.example/fhir",
        fhirAuthorization=authorization(),
    )
    response = client.post("/cds-services/ketamine-order-sign", json=body)
    assert response.status_code == 412 and "https" in response.json()["error"]


def test_req_hl7_cds_hooks_2_0_0_003(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#use-of-json (SHALL NOT): JSON elements SHALL NOT be null … [or] empty,
    unless otherwise specified (e.g. to indicate no guidance with an empty array of cards in the CDS Hooks
    response)."""
    assert empty_values(corpus.discovery) == []
    for exchange in corpus.exchanges:
        for card in exchange.body["cards"]:
            assert empty_values({k: v for k, v in card.items() if k != "suggestions"}) == []
            for suggestion in card.get("suggestions", []):
                for action in suggestion["actions"]:  # CDS structures, not the FHIR resource inside
                    assert empty_values({k: v for k, v in action.items() if k != "resource"}) == []
    assert any(e.body == {"cards": []} for e in corpus.exchanges)  # the one allowed empty array


def test_req_hl7_cds_hooks_2_0_0_004(client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#discovery (SHALL): A CDS Service provider exposes its discovery endpoint
    at: {baseURL}/cds-services"""
    assert client.get("/cds-services").status_code == 200


@pytest.mark.server
def test_req_hl7_cds_hooks_2_0_0_005(tmp_path: Path) -> None:
    """https://cds-hooks.hl7.org/2.0/#http-request (SHALL): The Discovery endpoint SHALL always be available
    at {baseUrl}/cds-services [using HTTP GET]

    Also on a server that requires authentication for its services (no development flag)."""
    server = Server(tmp_path).start()
    try:
        response = httpx.get(server.url + "/cds-services", timeout=10)
        assert response.status_code == 200 and len(response.json()["services"]) == 3
    finally:
        server.stop()


def test_req_hl7_cds_hooks_2_0_0_006(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#response (SHALL): The response to the discovery endpoint SHALL be an
    object containing a list [json array] of CDS Services."""
    assert isinstance(corpus.discovery, dict) and isinstance(corpus.discovery["services"], list)
    assert {s["id"] for s in corpus.discovery["services"]} == set(SERVICES)


def test_req_hl7_cds_hooks_2_0_0_007(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#response (SHALL): Each CDS Service SHALL be described by the following
    attributes [including]: - field: hook - optionality: REQUIRED - type: string - description: The hook this
    service should be invoked on"""
    assert {s["id"]: s["hook"] for s in corpus.discovery["services"]} == HOOK_OF


def test_req_hl7_cds_hooks_2_0_0_008(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#response (SHOULD): Each CDS Service SHALL be described by the following
    attributes [including]: - field: title - optionality: RECOMMENDED - type: string - description:"""
    assert all(isinstance(s["title"], str) and s["title"] for s in corpus.discovery["services"])


def test_req_hl7_cds_hooks_2_0_0_009(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#response (SHALL): Each CDS Service SHALL be described by the following
    attributes [including]: - field: description - optionality: REQUIRED  - type: string  - description: The
    description of this service."""
    assert all(isinstance(s["description"], str) and s["description"] for s in corpus.discovery["services"])


def test_req_hl7_cds_hooks_2_0_0_010(corpus: Corpus, client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#response (SHALL): Each CDS Service SHALL be described by the following
    attributes [including]: - field: id - optionality: REQUIRED - type: string - description:  The {id}
    portion of the URL to this service which is available at {baseUrl}/cds-services/{id}"""
    for service in corpus.discovery["services"]:
        assert isinstance(service["id"], str)
        body = hook_request(service["hook"], [oxycodone_order()])
        if service["hook"] == "patient-view":  # a chart without ketamine
            body["prefetch"] = {"ketamineRequests": None, "ketamineAdministrations": None}
        assert client.post(f"/cds-services/{service['id']}", json=body).json() == {"cards": []}


def test_req_hl7_cds_hooks_2_0_0_011(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#response (MAY): Each CDS Service SHALL be described by the following
    attributes [including]: - field: prefetch - optionality: OPTIONAL - type: object - description: An object
    containing key/value pairs of FHIR queries that this service is requesting the CDS Client to perform and
    provide on each service call."""
    for service in corpus.discovery["services"]:
        assert service["prefetch"] and all(isinstance(v, str) for v in service["prefetch"].values())


def test_req_hl7_cds_hooks_2_0_0_012(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#response (MAY): Each CDS Service SHALL be described by the following
    attributes [including]: - field: usageRequirements - optionality: OPTIONAL - type: string - description:
    Human-friendly description of any preconditions for the use of this CDS Service."""
    for service in corpus.discovery["services"]:
        assert "prefetch" in service["usageRequirements"] and "412" in service["usageRequirements"]
        # CDS Hooks 2.0 lets a client answer a search that finds nothing with null or an empty Bundle
        assert "may be null or an empty Bundle" in service["usageRequirements"]
        assert "must be null" not in service["usageRequirements"]


def test_req_hl7_cds_hooks_2_0_0_013(client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#http-status-codes (SHALL): [Services SHALL return a HTTP] 200 ok
    [response to indicate] A successful response [to a discovery request]"""
    assert client.get("/cds-services").status_code == 200


def test_req_hl7_cds_hooks_2_0_0_014(client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#http-status-codes (MAY): CDS Services MAY return other HTTP statuses,
    specifically 4xx and 5xx HTTP error codes."""
    assert client.post("/cds-services/unknown", json={}).status_code == 404
    assert client.post("/cds-services/ketamine-order-sign", content=b"{").status_code == 400


def test_req_hl7_cds_hooks_2_0_0_016(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#http-request_1 (SHALL): The CDS Service endpoint can be constructed from
    the CDS Service base URL and an individual service id as {baseUrl}/cds-services/{service.id}."""
    assert {e.service for e in corpus.exchanges} == set(SERVICES)
    assert all(e.status == 200 for e in corpus.exchanges)


def test_req_hl7_cds_hooks_2_0_0_027(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#providing-fhir-resources-to-a-cds-service (SHOULD): CDS Services SHOULD
    respond quickly (on the order of 500 ms.)"""
    assert statistics.median(e.seconds for e in corpus.exchanges) < 0.5


def test_req_hl7_cds_hooks_2_0_0_028(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#providing-fhir-resources-to-a-cds-service (MAY): FHIR resources MAY be
    obtained [by the service] by passing "prefetched" data from the CDS Client to the CDS Service in the
    service call."""
    assert all(e.request["prefetch"] and "fhirServer" not in e.request for e in corpus.exchanges)
    assert any(
        c["summary"] == "Relative contraindication: Schizophrenia" for c in corpus.cards
    )  # read from the prefetch


def test_req_hl7_cds_hooks_2_0_0_029(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#providing-fhir-resources-to-a-cds-service (SHALL): If data is to be
    prefetched, the CDS Service registers a set of "prefetch templates" with the CDS Client… [communicated] in
    the CDS Service discovery response."""
    for service in corpus.discovery["services"]:
        keys = set(service["prefetch"])
        assert {"patient", "weights", "conditions", "ketamineRequests", "encounter"} <= keys
        if service["hook"] != "patient-view":
            assert {"medicationRequests", "medicationStatements"} <= set(service["prefetch"])


def test_req_hl7_cds_hooks_2_0_0_034(client: InProcessClient, templates: dict[str, str]) -> None:
    """https://cds-hooks.hl7.org/2.0/#providing-fhir-resources-to-a-cds-service (SHOULD): CDS Services should
    be capable of accessing FHIR resources via either prefetch or from the CDS Client's FHIR server."""
    record = [patient(), weight(70), condition("58214004", "Schizophrenia")]
    order = ketamine(dose=quantity(10, "mg"))
    prefetched = client.post(
        "/cds-services/ketamine-order-sign", json=Case(record, [order]).request("order-sign", templates)
    ).json()
    with running(FhirStub(record)) as stub:
        body = hook_request("order-sign", [order], fhirServer=stub.base, fhirAuthorization=authorization())
        fetched = client.post("/cds-services/ketamine-order-sign", json=body).json()
    assert (
        [c["summary"] for c in prefetched["cards"]]
        == [c["summary"] for c in fetched["cards"]]
        == ["Relative contraindication: Schizophrenia"]
    )


def test_req_hl7_cds_hooks_2_0_0_035(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#prefetch-template (MAY): To allow for prefetch templates that are
    dependent on the workflow context, prefetch templates may include references to context using prefetch
    tokens."""
    prefetch = corpus.discovery["services"][0]["prefetch"]
    assert all("{{context." in template for template in prefetch.values())


def test_req_hl7_cds_hooks_2_0_0_036(client: InProcessClient, templates: dict[str, str]) -> None:
    """https://cds-hooks.hl7.org/2.0/#prefetch-template (SHALL): The prefetch field of a CDS Service discovery
    response … [SHALL provide a] prefetch key for each … [prefetch template] that is used to identify the
    prefetch data in the CDS request."""
    case = Case(
        [patient(), weight(70), condition("58214004", "Schizophrenia")], [ketamine(dose=quantity(10, "mg"))]
    )
    body = case.request("order-sign", templates)
    assert set(body["prefetch"]) <= set(templates)
    cards = client.post("/cds-services/ketamine-order-sign", json=body).json()["cards"]
    assert [c["summary"] for c in cards] == ["Relative contraindication: Schizophrenia"]
    body["prefetch"]["problems"] = body["prefetch"].pop(
        "conditions"
    )  # data under a key the service did not name: not read, and the answer says the conditions were not
    response = client.post("/cds-services/ketamine-order-sign", json=body)
    assert [c["summary"] for c in response.json()["cards"]] == [
        "Checked without part of the record: conditions could not be read"
    ]


def test_req_hl7_cds_hooks_2_0_0_052(client: InProcessClient, templates: dict[str, str]) -> None:
    """https://cds-hooks.hl7.org/2.0/#prefetch-template (SHOULD): CDS Services SHOULD check any prefetched
    data for the existence of OperationOutcomes"""
    case = Case([patient(), weight(70)], [ketamine(dose=quantity(10, "mg"))])
    body = case.request("order-sign", templates)
    body["prefetch"]["conditions"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception"}],
    }
    unread = "Checked without part of the record: conditions could not be read"
    response = client.post("/cds-services/ketamine-order-sign", json=body)
    assert [c["summary"] for c in response.json()["cards"]] == [unread]  # not read as "no conditions"
    body["prefetch"]["conditions"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "fatal", "code": "exception"}],
                },
                "search": {"mode": "outcome"},
            }
        ],
    }
    cards = client.post("/cds-services/ketamine-order-sign", json=body).json()["cards"]
    assert [c["summary"] for c in cards] == [unread]
    body["prefetch"]["conditions"]["entry"][0]["resource"]["issue"][0]["severity"] = "information"
    assert client.post("/cds-services/ketamine-order-sign", json=body).json() == {"cards": []}


def test_req_hl7_cds_hooks_2_0_0_054(client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#prefetch-template (SHALL): If the CDS Service is unable to obtain
    required data because it cannot access the FHIR server and the request did not contain the necessary
    prefetch keys, the service SHALL respond with an HTTP 412 Precondition Failed status code."""
    order = ketamine(dose=quantity(10, "mg"))
    assert (
        client.post("/cds-services/ketamine-order-sign", json=hook_request("order-sign", [order])).status_code
        == 412
    )
    body = hook_request(
        "order-select", [order], fhirServer="http://127.0.0.1:9/fhir", fhirAuthorization=authorization()
    )
    assert client.post("/cds-services/ketamine-order-select", json=body).status_code == 412
    view = hook_request("patient-view", [])  # without its orders patient-view cannot say anything
    assert client.post("/cds-services/ketamine-patient-view", json=view).status_code == 412


def _tokens(corpus: Corpus) -> list[str]:
    return [
        t
        for s in corpus.discovery["services"]
        for v in s["prefetch"].values()
        for t in re.findall(r"\{\{(.*?)\}\}", v)
    ]


def test_req_hl7_cds_hooks_2_0_0_055(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#prefetch-tokens (SHALL): Prefetch tokens MUST be delimited by {{ and
    }}"""
    for service in corpus.discovery["services"]:
        for template in service["prefetch"].values():
            stripped = re.sub(r"\{\{[^{}]*\}\}", "", template)
            assert "{" not in stripped and "}" not in stripped
    assert _tokens(corpus)


def test_req_hl7_cds_hooks_2_0_0_056(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#prefetch-tokens (SHALL): Prefetch tokens ... MUST contain only the
    qualified path to a hook context field or one of the following user identifiers: userPractitionerId,
    userPractitionerRoleId, userPatientId, or userRelatedPersonId"""
    context_fields = {"userId", "patientId", "encounterId", "selections", "draftOrders"}  # order-select/-sign
    users = {"userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"}
    for token in _tokens(corpus):
        assert token in users or (
            token.startswith("context.") and token.removeprefix("context.") in context_fields
        )


def test_req_hl7_cds_hooks_2_0_0_057(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#prefetch-tokens (SHALL): Only root-level fields with a primitive value
    within the context object are eligible to be used as prefetch tokens."""
    primitive_root_fields = {"context.userId", "context.patientId", "context.encounterId"}
    assert set(_tokens(corpus)) <= primitive_root_fields


def test_req_hl7_cds_hooks_2_0_0_059(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#example-prefetch-token (SHALL): When context fields are used as tokens,
    their token name MUST be `context.name-of-the-field`"""
    assert all(re.fullmatch(r"context\.[A-Za-z]+", t) for t in _tokens(corpus))


def test_req_hl7_cds_hooks_2_0_0_060(client: InProcessClient, templates: dict[str, str]) -> None:
    """https://cds-hooks.hl7.org/2.0/#fhir-resource-access (MAY): If the CDS Client provides both fhirServer
    and fhirAuthorization request parameters, the CDS Service MAY use the FHIR server to obtain any FHIR
    resources for which it's authorized, beyond those provided by the CDS Client as prefetched data"""
    record = [patient(), weight(70), condition("58214004", "Schizophrenia")]
    case = Case(record, [ketamine(dose=quantity(10, "mg"))])
    prefetch = prefetch_for(templates, record, case.context, skip=["conditions"])
    with running(FhirStub(record)) as stub:
        body = hook_request(
            "order-sign",
            case.orders,
            prefetch=prefetch,
            fhirServer=stub.base,
            fhirAuthorization=authorization(),
        )
        cards = client.post("/cds-services/ketamine-order-sign", json=body).json()["cards"]
    assert [c["summary"] for c in cards] == ["Relative contraindication: Schizophrenia"]
    assert [p.split("?")[0] for p in stub.paths()] == ["/fhir/Condition"]


def test_req_hl7_cds_hooks_2_0_0_061(client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#fhir-resource-access (SHALL): CDS Hooks requires that CDS Services
    present a valid access token to the FHIR server with each API call"""
    record = [patient(), weight(70)]
    order = ketamine(dose=quantity(10, "mg"))
    with running(FhirStub(record)) as stub:
        body = hook_request("order-sign", [order], fhirServer=stub.base, fhirAuthorization=authorization())
        assert client.post("/cds-services/ketamine-order-sign", json=body).status_code == 200
        assert stub.requests and all(auth == f"Bearer {stub.token}" for _, auth in stub.requests)
        stub.requests.clear()
        for auth in (None, authorization(expires_in=0)):  # no token, or one no longer valid: no call at all
            body = hook_request("order-sign", [order], fhirServer=stub.base)
            if auth is not None:
                body["fhirAuthorization"] = auth
            assert client.post("/cds-services/ketamine-order-sign", json=body).status_code == 412
        assert stub.requests == []


# --- the response and its cards ----------------------------------------------------------------------


def test_req_hl7_cds_hooks_2_0_0_074(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#cds-service-response (SHALL): For successful responses, CDS Services
    SHALL respond with a 200 HTTP response with an object containing a cards array"""
    assert all(e.status == 200 and isinstance(e.body["cards"], list) for e in corpus.exchanges)


def test_req_hl7_cds_hooks_2_0_0_075(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#cds-service-response (SHALL): For successful responses, CDS Services
    [MAY] optionally [respond with an object containing] a systemActions array"""
    for exchange in corpus.exchanges:
        assert set(exchange.body) <= {"cards", "systemActions"}
        assert isinstance(exchange.body.get("systemActions", []), list)


def test_req_hl7_cds_hooks_2_0_0_076(client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#cds-service-response (MAY): CDS Services MAY return other HTTP statuses,
    specifically 4xx and 5xx HTTP error codes."""
    response = client.post("/cds-services/ketamine-order-select", json={"hook": "order-select"})
    assert response.status_code == 400 and response.json()["error"]


def test_req_hl7_cds_hooks_2_0_0_077(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#cds-service-response (SHOULD): If … [the] CDS Service has no decision
    support for the user, … [the] service should return a 200 HTTP response with an empty array of cards"""
    no_ketamine = [
        e
        for e in corpus.exchanges
        if e.service in ORDER_SERVICES
        and all(entry["resource"]["id"] == "o1" for entry in e.request["context"]["draftOrders"]["entry"])
    ]
    no_ketamine += [e for e in corpus.exchanges if e.service == "ketamine-patient-view"][-2:]  # none active
    assert len(no_ketamine) == 4
    assert all(e.status == 200 and e.body == {"cards": []} for e in no_ketamine)


def test_req_hl7_cds_hooks_2_0_0_080(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object] the uuid field
    SHALL [be a] unique identifier of the card [and be sent as] a string data type"""
    uuids = [c["uuid"] for c in corpus.cards]
    assert all(isinstance(u, str) for u in uuids) and len(set(uuids)) == len(uuids)


def test_req_hl7_cds_hooks_2_0_0_082(data_dir: Path, corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (MAY): [When sending a card object] the uuid field MAY
    be used for auditing and logging cards"""
    store = sqlite3.connect(data_dir / "ketamine-cds.sqlite3")
    try:
        stored = {row[0] for row in store.execute("SELECT uuid FROM cards")}
    finally:
        store.close()
    assert {c["uuid"] for c in corpus.cards} <= stored


def test_req_hl7_cds_hooks_2_0_0_083(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object] the summary field
    Shall be a < 140 summary message for display to the user as a string data type"""
    assert all(isinstance(c["summary"], str) and 0 < len(c["summary"]) < 140 for c in corpus.cards)


def test_req_hl7_cds_hooks_2_0_0_084(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (MAY): [When sending a card object] the detail field is
    optional [and used to send] information to display"""
    assert all(isinstance(c["detail"], str) and len(c["detail"]) > len(c["summary"]) for c in corpus.cards)


def test_req_hl7_cds_hooks_2_0_0_085(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object] the detail field,
    if provided, MUST be represented in [(GitHub Flavored) Markdown](https://github.github.com/gfm/)"""
    markdown = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    for card in corpus.cards:
        tokens = markdown.parse(card["detail"])
        assert not any(t.type in ("html_block", "html_inline") for t in tokens)
        assert any(t.type == "paragraph_open" for t in tokens)
        rendered = markdown.render(card["detail"])
        assert "**" not in rendered  # every bold span is closed
        assert "<strong>" in rendered


def test_req_hl7_cds_hooks_2_0_0_087(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object] the indicator
    field is a required field [conveying] the urgency / importance of the card [information sent as a] string
    data type"""
    assert all(isinstance(c["indicator"], str) for c in corpus.cards)


def test_req_hl7_cds_hooks_2_0_0_088(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object] the indicator
    field's allowed values, in order of increasing urgency, are: info, warning, critical"""
    indicators = {c["indicator"] for c in corpus.cards}
    assert indicators == {"info", "warning", "critical"}  # all three occur, nothing else


def test_req_hl7_cds_hooks_2_0_0_089(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  the CDS Client
    MAY use [the indicator] field to help make UI display decisions such as sort order or coloring.

    The indicator means what it says: critical only for contraindications and doses over a limit, and the
    cards come most urgent first."""
    rank = {"critical": 0, "warning": 1, "info": 2}
    for exchange in corpus.exchanges:
        ranks = [rank[c["indicator"]] for c in exchange.body["cards"]]
        if len(exchange.request["context"].get("draftOrders", {"entry": [1]})["entry"]) == 1:
            assert ranks == sorted(ranks)
    for card in corpus.cards:
        if card["indicator"] == "critical":
            topic = card["source"]["topic"]["code"]
            assert topic.startswith("contra-") or (topic.startswith("dose-") and " over " in card["summary"])


def test_req_hl7_cds_hooks_2_0_0_090(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  the source is a
    required field [and SHALL be populated with a] [source](https://cds-hooks.hl7.org/2.0/#source) object"""
    assert all(isinstance(c["source"], dict) and c["source"]["label"] for c in corpus.cards)


def test_req_hl7_cds_hooks_2_0_0_092(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  the suggestion
    field allows a service to suggest a set of changes in the context of the current activity [and is sent as
    a] array of [suggestion](https://cds-hooks.hl7.org/2.0/#suggestion) [objects]"""
    with_suggestions = [c for c in corpus.cards if "suggestions" in c]
    assert with_suggestions
    for card in with_suggestions:
        assert isinstance(card["suggestions"], list)
        assert all(isinstance(s, dict) and s["label"] and s["actions"] for s in card["suggestions"])


def test_req_hl7_cds_hooks_2_0_0_093(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  If suggestions
    are present, selectionBehavior MUST also be provided."""
    assert all("selectionBehavior" in c for c in corpus.cards if "suggestions" in c)


def test_req_hl7_cds_hooks_2_0_0_095(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  the
    selectionBehavior field [has] allowed values of at-most-one, indicating that the user may choose none or
    at most one of the suggestions [and] any, indicating that the end user may choose any number of
    suggestions including none of them and all of them"""
    behaviours = [c["selectionBehavior"] for c in corpus.cards if "selectionBehavior" in c]
    assert behaviours and set(behaviours) <= {"at-most-one", "any"}


def test_req_hl7_cds_hooks_2_0_0_096(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  the
    selectionBehavior field [SHALL be sent as a] string data type [and SHALL be present if the suggestions
    field in the card is populated]"""
    for card in corpus.cards:
        assert ("selectionBehavior" in card) == bool(card.get("suggestions"))
        assert isinstance(card.get("selectionBehavior", ""), str)


def test_req_hl7_cds_hooks_2_0_0_098(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  the
    overrideReason field [SHALL be sent as a] array of [coding](https://cds-hooks.hl7.org/2.0/#coding)
    [objects]"""
    with_reasons = [c for c in corpus.cards if "overrideReasons" in c]
    assert with_reasons
    for card in with_reasons:
        assert isinstance(card["overrideReasons"], list)
        assert all(set(r) == {"system", "code", "display"} for r in card["overrideReasons"])


def test_req_hl7_cds_hooks_2_0_0_099(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (MAY): [When sending a card object,]  the CDS service
    MAY return a list of override reasons to the CDS client"""
    infusion = [
        c
        for c in corpus.cards
        if c["indicator"] == "critical" and c["source"]["topic"]["code"] == "dose-infusion-limit"
    ]
    assert infusion
    for card in infusion:
        assert "prior-ketamine-exposure" in {r["code"] for r in card["overrideReasons"]}


def test_req_hl7_cds_hooks_2_0_0_100(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  if override
    reasons are present, the CDS Service MUST populate a display value for each reason's
    [Coding](https://cds-hooks.hl7.org/2.0/#coding)"""
    reasons = [r for c in corpus.cards for r in c.get("overrideReasons", [])]
    assert reasons and all(isinstance(r["display"], str) and r["display"].strip() for r in reasons)


def test_req_hl7_cds_hooks_2_0_0_103(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (SHALL): [When sending a card object,]  the link field
    [SHALL be sent as a] array of [link](https://cds-hooks.hl7.org/2.0/#link) [objects]"""
    for card in corpus.cards:
        assert isinstance(card.get("links", []), list)
        assert all(isinstance(link, dict) for link in card.get("links", []))


def test_req_hl7_cds_hooks_2_0_0_104(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#card-attributes (MAY): [When sending a card object,]  the link field is
    optional"""
    for card in corpus.cards:
        if "topic" in card["source"]:  # a guideline finding links to its statement on the clinician page
            statement = card["source"]["topic"]["code"]
            assert card["links"][0]["url"] == f"{corpus.base_url}/statements/{statement}"


def test_req_hl7_cds_hooks_2_0_0_105(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#source (SHALL): [When sending a Source object,] the label field is
    required and [SHALL be a] string data type"""
    assert all(isinstance(c["source"]["label"], str) for c in corpus.cards)


def test_req_hl7_cds_hooks_2_0_0_107(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#source (SHALL): [When sending a Source object,] the url field [SHALL be
    a] URL data type [and use a] absolute URL"""
    urls = [c["source"]["url"] for c in corpus.cards if "url" in c["source"]]
    assert urls and all(is_absolute_url(u) for u in urls)


def test_req_hl7_cds_hooks_2_0_0_109(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#source (SHOULD NOT): [When sending a Source object,] the URL [field]
    should not be used to supply a context-specific "drill-down" view of the information on this card."""
    for card in corpus.cards:
        if "url" in card["source"]:
            assert card["source"]["url"].startswith("https://doi.org/")  # the publication itself
            assert not card["source"]["url"].startswith(corpus.base_url)


def test_req_hl7_cds_hooks_2_0_0_110(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#source (SHOULD): To supply a context-specific "drill-down" view of the
    information on a card [object implementers SHOULD] ... use
    [card.link.url](https://cds-hooks.hl7.org/2.0/#link)"""
    assert all(link["url"].startswith(corpus.base_url) for c in corpus.cards for link in c.get("links", []))


def test_req_hl7_cds_hooks_2_0_0_111(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#source (SHALL): [When sending a Source object,] the icon field [SHALL be
    a] URL data type [and use a] absolute URL"""
    assert all(is_absolute_url(c["source"]["icon"]) for c in corpus.cards if "icon" in c["source"])


def test_req_hl7_cds_hooks_2_0_0_115(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#source (SHALL): [When sending a Source object,] the topic field [SHALL
    be a] [Coding](https://cds-hooks.hl7.org/2.0/#coding) type object"""
    topics = [c["source"]["topic"] for c in corpus.cards if "topic" in c["source"]]
    assert topics
    for topic in topics:
        assert set(topic) <= {"system", "code", "display"}
        assert topic["system"] == f"{corpus.base_url}/CodeSystem/statement"


def test_req_hl7_cds_hooks_2_0_0_117(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#suggestion (SHALL): [When sending a Suggestion object,] the label field
    is required and [SHALL be a] string data type"""
    suggestions = corpus.suggestions()
    assert suggestions and all(isinstance(s["label"], str) and s["label"] for s in suggestions)


def test_req_hl7_cds_hooks_2_0_0_119(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#suggestion (SHALL): [When sending a Suggestion object,] the uuid field
    [SHALL be a] string data type"""
    uuids = [s["uuid"] for s in corpus.suggestions()]
    assert all(isinstance(u, str) for u in uuids) and len(set(uuids)) == len(uuids)


def test_req_hl7_cds_hooks_2_0_0_121(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#suggestion (SHALL): [When sending a Suggestion object,] the
    isRecommended field [SHALL be a] boolean data type"""
    assert all(isinstance(s.get("isRecommended", False), bool) for s in corpus.suggestions())


def test_req_hl7_cds_hooks_2_0_0_124(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#suggestion (SHALL): [When sending a Suggestion object,] the action field
    [SHALL be a] array of [actions](https://cds-hooks.hl7.org/2.0/#action)"""
    for suggestion in corpus.suggestions():
        assert isinstance(suggestion["actions"], list) and all(
            isinstance(a, dict) for a in suggestion["actions"]
        )


def test_req_hl7_cds_hooks_2_0_0_125(
    corpus: Corpus, client: InProcessClient, templates: dict[str, str]
) -> None:
    """https://cds-hooks.hl7.org/2.0/#suggestion (SHALL): Within a suggestion, all actions … [SHALL use] AND
    [logic], such that a user selecting a suggestion selects all of the actions within it.

    Each suggestion is complete on its own: applying all its actions gives an order within the limit."""
    for exchange in corpus.exchanges:
        for card in exchange.body["cards"]:
            for suggestion in card.get("suggestions", []):
                updated = [a["resource"] for a in suggestion["actions"] if a["type"] == "update"]
                record = [patient(), weight("69.85"), planned_procedure(), *encounter(False)]
                body = Case(record, updated, encounter_id="e1").request("order-sign", templates)
                assert client.post("/cds-services/ketamine-order-sign", json=body).json() == {"cards": []}


def test_req_hl7_cds_hooks_2_0_0_127(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#action (SHALL): [When sending an Action object,] the type field is
    required and [SHALL be a] string data type [with] values of create, update, delete."""
    actions = corpus.actions()
    assert actions and all(a["type"] in ("create", "update", "delete") for a in actions)


def test_req_hl7_cds_hooks_2_0_0_128(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#action (SHALL): [When sending an Action object,] the description field
    is required and [SHALL be a] string data type"""
    assert all(isinstance(a["description"], str) and a["description"] for a in corpus.actions())


def test_req_hl7_cds_hooks_2_0_0_130(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#action (SHALL): [When sending an Action object,] the resource field
    [SHALL be a] FHIR resource"""
    from fhir.resources.R4B.medicationrequest import MedicationRequest

    for action in corpus.actions():
        assert action["resource"]["resourceType"] == "MedicationRequest"
        MedicationRequest.model_validate(action["resource"])  # raises when not a valid R4 resource


def test_req_hl7_cds_hooks_2_0_0_131(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#action (SHALL): [When sending an Action object,] when the type attribute
    [of the Action object] is create, the resource attribute SHALL contain a new FHIR resource to be created.

    The service suggests changes to the order being written, never new resources: no create actions."""
    assert [a for a in corpus.actions() if a["type"] == "create"] == []


def test_req_hl7_cds_hooks_2_0_0_132(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#action (SHALL): [When sending an Action object,] when the type attribute
    [of the Action object] is update, this holds the updated resource in its entirety and not just the changed
    fields."""
    checked = 0
    for exchange in (e for e in corpus.exchanges if e.service in ORDER_SERVICES):
        drafts = {
            e["resource"]["id"]: e["resource"] for e in exchange.request["context"]["draftOrders"]["entry"]
        }
        for card in exchange.body["cards"]:
            for suggestion in card.get("suggestions", []):
                for action in suggestion["actions"]:
                    updated = action["resource"]
                    original = json.loads(json.dumps(drafts[updated["id"]]))
                    assert set(updated) == set(original)
                    assert {k: v for k, v in updated.items() if k != "dosageInstruction"} == {
                        k: v for k, v in original.items() if k != "dosageInstruction"
                    }
                    dosage, before = updated["dosageInstruction"][0], original["dosageInstruction"][0]
                    assert dosage["route"] == before["route"]
                    checked += 1
    assert checked


def test_req_hl7_cds_hooks_2_0_0_133(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#action (SHALL): [When sending an Action object and when the type
    attribute of the Action object is delete], [the resource field SHALL NOT be used] to communicate a string
    of a FHIR id for delete suggestions"""
    for action in corpus.actions():
        assert not isinstance(action.get("resource"), str)
        if action["type"] == "delete":
            assert "resource" not in action


def test_req_hl7_cds_hooks_2_0_0_134(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#action (SHALL): [When sending an Action object and when the type
    attribute of the Action object is delete], the resourceID field SHOULD be provided"""
    assert all("resourceId" in a for a in corpus.actions() if a["type"] == "delete")
    assert not any(a["type"] == "delete" for a in corpus.actions())  # the service never suggests a deletion


def test_req_hl7_cds_hooks_2_0_0_135(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#action (SHALL): [When sending an Action object,] the resourceID field
    [SHALL be a] string data type"""
    assert all(isinstance(a["resourceId"], str) for a in corpus.actions() if "resourceId" in a)


def test_req_hl7_cds_hooks_2_0_0_136(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#reasons-for-rejecting-a-card (SHALL): [When sending
    card.overrideReason,] CDS Services MUST provide a human readable text in the display property"""
    for reason in (r for c in corpus.cards for r in c.get("overrideReasons", [])):
        assert " " in reason["display"] and reason["display"] != reason["code"]


def test_req_hl7_cds_hooks_2_0_0_138(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#link (SHALL): [When sending a Link object,] the label field is required
    [and SHALL be a] string data type"""
    links = [link for c in corpus.cards for link in c.get("links", [])]
    assert links and all(isinstance(link["label"], str) and link["label"] for link in links)


def test_req_hl7_cds_hooks_2_0_0_139(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#link (SHALL): [When sending a Link object,] the url field is required
    [and SHALL be a] URL data type"""
    assert all(is_absolute_url(link["url"]) for c in corpus.cards for link in c.get("links", []))


def test_req_hl7_cds_hooks_2_0_0_141(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#link (SHALL): [When sending a Link object,] the type field is required
    [and SHALL be a] string data type"""
    assert all(isinstance(link["type"], str) for c in corpus.cards for link in c.get("links", []))


def test_req_hl7_cds_hooks_2_0_0_142(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#link (SHALL): [When sending a Link object,] the type field [SHALL have
    values]  absolute … or smart. absolute indicates that the URL is absolute and should be treated as-is.
    smart indicates that the URL is absolute or smart indicates that the URL is a SMART app launch URL"""
    assert {link["type"] for c in corpus.cards for link in c.get("links", [])} == {"absolute"}


def test_req_hl7_cds_hooks_2_0_0_144(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#link (SHALL): [When sending a Link object,] the appContext field [SHALL
    be a] string data type"""
    links = [link for c in corpus.cards for link in c.get("links", [])]
    assert all(isinstance(link["appContext"], str) for link in links if "appContext" in link)


def test_req_hl7_cds_hooks_2_0_0_147(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#link (SHALL NOT): [When sending a Link object,] the appContext field  is
    not valid for absolute links [in other words, when link.type is absolute appContext SHALL NOT be
    populated]"""
    links = [link for c in corpus.cards for link in c.get("links", [])]
    assert links and not any("appContext" in link for link in links if link["type"] == "absolute")


def test_req_hl7_cds_hooks_2_0_0_148(client: InProcessClient, corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#feedback (MAY): A CDS Service MAY support a feedback endpoint [to gather
    suggestion analytics from the CDS client]"""
    card = next(c for c in corpus.cards if "suggestions" in c)
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "outcomeTimestamp": "2026-11-24T10:00:00Z",
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
            }
        ]
    }
    for service in SERVICES:
        response = client.post(f"/cds-services/{service}/feedback", json=body)
        assert response.status_code == 200


def test_req_hl7_cds_hooks_2_0_0_208(client: InProcessClient) -> None:
    """https://cds-hooks.hl7.org/2.0/#cross-origin-resource-sharing (SHALL): CDS Services and browser-based
    CDS Clients will require CORS support."""
    origin = {"Origin": "https://ehr.example"}
    for path in (
        "/cds-services",
        "/cds-services/ketamine-order-select",
        "/cds-services/ketamine-order-sign/feedback",
    ):
        preflight = client.options(
            path,
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert {"authorization", "content-type"} <= {
            h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
        }
    assert client.get("/cds-services", headers=origin).headers["access-control-allow-origin"] == "*"
    body = hook_request("order-sign", [oxycodone_order()])
    response = client.post("/cds-services/ketamine-order-sign", json=body, headers=origin)
    assert response.headers["access-control-allow-origin"] == "*"


def test_req_hl7_cds_hooks_2_0_0_213(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#update-stale-guidance (SHALL): Note that CDS Services will need to
    negotiate with CDS Clients to ensure that hooks that are required to ensure patient safety are supported
    by the CDS Client

    The discovery document says which hook carries the safety check."""
    for service in corpus.discovery["services"]:
        assert "ketamine-order-sign on order-sign: it is the safety check" in service["usageRequirements"]


def _keys(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def test_req_hl7_cds_hooks_2_0_0_214(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#extensions (SHALL): The value of an extension element MUST be a
    pre-coordinated JSON object"""
    cds_structures = [corpus.discovery] + [
        {k: v for k, v in card.items() if k != "suggestions"} for card in corpus.cards
    ]
    for structure in cds_structures:
        assert all(isinstance(item, dict) for key, item in _keys(structure) if key == "extension")


def test_req_hl7_cds_hooks_2_0_0_216(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#coding (SHALL): [When sending a coding object,] the code field is
    required [and SHALL be a] string data type"""
    codings = corpus.codings()
    assert codings and all(isinstance(c["code"], str) and c["code"] for c in codings)


def test_req_hl7_cds_hooks_2_0_0_217(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#coding (SHALL): [When sending a coding object,] the system field is
    required [and SHALL be a] string data type"""
    codings = corpus.codings()
    assert codings and all(isinstance(c["system"], str) and is_absolute_url(c["system"]) for c in codings)


def test_req_hl7_cds_hooks_2_0_0_218(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#coding (SHALL): [When sending a coding object,] the code field is
    required [and SHALL be a] string data type"""
    assert all(re.fullmatch(r"[a-z0-9-]+", c["code"]) for c in corpus.codings())


def test_req_hl7_cds_hooks_2_0_0_219(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#coding (SHALL): [When sending a coding object,] the display field is
    human-readable display required [when] [Override Reasons](https://cds-hooks.hl7.org/2.0/#overridereason)
    provided by CDS Service [are sent in card.overrideReason and SHALL be a] string data type"""
    reasons = [r for c in corpus.cards for r in c.get("overrideReasons", [])]
    assert reasons and all(isinstance(r["display"], str) for r in reasons)


def test_req_hl7_cds_hooks_2_0_0_220(corpus: Corpus) -> None:
    """https://cds-hooks.hl7.org/2.0/#coding (SHALL): [When sending a coding object,] the display field is
    human-readable display [which is] OPTIONAL  [when sending source.topic]"""
    topics = [c["source"]["topic"] for c in corpus.cards if "topic" in c["source"]]
    assert topics and all(isinstance(t.get("display", ""), str) for t in topics)
