"""Issue 20's hardening on a real server: bounded strings, nothing forged or leaked in the log, draft order
limits, /docs, liveness and readiness."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Server
from fhir_stub import (
    Case,
    FhirStub,
    Json,
    authorization,
    encounter,
    hook_request,
    ketamine,
    patient,
    planned_procedure,
    quantity,
    running,
    weight,
)
from hostile_http import HostileServer
from jwks_stub import SigningKey, claims

SIGN = "/cds-services/ketamine-order-sign"
FEEDBACK = SIGN + "/feedback"
FORGED = "CRITICAL ketamine_cds.service: forged line"


def _case(order: Json | None = None) -> Case:
    return Case([patient(), weight(70), planned_procedure()], [order or ketamine(dose=quantity(10, "mg"))])


def _db(server: Server) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "ketamine-cds.sqlite3")


def _stored_instances(server: Server, fragment: str) -> int:
    with _db(server) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM assessments WHERE instr(hook_instance, ?) > 0", (fragment,)
        ).fetchone()
    return int(count)


def _forged(log: str) -> bool:
    return any(line.startswith(FORGED) for line in log.splitlines())


# --- item 12: bounded, storable, loggable strings ---------------------------------------------------------


def test_a_hook_instance_with_a_line_break_is_400_and_forges_no_log_line(
    dev_server: Server, client: httpx.Client, templates: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex
    for instance in (f"{marker}\n{FORGED}", f"{marker}\r{FORGED}", f"{marker}\u2028{FORGED}"):
        response = client.post(SIGN, json=_case().request("order-sign", templates, hookInstance=instance))
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "control-character"
        assert "hookInstance" in response.json()["error"]
    assert not _forged(dev_server.log_text())
    assert _stored_instances(dev_server, marker) == 0


def test_a_ten_megabyte_hook_instance_is_400_and_neither_stored_nor_logged(
    dev_server: Server, client: httpx.Client, templates: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex
    huge = marker + "x" * 10_000_000
    before = (dev_server.data_dir / f"server-{dev_server.port}.log").stat().st_size
    response = client.post(SIGN, json=_case().request("order-sign", templates, hookInstance=huge))
    assert response.status_code == 400
    assert response.json()["code"] == "field-too-long" and "hookInstance" in response.json()["error"]
    assert len(response.content) < 1000  # the value is not echoed
    assert _stored_instances(dev_server, marker) == 0
    dev_server.log_text()
    assert (dev_server.data_dir / f"server-{dev_server.port}.log").stat().st_size - before < 10_000


def test_the_longest_hook_instance_accepted_is_stored_whole(
    dev_server: Server, client: httpx.Client, templates: dict[str, str]
) -> None:
    instance = uuid.uuid4().hex + "-" * (256 - 33)
    response = client.post(SIGN, json=_case().request("order-sign", templates, hookInstance=instance))
    assert response.status_code == 200, response.text
    assert _stored_instances(dev_server, instance) == 1


def _feedback(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "overrideReason": {
            "reason": {"code": "prior-ketamine-exposure", "system": "https://cds.example/CodeSystem/x"},
            "userComment": "tolerated higher doses before",
        },
    }
    for path, value in changes.items():
        target = item
        *parents, last = path.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    return {"feedback": [item]}


@pytest.mark.parametrize(
    ("path", "value", "code"),
    [
        pytest.param("card", "c" * 257, "field-too-long", id="card too long"),
        pytest.param("card", "card\nforged", "control-character", id="card with a line break"),
        pytest.param("overrideReason.reason.code", "x" * 10_000, "field-too-long", id="code too long"),
        pytest.param("overrideReason.reason.code", "a\tb", "control-character", id="code with a tab"),
        pytest.param(
            "overrideReason.reason.system", "https://x.example/" + "s" * 5000, "field-too-long", id="system"
        ),
        pytest.param("overrideReason.reason.display", "d" * 5000, "field-too-long", id="display"),
        pytest.param("overrideReason.userComment", "c" * 10_000_000, "field-too-long", id="10 MB comment"),
        pytest.param(
            "outcomeTimestamp",
            "2026-11-24T10:00:00." + "1" * 1_000_000 + "Z",
            "field-too-long",
            id="a million digits of a second",
        ),
    ],
)
def test_feedback_strings_are_bounded(
    dev_server: Server, client: httpx.Client, path: str, value: str, code: str
) -> None:
    if path == "outcomeTimestamp":
        body = _feedback(outcome="accepted", overrideReason=None)
        del body["feedback"][0]["overrideReason"]
        body["feedback"][0]["outcomeTimestamp"] = value
    else:
        body = _feedback(**{path: value})
    response = client.post(FEEDBACK, json=body)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["code"] == code
    assert path.rsplit(".", 1)[-1] in response.json()["error"]
    with _db(dev_server) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM feedback WHERE card = ?", (body["feedback"][0]["card"],)
        ).fetchone()
    assert count == 0


def test_a_comment_may_have_line_breaks_and_is_kept_as_written(
    dev_server: Server, client: httpx.Client
) -> None:
    body = _feedback(**{"overrideReason.userComment": "line one\nline two"})
    assert client.post(FEEDBACK, json=body).status_code == 200
    with _db(dev_server) as db:
        stored = db.execute(
            "SELECT user_comment FROM feedback WHERE card = ?", (body["feedback"][0]["card"],)
        ).fetchone()
    assert stored == ("line one\nline two",)


def test_other_hook_strings_are_bounded(client: httpx.Client, templates: dict[str, str]) -> None:
    for key, value in (
        ("fhirServer", "https://ehr.example/" + "f" * 5000),
        ("hook", "order-sign" + "x" * 5000),
    ):
        body = _case().request("order-sign", templates)
        body[key] = value
        response = client.post(SIGN, json=body)
        assert response.status_code == 400 and response.json()["code"] == "field-too-long", key
    body = hook_request("order-sign", [ketamine(dose=quantity(10, "mg"))], pid="p" * 5000)
    response = client.post(SIGN, json=body)
    assert response.status_code == 400 and "patientId" in response.json()["error"]


# --- item 11: no patient identifier in the log, whatever the logging configuration ------------------------

# The service as an operator may embed it: the app made, then the operator's own logging configuration
# applied, which turns every logger up to DEBUG, httpx's (it logs each request's URL at INFO) included.
VERBOSE_LAUNCHER = """
import logging.config, sys
import uvicorn
from ketamine_cds.service.app import create_app
app = create_app()
logging.config.dictConfig({
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}},
    "root": {"level": "DEBUG", "handlers": ["out"]},
    "loggers": {"httpx": {"level": "DEBUG"}, "httpcore": {"level": "DEBUG"}},
})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[sys.argv.index("--port") + 1]), log_level="debug")
"""


def test_fhir_reads_log_no_patient_identifier_even_with_every_logger_at_debug(tmp_path: Path) -> None:
    pid, eid = f"pid-{uuid.uuid4().hex}", f"enc-{uuid.uuid4().hex}"
    resources = [patient(pid), weight(70, pid), *encounter(False, pid=pid, eid=eid, contained=False)]
    order = ketamine(pid=pid, rate=quantity(2, "mg/kg/h"))
    order["encounter"] = {"reference": f"Encounter/{eid}"}
    server = Server(tmp_path, {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1"}, command=["-c", VERBOSE_LAUNCHER])
    server.start()
    try:
        with running(FhirStub(resources)) as stub:
            body = hook_request(
                "order-sign", [order], pid=pid, fhirServer=stub.base, fhirAuthorization=authorization()
            )
            response = httpx.post(server.url + SIGN, json=body, timeout=30)
            assert response.status_code == 200, response.text
            assert any(path.startswith(f"/fhir/Condition?patient={pid}") for path in stub.paths())
        log = server.log_text()
    finally:
        server.stop()
    assert "DEBUG" in log and "http" in log  # the verbose configuration is in force
    assert pid not in log and eid not in log


# --- item 18: /docs -----------------------------------------------------------------------------------------


def test_the_api_docs_are_off_by_default(client: httpx.Client) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path
    assert client.get("/openapi.json").status_code == 200  # the API's description stays public


def test_the_api_docs_when_turned_on_come_with_a_content_security_policy(tmp_path: Path) -> None:
    import base64
    import hashlib
    import re

    server = Server(tmp_path, {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1"}, args=["--docs"]).start()
    try:
        response = httpx.get(server.url + "/docs", timeout=30)
        assert httpx.get(server.url + "/redoc", timeout=30).status_code == 404
    finally:
        server.stop()
    assert response.status_code == 200 and "swagger-ui" in response.text
    policy = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if " " in d.strip())
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert (
        "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    )
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    assert len(inline) == 1  # the one inline script is allowed by its hash, and only it
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in directives["script-src"]
    sources = re.findall(r'(?:src|href)="(https?://[^"]+)"', response.text)
    assert sources and all(s.startswith("https://cdn.jsdelivr.net/") or "favicon" in s for s in sources)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# --- item 9: a FHIR server or key set URL that drips or floods ---------------------------------------------

FHIR_DEADLINE_S = 2.0  # the guarded server's setting (the default is 5 s)
JWKS_DEADLINE_S = 1.5  # likewise (the default is 3 s)
MAX_BYTES = 4 * 1024 * 1024
SLACK_S = 1.5  # the assessment, the audit write and a busy machine


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, hostile: HostileServer) -> Iterator[Server]:
    """A server with short deadlines and a small response limit, trusting issuers whose keys drip or flood."""
    data_dir = tmp_path_factory.mktemp("guarded")
    trust = data_dir / "trust.json"
    issuers = [
        {"iss": f"https://{mode}.example", "jwks_url": hostile.url(f"/{mode}/jwks.json")}
        for mode in ("drip", "drip-headers", "huge", "huge-declared")
    ]
    trust.write_text(json.dumps({"issuers": issuers}))
    server = Server(data_dir)
    server.env = {
        "KETAMINE_CDS_TRUST_LIST": str(trust),
        "KETAMINE_CDS_PUBLIC_URL": server.url,
        "KETAMINE_CDS_FHIR_TIMEOUT_S": str(FHIR_DEADLINE_S),
        "KETAMINE_CDS_FHIR_MAX_BYTES": str(MAX_BYTES),
        "KETAMINE_CDS_JWKS_TIMEOUT_S": str(JWKS_DEADLINE_S),
    }
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["drip", "drip-headers", "huge", "huge-declared"])
def test_a_fhir_server_that_drips_or_floods_is_cut_off_at_the_calls_deadline_in_bounded_memory(
    tmp_path: Path, hostile: HostileServer, mode: str
) -> None:
    """One call reads from fhirServer in three rounds (the Medication the draft references, the prefetch keys
    left out, the Encounter the draft names): all of them together get the call's deadline."""
    server = Server(
        tmp_path,
        {
            "KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1",
            "KETAMINE_CDS_FHIR_TIMEOUT_S": str(FHIR_DEADLINE_S),
            "KETAMINE_CDS_FHIR_MAX_BYTES": str(MAX_BYTES),
        },
    ).start()
    try:
        assert server.process is not None
        order = ketamine(
            dose=quantity(10, "mg"),
            medication={"reference": "Medication/m1", "display": "ketamine 10 mg/mL injection"},
        )
        order["encounter"] = {"reference": "Encounter/e1"}
        body = hook_request(
            "order-sign",
            [order],
            prefetch={"patient": patient()},  # the rest is read from the server
            fhirServer=hostile.url(f"/{mode}/fhir"),
            fhirAuthorization=authorization(),
        )
        warm = hook_request(
            "order-sign", [ketamine(dose=quantity(10, "mg"))], prefetch={"patient": patient()}
        )
        assert httpx.post(server.url + SIGN, json=warm, timeout=30).status_code == 200
        before = _peak_rss_kb(server.process.pid)
        started = time.monotonic()
        response = httpx.post(server.url + SIGN, json=body, timeout=60)
        took = time.monotonic() - started
        grew_mb = (_peak_rss_kb(server.process.pid) - before) / 1024
        assert response.status_code == 200, response.text
        summaries = [c["summary"] for c in response.json()["cards"]]
        assert any(s.startswith("Checked without part of the record") for s in summaries), summaries
        assert took < FHIR_DEADLINE_S + SLACK_S, took
        assert grew_mb < 64, grew_mb
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["drip", "huge"])
def test_a_patient_that_a_dripping_or_flooding_server_cannot_give_is_412_within_the_deadline(
    tmp_path: Path, hostile: HostileServer, mode: str
) -> None:
    server = Server(
        tmp_path,
        {
            "KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1",
            "KETAMINE_CDS_FHIR_TIMEOUT_S": str(FHIR_DEADLINE_S),
            "KETAMINE_CDS_FHIR_MAX_BYTES": str(MAX_BYTES),
        },
    ).start()
    try:
        body = hook_request(
            "order-sign",
            [ketamine(dose=quantity(10, "mg"))],
            fhirServer=hostile.url(f"/{mode}/fhir"),
            fhirAuthorization=authorization(),
        )
        started = time.monotonic()
        response = httpx.post(server.url + SIGN, json=body, timeout=60)
        took = time.monotonic() - started
    finally:
        server.stop()
    assert response.status_code == 412, response.text
    assert "the patient could not be read" in response.json()["error"]
    assert "patient" in response.json()["missingPrefetch"]
    assert took < FHIR_DEADLINE_S + SLACK_S, took


