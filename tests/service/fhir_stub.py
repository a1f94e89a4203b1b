"""FHIR test data for the CDS Hooks tests: resource builders, a CDS Client's prefetch, and a FHIR server stub.

``search`` answers a FHIR read or search over a list of resources (the subset of FHIR search the service's
prefetch templates use). The same function satisfies prefetch templates the way a CDS Client would
(``prefetch_for``) and serves the stub FHIR server (``FhirStub``: ``http.server`` in a thread on 127.0.0.1,
checking the Bearer token), so prefetched and fetched data are the same by construction.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

Json = dict[str, Any]

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
IV = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}
KETAMINE_50 = {
    "coding": [{"system": RXNORM, "code": "238083", "display": "ketamine 50 MG/ML Injectable Solution"}]
}
TOKEN = "stub-access-token"

# --- builders ----------------------------------------------------------------------------------------


def concept(system: str, code: str, display: str | None = None) -> Json:
    coding: Json = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def quantity(value: float | int | str, unit: str) -> Json:
    number = Decimal(str(value))
    return {
        "value": int(number) if number == number.to_integral_value() else float(number),
        "unit": unit,
        "system": UCUM,
        "code": unit,
    }


def patient(pid: str = "p1", birth_date: str = "1970-05-01", gender: str = "female") -> Json:
    return {
        "resourceType": "Patient",
        "id": pid,
        "birthDate": birth_date,
        "gender": gender,
        "name": [{"family": "Testpatient", "given": ["Hidden"]}],
    }


def weight(kg: float | str, pid: str = "p1", oid: str = "w1", when: str | None = None) -> Json:
    """A body weight taken today (the service asks about today; an older weight gets a warning card), or
    ``when``."""
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": concept(LOINC, "29463-7", "Body weight"),
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when or dt.date.today().isoformat(),  # the service's own "today"
        "valueQuantity": quantity(kg, "kg"),
    }


def condition(code: str, display: str, pid: str = "p1", cid: str = "c1", system: str = SNOMED) -> Json:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "code": concept(system, code, display),
        "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        "verificationStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
        ),
    }


def planned_procedure(
    code: str = "609588000", display: str = "Total knee replacement", pid: str = "p1"
) -> Json:
    return {
        "resourceType": "Procedure",
        "id": "proc1",
        "status": "preparation",
        "code": concept(SNOMED, code, display),
        "subject": {"reference": f"Patient/{pid}"},
    }


def encounter(
    intensive_care: bool, pid: str = "p1", eid: str = "e1", *, contained: bool = True
) -> list[Json]:
    """An in-progress Encounter at a Location typed ICU, or at a general ward (v3 RoleCode HU).

    ``contained``: the Location inside the Encounter (as an EHR may send it; an instance read of the Encounter
    then brings it), else a separate resource the Encounter references (the service reads it afterwards from
    the FHIR server: the recommended prefetch subset has no ``_include``)."""
    code, display = ("ICU", "Intensive care unit") if intensive_care else ("HU", "Hospital unit")
    location = {
        "resourceType": "Location",
        "id": f"{eid}-loc",
        "name": display,
        "type": [concept(ROLE_CODE, code, display)],
    }
    enc: Json = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{pid}"},
        "location": [{"location": {"reference": f"Location/{eid}-loc"}, "status": "active"}],
    }
    if contained:
        enc["contained"] = [location]
        enc["location"][0]["location"]["reference"] = f"#{eid}-loc"
        return [enc]
    return [enc, location]


def ketamine(
    *,
    oid: str = "k1",
    pid: str = "p1",
    dose: Json | None = None,
    rate: Json | None = None,
    medication: Json | None = None,
    contained: list[Json] | None = None,
    status: str = "draft",
) -> Json:
    """A draft IV ketamine MedicationRequest with a bolus (``dose``) or an infusion rate (``rate``)."""
    dose_and_rate: Json = {}
    if dose is not None:
        dose_and_rate["doseQuantity"] = dose
    if rate is not None:
        dose_and_rate["rateQuantity"] = rate
    dosage: Json = {"route": IV}
    if dose_and_rate:
        dosage["doseAndRate"] = [dose_and_rate]
    request: Json = {
        "resourceType": "MedicationRequest",
        "id": oid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": "2026-11-24",
        "dosageInstruction": [dosage],
    }
    if medication is not None:
        request["medicationReference"] = medication
    else:
        request["medicationCodeableConcept"] = KETAMINE_50
    if contained is not None:
        request["contained"] = contained
    return request


def ketamine_solution(mg_per_ml: int, mid: str = "ket10") -> Json:
    """A contained ketamine Medication with its strength (mg/mL)."""
    return {
        "resourceType": "Medication",
        "id": mid,
        "code": {"text": f"ketamine {mg_per_ml} mg/mL"},
        "ingredient": [
            {
                "itemCodeableConcept": {"text": "ketamine hydrochloride"},
                "strength": {"numerator": quantity(mg_per_ml, "mg"), "denominator": quantity(1, "mL")},
            }
        ],
    }


def oxycodone_order(oid: str = "o1", pid: str = "p1") -> Json:
    return {
        "resourceType": "MedicationRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": concept(RXNORM, "1049621", "oxycodone hydrochloride 5 MG Oral Tablet"),
        "dosageInstruction": [
            {
                "route": concept(SNOMED, "26643006", "Oral route"),
                "doseAndRate": [{"doseQuantity": quantity(1, "tablet")}],
            }
        ],
    }


# --- FHIR search over a list of resources ------------------------------------------------------------


def _codes(resource: Mapping[str, Any]) -> set[tuple[str | None, str]]:
    found: set[tuple[str | None, str]] = set()
    for key in ("code", "medicationCodeableConcept"):
        value = resource.get(key)
        for coding in value.get("coding", []) if isinstance(value, Mapping) else []:
            found.add((coding.get("system"), coding.get("code")))
    return found


def _refers_to_patient(resource: Mapping[str, Any], pid: str) -> bool:
    for key in ("subject", "patient"):
        ref = resource.get(key)
        target = ref.get("reference", "") if isinstance(ref, Mapping) else ""
        if target in (f"Patient/{pid}", f"urn:uuid:{pid}") or target.endswith(f"/Patient/{pid}"):
            return True
    return False


def _when(resource: Mapping[str, Any]) -> str:
    for key in ("effectiveDateTime", "issued", "authoredOn", "recordedDate"):
        if isinstance(resource.get(key), str):
            return str(resource[key])
    return ""


def _matches(resource: Mapping[str, Any], name: str, values: list[str]) -> bool:
    if name == "patient":
        return _refers_to_patient(resource, values[0])
    if name == "status":
        return resource.get("status") in values
    if name == "code":
        wanted = {(v.split("|", 1)[0], v.split("|", 1)[1]) if "|" in v else (None, v) for v in values}
        have = _codes(resource)
        return any(w in have or (w[0] is None and any(c == w[1] for _, c in have)) for w in wanted)
    raise ValueError(f"search parameter {name!r} is not supported by the stub")


def _resolve(resources: list[Json], reference: str) -> Json | None:
    key = reference.split("/")[-2:] if "/" in reference else ["", reference.removeprefix("urn:uuid:")]
    for r in resources:
        if r.get("id") == key[-1] and (not key[0] or r.get("resourceType") == key[0]):
            return r
    return None


def search(resources: list[Json], query: str, *, base: str = "http://ehr.example/fhir") -> Json | None:
    """A read (``Type/id``: the resource or None) or a search (``Type?...``: a searchset Bundle), in the
    subset of FHIR search CDS Hooks 2.0 recommends for prefetch (anything else is a ValueError: 400)."""
    path, _, params = query.partition("?")
    parts = path.strip("/").split("/")
    if len(parts) == 2:
        return _resolve(resources, f"{parts[0]}/{parts[1]}")
    rtype = parts[0]
    matched = [r for r in resources if r.get("resourceType") == rtype]
    count: int | None = None
    descending = False
    for name, value in urllib.parse.parse_qsl(params, keep_blank_values=True):
        if name == "_count":
            count = int(value)
        elif name == "_sort":
            descending = value.startswith("-")
        else:
            matched = [r for r in matched if _matches(r, name, value.split(","))]
    if descending:
        matched.sort(key=_when, reverse=True)
    if count is not None:
        matched = matched[:count]
    entries = [
        {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in matched
    ]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(matched), "entry": entries}


def render(template: str, context: Mapping[str, str]) -> str | None:
    missing = [m for m in re.findall(r"\{\{context\.(\w+)\}\}", template) if not context.get(m)]
    if missing:
        return None
    return re.sub(
        r"\{\{context\.(\w+)\}\}", lambda m: urllib.parse.quote(context[m.group(1)], safe=""), template
    )


def prefetch_for(
    templates: Mapping[str, str],
    resources: list[Json],
    context: Mapping[str, str],
    *,
    skip: Iterable[str] = (),
) -> Json:
    """What a CDS Client sends: each template satisfied from the record; ``null`` when it finds nothing."""
    result: Json = {}
    for key, template in templates.items():
        query = render(template, context)
        if query is None or key in skip:
            continue
        found = search(resources, query)
        if found is not None and found.get("resourceType") == "Bundle" and not found["entry"]:
            found = None
        result[key] = found
    return result


def hook_request(
    hook: str,
    orders: list[Json],
    *,
    prefetch: Json | None = None,
    pid: str = "p1",
    encounter_id: str | None = None,
    selections: list[str] | None = None,
    **extra: Any,
) -> Json:
    context: Json = {"userId": "Practitioner/dr1", "patientId": pid}
    if hook != "patient-view":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": o} for o in orders],
        }
    if encounter_id:
        context["encounterId"] = encounter_id
    if hook == "order-select":
        context["selections"] = (
            selections if selections is not None else [f"MedicationRequest/{o['id']}" for o in orders]
        )
    body: Json = {"hook": hook, "hookInstance": f"hi-{time.monotonic_ns()}", "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


@dataclass
class Case:
    """A patient's record and the orders being written, ready to be sent to either hook."""

    record: list[Json]
    orders: list[Json]
    pid: str = "p1"
    encounter_id: str | None = None

    @property
    def context(self) -> dict[str, str]:
        return {"patientId": self.pid, **({"encounterId": self.encounter_id} if self.encounter_id else {})}

    def request(self, hook: str, templates: Mapping[str, str], **extra: Any) -> Json:
        prefetch = prefetch_for(templates, self.record, self.context)
        return hook_request(
            hook, self.orders, prefetch=prefetch, pid=self.pid, encounter_id=self.encounter_id, **extra
        )


