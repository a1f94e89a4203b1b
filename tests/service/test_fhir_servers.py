"""FHIR servers the operator lists (``--fhir-server``, ``KETAMINE_CDS_FHIR_SERVERS``): read without a token
when the client sends none (an open server, as the CDS Hooks sandbox's), and, once any is listed, the only
servers the service contacts at all, with or without a token. Real servers and real FHIR stubs over HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server
from fhir_stub import (
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
    quantity,
    running,
    templates_of,
    topics,
    weight,
)

from ketamine_cds.service.settings import Settings

SIGN = "/cds-services/ketamine-order-sign"
ORDER = ketamine(rate=quantity(2, "mg/kg/h"))


def record() -> list[Json]:
    return [
        patient(),
        weight(70),
        planned_procedure(),
        condition("58214004", "Schizophrenia"),
        *encounter(False, contained=False),  # the Location is read by reference
    ]


@pytest.fixture(scope="module")
def open_fhir() -> Iterator[FhirStub]:
    """An open FHIR server (no token needed), the one the operator lists."""
    with running(FhirStub(record(), token=None)) as stub:
        yield stub


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory, open_fhir: FhirStub) -> Iterator[Server]:
    """A server listing the open FHIR server, one prefix on the command line and one in the environment."""
    data_dir = tmp_path_factory.mktemp("listed")
    env = {
        "KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1",
        "KETAMINE_CDS_FHIR_SERVERS": "https://unused.example/fhir",
    }
    server = Server(
        data_dir, env, args=["--fhir-server", open_fhir.base, "--fhir-server", "https://ehr.example/r4"]
    )
    server.start()
    yield server
    server.stop()


def _cards(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(c["summary"] for c in response.json()["cards"])


def test_a_listed_open_server_is_read_without_a_token_and_gives_the_prefetched_cards(
    listed: Server, open_fhir: FhirStub
) -> None:
    templates = templates_of(listed.url)
    contained = [*record()[:-2], *encounter(False)]  # the same record, the Location inside the Encounter
    prefetched = Case(contained, [ORDER], encounter_id="e1").request("order-sign", templates)
    response = httpx.post(listed.url + SIGN, json=prefetched, timeout=30)
    expected = _cards(response)
    assert sorted(topics(response.json()["cards"])) == ["contra-psychosis", "dose-infusion-limit"]
    open_fhir.requests.clear()
    body = hook_request("order-sign", [ORDER], encounter_id="e1", fhirServer=open_fhir.base)
    assert _cards(httpx.post(listed.url + SIGN, json=body, timeout=30)) == expected
    assert open_fhir.requests and all(auth is None for _, auth in open_fhir.requests)  # no token to send
    assert "/fhir/Location/e1-loc" in open_fhir.paths()


def test_a_server_off_the_list_is_never_contacted_with_or_without_a_token(listed: Server) -> None:
    with running(FhirStub(record())) as other:
        for auth in (None, authorization()):
            body = hook_request("order-sign", [ORDER], fhirServer=other.base)
            if auth is not None:
                body["fhirAuthorization"] = auth
            response = httpx.post(listed.url + SIGN, json=body, timeout=30)
            assert response.status_code == 412
            assert "not one of the FHIR servers this service is set up to read" in response.json()["error"]
    assert other.requests == []


@pytest.mark.parametrize(
    "variant",
    [
        "{base}x",  # another path beginning with the same letters
        "{base}/../admin",  # out of the listed path once normalized
        "{base}%2F..%2Fadmin",
        "http://localhost:{port}/fhir",  # the same port under another name
        "https://127.0.0.1:{port}/fhir",  # another scheme
        "http://user@127.0.0.1:{port}/fhir",  # user info
    ],
)
def test_only_the_listed_prefix_itself_is_trusted(listed: Server, open_fhir: FhirStub, variant: str) -> None:
    port = open_fhir.server.server_address[1]
    open_fhir.requests.clear()
    target = variant.format(base=open_fhir.base, port=port)
    body = hook_request("order-sign", [ORDER], fhirServer=target)
    response = httpx.post(listed.url + SIGN, json=body, timeout=30)
    assert response.status_code == 412
    assert open_fhir.requests == []


def test_a_path_below_a_listed_prefix_is_on_the_list(listed: Server) -> None:
    """A listed prefix covers the servers below it (one EHR, several FHIR endpoints)."""
    response = httpx.post(
        listed.url + SIGN,
        json=hook_request("order-sign", [ORDER], fhirServer="https://ehr.example/r4/tenant-7"),
        timeout=30,
    )
    assert response.status_code == 412
    assert "not one of the FHIR servers" not in response.json()["error"]  # allowed, then not reachable


def test_a_token_is_still_presented_to_a_listed_server_when_the_client_sends_one(
    listed: Server, open_fhir: FhirStub
) -> None:
    open_fhir.requests.clear()
    body = hook_request("order-sign", [ORDER], fhirServer=open_fhir.base, fhirAuthorization=authorization())
    assert httpx.post(listed.url + SIGN, json=body, timeout=30).status_code == 200
    assert open_fhir.requests and all(auth == "Bearer stub-access-token" for _, auth in open_fhir.requests)


def test_without_a_list_an_open_server_is_not_read(dev_server: Server, open_fhir: FhirStub) -> None:
    open_fhir.requests.clear()
    response = httpx.post(
        dev_server.url + SIGN, json=hook_request("order-sign", [ORDER], fhirServer=open_fhir.base), timeout=30
    )
    assert response.status_code == 412 and "no fhirAuthorization" in response.json()["error"]
    assert open_fhir.requests == []


def test_the_environment_lists_servers_separated_by_spaces() -> None:
    import os

    before = os.environ.get("KETAMINE_CDS_FHIR_SERVERS")
    os.environ["KETAMINE_CDS_FHIR_SERVERS"] = "https://a.example/fhir  http://127.0.0.1:8080/fhir\n"
    try:
        assert Settings.from_env().fhir_servers == ("https://a.example/fhir", "http://127.0.0.1:8080/fhir")
        assert Settings.from_env(fhir_servers=("https://b.example",)).fhir_servers == ("https://b.example",)
    finally:
        if before is None:
            del os.environ["KETAMINE_CDS_FHIR_SERVERS"]
        else:
            os.environ["KETAMINE_CDS_FHIR_SERVERS"] = before


@pytest.mark.parametrize("prefix", ["ftp://ehr.example/fhir", "https://ehr.example/fhir?x=1", "not a url"])
def test_a_malformed_fhir_server_prefix_stops_the_start_with_a_clear_line(
    tmp_path: Path, prefix: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ketamine_cds", "serve", "--data-dir", str(tmp_path), "--fhir-server", prefix],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--fhir-server" in result.stderr and "not a FHIR server base URL" in result.stderr
    assert "Traceback" not in result.stderr