def test_a_fhir_read_within_the_limits_is_read_as_before(tmp_path: Path) -> None:
    server = Server(
        tmp_path,
        {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1", "KETAMINE_CDS_FHIR_MAX_BYTES": str(MAX_BYTES)},
    ).start()
    try:
        resources = [patient(), weight(70), planned_procedure()]
        with running(FhirStub(resources)) as stub:
            body = hook_request(
                "order-sign",
                [ketamine(dose=quantity(2, "mg/kg"))],
                fhirServer=stub.base,
                fhirAuthorization=authorization(),
            )
            response = httpx.post(server.url + SIGN, json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert [c["indicator"] for c in response.json()["cards"]] == ["critical"]
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["drip", "drip-headers", "huge", "huge-declared"])
def test_a_key_set_url_that_drips_or_floods_is_401_within_its_deadline(guarded: Server, mode: str) -> None:
    key = SigningKey.ec("k1")
    token = key.sign(claims(f"https://{mode}.example", guarded.url + SIGN))
    body = hook_request("order-sign", [ketamine(dose=quantity(10, "mg"))])
    started = time.monotonic()
    response = httpx.post(
        guarded.url + SIGN, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    took = time.monotonic() - started
    assert response.status_code == 401, response.text
    assert "cannot be fetched" in response.json()["error"]
    assert took < JWKS_DEADLINE_S + SLACK_S, took


# --- item 10: many draft orders ---------------------------------------------------------------------------


def test_more_draft_orders_than_the_service_reads_in_one_call_is_400(
    client: httpx.Client, templates: dict[str, str]
) -> None:
    limit = 200
    for hook, path in (("order-sign", SIGN), ("order-select", "/cds-services/ketamine-order-select")):
        orders = [ketamine(oid=f"k{i}", dose=quantity(10, "mg")) for i in range(limit + 1)]
        case = Case([patient(), weight(70), planned_procedure()], orders)
        response = client.post(path, json=case.request(hook, templates))
        assert response.status_code == 400, response.text[:200]
        assert response.json()["code"] == "too-many-draft-orders"
        assert "201" in response.json()["error"] and "200" in response.json()["error"]
        case.orders = orders[:limit]
        response = client.post(path, json=case.request(hook, templates))
        assert response.status_code == 200, response.text[:200]