def templates_of(base_url: str, hook: str = "order-select") -> dict[str, str]:
    """The running service's prefetch templates for a hook, from discovery (as a CDS Client reads them)."""
    return templates_in(httpx.get(base_url + "/cds-services", timeout=10).json(), hook)


def templates_in(discovery: Json, hook: str = "order-select") -> dict[str, str]:
    """A hook's prefetch templates in a discovery document."""
    prefetch: dict[str, str] = next(s for s in discovery["services"] if s["hook"] == hook)["prefetch"]
    return prefetch


# --- the stub FHIR server ----------------------------------------------------------------------------


@dataclass
class FhirStub:
    """A FHIR server on 127.0.0.1 serving reads and searches over ``resources``; records every request.

    ``token`` None: an open server (no token needed, as the CDS Hooks sandbox's default server). Searches
    also come as ``POST {base}/{Type}/_search`` with a form body (FHIR R4 http.html#search; the sandbox tries
    that first), recorded as the equivalent GET."""

    resources: list[Json]
    token: str | None = TOKEN
    page_size: int | None = None  # page searchsets with next links
    fail_status: int | None = None  # answer every request with this status
    fail_paths: dict[str, int] = field(default_factory=dict)  # a path holding the key is answered this status
    delay_s: float = 0.0
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path and query, Authorization)
    methods: list[str] = field(default_factory=list)  # GET, or POST for a _search, one per request

    def __post_init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.methods.append("GET")
                self._answer(self.path)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = self.rfile.read(length).decode()
                path, _, query = self.path.partition("?")
                if not path.endswith("/_search"):
                    self._send(405, _outcome("not-supported", "only _search is posted"))
                    return
                stub.methods.append("POST")
                self._answer(path.removesuffix("/_search") + "?" + "&".join(q for q in (query, form) if q))

            def _answer(self, path: str) -> None:
                stub.requests.append((path, self.headers.get("Authorization")))
                if stub.delay_s:
                    time.sleep(stub.delay_s)
                self._send(*stub.answer(path, self.headers.get("Authorization")))

            def _send(self, status: int, body: Json) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/fhir"

    def answer(self, path: str, authorization: str | None) -> tuple[int, Json]:
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, _outcome("login", "a valid Bearer token is required")
        if self.fail_status is not None:
            return self.fail_status, _outcome("exception", "stub failure")
        for fragment, status in self.fail_paths.items():
            if fragment in path:
                return status, _outcome("exception", "stub failure")
        query = path.removeprefix("/fhir/")
        page = 0
        if "_page=" in query:
            query, _, page_text = query.rpartition("&_page=")
            page = int(page_text)
        try:
            found = search(self.resources, query, base=self.base)
        except ValueError as exc:
            return 400, _outcome("not-supported", str(exc))
        if found is None:
            return 404, _outcome("not-found", "no such resource")
        if found["resourceType"] == "Bundle" and self.page_size:
            entries = found["entry"]
            found = {**found, "entry": entries[page * self.page_size : (page + 1) * self.page_size]}
            if (page + 1) * self.page_size < len(entries):
                found["link"] = [{"relation": "next", "url": f"{self.base}/{query}&_page={page + 1}"}]
        return 200, found

    def paths(self) -> list[str]:
        return [urllib.parse.unquote(p) for p, _ in self.requests]


