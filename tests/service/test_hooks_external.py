"""Real-world input on a real server: every Synthea sample patient with a ketamine draft order, and the CDC
opioid guideline IG's own CDS Hooks requests (they order opioids, not ketamine: no cards)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Server
from fhir_stub import Case, Json, check_card, ketamine, quantity, templates_of

EXTERNAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "external-test-data"
SYNTHEA = sorted((EXTERNAL / "synthea-r4-smart-sample").glob("*_*-*.json"))
OPIOID_REQUESTS = sorted((EXTERNAL / "opioid-cds-r4-hook-cases" / "requests").glob("*/*.json"))
SERVICE_OF_HOOK = {"order-sign": "ketamine-order-sign", "order-select": "ketamine-order-select"}


@pytest.fixture(scope="module")
def client(dev_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dev_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def templates(dev_server: Server) -> dict[str, str]:
    return templates_of(dev_server.url)


def test_the_external_data_is_there() -> None:
    assert len(SYNTHEA) == 25
    assert len(OPIOID_REQUESTS) == 67


def synthea_case(path: Path) -> Case:
    bundle = json.loads(path.read_text())
    record: list[Json] = [entry["resource"] for entry in bundle["entry"]]
    pid = next(r["id"] for r in record if r["resourceType"] == "Patient")
    order = ketamine(oid="ketamine-draft", pid=pid, dose=quantity("0.5", "mg/kg"))
    return Case(record, [order], pid=pid)


@pytest.mark.parametrize(
    "path", SYNTHEA, ids=[p.name.split("_")[0] + "_" + p.name.split("_")[1] for p in SYNTHEA]
)
def test_synthea_patient_with_a_ketamine_order(
    path: Path, client: httpx.Client, templates: dict[str, str], dev_server: Server
) -> None:
    case = synthea_case(path)
    for hook, service in SERVICE_OF_HOOK.items():
        body = case.request(hook, templates)
        assert body["prefetch"]["patient"]["id"] == case.pid
        response = client.post(f"/cds-services/{service}", json=body)
        assert response.status_code == 200, response.text
        cards: list[Json] = response.json()["cards"]
        for card in cards:
            check_card(card, dev_server.url)
        # every card cites its statement, but a note about the reference (a patient under 18), which no
        # statement says
        topics = [c["source"]["topic"]["code"] for c in cards if "topic" in c["source"]]
        assert all("no statement for children" in c["summary"] for c in cards if "topic" not in c["source"])
        assert "dose-bolus-limit" in topics  # 0.5 mg/kg is over 0.35 mg/kg whatever the record says
        if hook == "order-sign":
            # interruptive cards, and a warning that the record's weight is old: Synthea's last weight was
            # taken years before the question (every dose worked out from a weight says which and when)
            assert all(t == "dose-bolus-limit" or t.startswith("contra-") for t in topics)
            warnings = [c for c in cards if c["indicator"] != "critical"]
            assert [c["indicator"] for c in warnings] == ["warning"]
            assert "body weight used is" in warnings[0]["summary"] and "old" in warnings[0]["summary"]
        else:
            assert len(cards) >= len(topics) >= 1


def _opioid_request(path: Path) -> Any:
    # 62 of the 67 files carry a stray trailing "}": read the first JSON value only
    value, _ = json.JSONDecoder().raw_decode(path.read_text())
    return value


@pytest.mark.parametrize("path", OPIOID_REQUESTS, ids=[p.stem for p in OPIOID_REQUESTS])
def test_opioid_cds_hook_requests(path: Path, client: httpx.Client) -> None:
    request = _opioid_request(path)
    service = SERVICE_OF_HOOK.get(request["hook"])
    if service is None:  # patient-view requests: for ketamine-patient-view, not the order services
        response = client.post("/cds-services/ketamine-order-sign", json=request)
        assert response.status_code == 400
        assert "answers the order-sign hook, not patient-view" in response.json()["error"]
        # Their prefetch is the opioid IG's, their fhirServer comes without a token (and no server is listed):
        # the ketamine orders cannot be had, and the service says so rather than answering "nothing".
        response = client.post("/cds-services/ketamine-patient-view", json=request)
        assert response.status_code == 412, response.text
        assert "ketamine orders could not be read" in response.json()["error"]
        assert response.json()["missingPrefetch"] == ["ketamineRequests", "ketamineAdministrations"]
        return
    response = client.post(f"/cds-services/{service}", json=request)
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}