def _outcome(code: str, text: str) -> Json:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


@contextmanager
def running(stub: FhirStub) -> Iterator[FhirStub]:
    stub.thread.start()
    try:
        yield stub
    finally:
        stub.server.shutdown()
        stub.server.server_close()


def authorization(token: str = TOKEN, expires_in: int = 300) -> Json:
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": "patient/*.read",
        "subject": "ketamine-cds",
    }


# --- checking cards ----------------------------------------------------------------------------------


def topics(cards: list[Json]) -> list[str]:
    """The statement each card cites (its source topic), or "" for a card that cites none."""
    return [c["source"].get("topic", {}).get("code", "") for c in cards]


INDICATORS = ("info", "warning", "critical")


def empty_values(value: Any, path: str = "") -> list[str]:
    """Paths of null or empty JSON elements (CDS Hooks 2.0: elements SHALL NOT be null or empty)."""
    if value is None or value in ("", [], {}):
        return [path or "(root)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in empty_values(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in empty_values(v, f"{path}[{i}]")]
    return []


def is_absolute_url(url: Any) -> bool:
    parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    return parsed is not None and parsed.scheme in ("http", "https") and bool(parsed.netloc)


def check_card(card: Json, base_url: str) -> None:
    """A card as CDS Hooks 2.0 and this service's conventions require."""
    assert empty_values(card) == [], card
    assert isinstance(card["uuid"], str)
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert isinstance(card["detail"], str)
    assert card["indicator"] in INDICATORS
    source = card["source"]
    assert isinstance(source["label"], str)
    assert "url" not in source or is_absolute_url(source["url"])
    topic = source.get("topic")
    if topic is not None:
        assert isinstance(topic["system"], str) and isinstance(topic["code"], str)
        assert source["label"].endswith(")") and "grade" in source["label"]
    for link in card.get("links", []):
        assert isinstance(link["label"], str) and link["type"] in ("absolute", "smart")
        assert is_absolute_url(link["url"]) and link["url"].startswith(base_url)
        assert "appContext" not in link or link["type"] == "smart"
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for suggestion in card["suggestions"]:
            assert isinstance(suggestion["label"], str) and isinstance(suggestion["uuid"], str)
            assert isinstance(suggestion.get("isRecommended", False), bool)
            for action in suggestion["actions"]:
                assert action["type"] in ("create", "update", "delete")
                assert isinstance(action["description"], str)
                if action["type"] in ("create", "update"):
                    assert isinstance(action["resource"], dict) and action["resource"]["resourceType"]
    for reason in card.get("overrideReasons", []):
        assert all(isinstance(reason[k], str) for k in ("system", "code", "display"))
