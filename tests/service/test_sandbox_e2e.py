"""End to end with the reference CDS client's own code: the CDS Hooks sandbox's JWT generator, prefetch and
hook request logic and card feedback (../shared/external-test-data/cds-hooks-sandbox, unmodified), run under
Node (sandbox/run-sandbox.js) against a real server whose trust list holds the sandbox's inline key set, and
a real FHIR server stub holding a Synthea patient.

- The sandbox signs with its own key (ES384) and always sends its ``jku``: accepted through the inline keys,
  the ``jku`` never fetched.
- It prefetches from the FHIR server itself (POST ``_search``, then GET), sends searches that find nothing
  as empty Bundles, skips the encounter template it cannot fill, and sends no ``fhirAuthorization`` for an
  open server: the service reads nothing more and answers fully.
- With every prefetch key left out, the service reads the same data from the open server the operator lists,
  without a token, and gives the same cards; a server off the list is refused (412) and never contacted.
- Feedback is what its card list sends when a suggestion is taken or a card dismissed with a reason.

Node and npm come from Debian (``scripts/test`` installs them as root); the npm packages the sandbox's
package.json names are installed from the registry by ``npm ci`` (sandbox/package-lock.json). Without Node
the module is skipped, unless KETAMINE_CDS_REQUIRE_NODE is set (as CI does).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server
from fhir_stub import SNOMED, FhirStub, Json, concept, ketamine, quantity, running, templates_of

from shared_data import EXTERNAL

SANDBOX = EXTERNAL / "cds-hooks-sandbox"
RUNNER = Path(__file__).resolve().parent / "sandbox"
SYNTHEA = next((EXTERNAL / "synthea-r4-smart-sample").glob("Suzi_Bechtelar_*.json"))
ISSUER = "https://sandbox.cds-hooks.org"
USER = "Practitioner/sandbox-user"
SIGN, SELECT = "ketamine-order-sign", "ketamine-order-select"

NODE = shutil.which("node") or shutil.which("nodejs")
NPM = shutil.which("npm")
if (NODE is None or NPM is None) and os.environ.get("KETAMINE_CDS_REQUIRE_NODE"):
    raise RuntimeError("KETAMINE_CDS_REQUIRE_NODE is set but node or npm is missing")
pytestmark = pytest.mark.skipif(NODE is None or NPM is None, reason="Node.js and npm are not installed")


# --- the sandbox under Node ----------------------------------------------------------------------------


def _install_node_packages() -> None:
    """``npm ci`` once per change of the lock file (node_modules is not in the repository)."""
    lock = hashlib.sha256((RUNNER / "package-lock.json").read_bytes()).hexdigest()
    marker = RUNNER / "node_modules" / ".ketamine-cds-lock"
    if marker.exists() and marker.read_text() == lock:
        return
    assert NPM is not None
    subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=RUNNER,
        check=True,
        timeout=600,
    )
    marker.write_text(lock)


@pytest.fixture(scope="module")
def sandbox() -> Any:
    """Runs a plan of sandbox steps (see sandbox/run-sandbox.js) and gives their results."""
    _install_node_packages()

    def run(*steps: Json) -> list[Json]:
        assert NODE is not None
        plan = json.dumps({"sandbox": str(SANDBOX), "steps": list(steps)})
        done = subprocess.run(
            [NODE, str(RUNNER / "run-sandbox.js")], input=plan, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        results: list[Json] = json.loads(done.stdout)
        return results

    return run


# --- a Synthea patient on FHIR servers, and the service ---------------------------------------------------


def _synthea_record() -> tuple[list[Json], str]:
    bundle = json.loads(SYNTHEA.read_text())
    record: list[Json] = [entry["resource"] for entry in bundle["entry"]]
    pid = next(r["id"] for r in record if r["resourceType"] == "Patient")
    return record, pid


RECORD, PID = _synthea_record()


def _pregnant(record: list[Json]) -> list[Json]:
    status: Json = {
        "resourceType": "Observation",
        "id": "pregnancy-status-now",
        "status": "final",
        "code": concept("http://loinc.org", "82810-3", "Pregnancy status"),
        "subject": {"reference": f"urn:uuid:{PID}"},
        "effectiveDateTime": "2026-11-20",
        "valueCodeableConcept": concept(SNOMED, "77386006", "Pregnant"),
    }
    return [*copy.deepcopy(record), status]


@pytest.fixture(scope="module")
def fhir() -> Iterator[dict[str, FhirStub]]:
    """Open FHIR servers (no token, like the sandbox's default one): the patient, the patient pregnant, and
    one the operator does not list."""
    with (
        running(FhirStub(RECORD, token=None)) as plain,
        running(FhirStub(_pregnant(RECORD), token=None)) as pregnant,
        running(FhirStub(RECORD, token=None)) as unlisted,
    ):
        yield {"plain": plain, "pregnant": pregnant, "unlisted": unlisted}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fhir: dict[str, FhirStub]) -> Iterator[Server]:
    """Trusting the sandbox offline, as the README shows: its key set inline, its jku on the list."""
    data_dir = tmp_path_factory.mktemp("sandbox")
    trust_list = data_dir / "trust.json"
    keys = json.loads((SANDBOX / ".well-known" / "jwks.json").read_text())
    issuer = {
        "iss": ISSUER,
        "name": "CDS Hooks sandbox",
        "jwks": keys,
        "jku": [f"{ISSUER}/.well-known/jwks.json"],
    }
    trust_list.write_text(json.dumps({"issuers": [issuer]}))
    listed = ["--fhir-server", fhir["plain"].base, "--fhir-server", fhir["pregnant"].base]
    running_server = Server(data_dir, args=listed)
    running_server.env = {
        "KETAMINE_CDS_TRUST_LIST": str(trust_list),
        "KETAMINE_CDS_PUBLIC_URL": running_server.url,
    }
    running_server.start()
    yield running_server
    running_server.stop()


@pytest.fixture(scope="module")
def templates(server: Server) -> dict[str, str]:
    return templates_of(server.url, "order-sign")


def _draft(dose_mg_per_kg: str) -> Json:
    return ketamine(oid=f"ketamine-{dose_mg_per_kg}", pid=PID, dose=quantity(dose_mg_per_kg, "mg/kg"))


OVER, WITHIN = _draft("0.5"), _draft("0.3")


def _call(server: Server, service: str, fhir_server: str, order: Json, prefetch: dict[str, str]) -> Json:
    hook = "order-sign" if service == SIGN else "order-select"
    context: Json = {
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}
    }
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{order['id']}"]
    return {
        "call": {
            "url": f"{server.url}/cds-services/{service}",
            "hook": hook,
            "fhirServer": fhir_server,
            "accessToken": None,
            "patientId": PID,
            "userId": USER,
            "prefetch": prefetch,
            "context": context,
        }
    }


def _exchange(result: Json) -> Json:
    """What the sandbox stored of a hook call: its request, and the response (or its error text)."""
    exchanges: list[Json] = [a for a in result["exchange"] if a["type"] == "STORE_SERVICE_EXCHANGE"]
    (exchange,) = exchanges
    return exchange


def _cards(result: Json) -> list[Json]:
    exchange = _exchange(result)
    assert exchange["status"] == 200, (exchange, result["http"])
    cards: list[Json] = exchange["response"]["cards"]
    return cards


def _topics(cards: list[Json]) -> list[str]:
    return [c["source"].get("topic", {}).get("code", c["summary"]) for c in cards]


def _rows(server: Server, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.data_dir / "ketamine-cds.sqlite3") as db:
        return db.execute(sql, params).fetchall()


SCENARIOS = [
    (SIGN, "plain", OVER),
    (SELECT, "plain", OVER),
    (SIGN, "plain", WITHIN),
    (SELECT, "plain", WITHIN),
]
SCENARIOS += [(SIGN, "pregnant", WITHIN), (SELECT, "pregnant", WITHIN)]


@pytest.fixture(scope="module")
def prefetch_run(
    sandbox: Any, server: Server, fhir: dict[str, FhirStub], templates: dict[str, str]
) -> tuple[list[Json], dict[str, list[str]]]:
    """The six calls as the sandbox makes them (its own prefetch from the FHIR server, its signed JWT), and
    the HTTP methods each FHIR server saw during them (taken here: later tests send their own reads)."""
    for stub in fhir.values():
        stub.requests.clear()
        stub.methods.clear()
    steps = [
        _call(server, service, fhir[which].base, order, templates) for service, which, order in SCENARIOS
    ]
    results: list[Json] = sandbox(*steps)
    return results, {name: list(stub.methods) for name, stub in fhir.items()}


@pytest.fixture(scope="module")
def prefetched(prefetch_run: tuple[list[Json], dict[str, list[str]]]) -> list[Json]:
    return prefetch_run[0]


# --- the tests ---------------------------------------------------------------------------------------------


def test_the_sandboxs_own_token_is_accepted_and_its_jku_never_fetched(
    prefetched: list[Json], server: Server
) -> None:
    for result in prefetched:
        assert _exchange(result)["status"] == 200
    log = server.log_text()
    assert "refused" not in log and "fetched the JWK Set" not in log and "cannot fetch" not in log


def test_the_sandbox_prefetches_itself_and_the_service_reads_nothing_more(
    prefetch_run: tuple[list[Json], dict[str, list[str]]], server: Server
) -> None:
    prefetched, seen = prefetch_run
    request = _exchange(prefetched[0])["request"]
    assert "fhirAuthorization" not in request  # an open server: the sandbox sends no token
    prefetch = request["prefetch"]
    assert prefetch["patient"]["id"] == PID
    assert prefetch["weights"]["resourceType"] == "Bundle" and prefetch["weights"]["entry"]
    assert prefetch["procedures"] == {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
    assert "encounter" not in prefetch  # no encounterId to fill the template with: left out
    instances = {_exchange(r)["request"]["hookInstance"] for r in prefetched}
    rows = _rows(server, "SELECT hook_instance, completeness, unread FROM assessments")
    assert sorted((c, u) for h, c, u in rows if h in instances) == [("full", "[]")] * len(SCENARIOS)
    # every request the FHIR servers saw is the sandbox's prefetch: one per template it could fill, the
    # searches posted to _search (the sandbox's first choice), the Patient read
    assert len(seen["plain"]) == 4 * len(prefetch)
    assert sorted(set(seen["plain"])) == ["GET", "POST"]
    assert seen["plain"].count("GET") == 4  # the four Patient reads


def _critical(cards: list[Json]) -> list[Json]:
    return [c for c in cards if c["indicator"] == "critical"]


def test_cards_for_over_limit_within_limit_and_pregnant(prefetched: list[Json]) -> None:
    over_sign, over_select, within_sign, within_select, pregnant_sign, pregnant_select = map(
        _cards, prefetched
    )
    (bolus,) = _critical(over_sign)  # the one interruption (a warning may say how old the weight is)
    assert bolus["source"]["topic"]["code"] == "dose-bolus-limit" and bolus["summary"].startswith("Bolus 0.5")
    assert bolus["suggestions"][0]["actions"][0]["resource"]["id"] == OVER["id"]
    assert "dose-bolus-limit" in _topics(over_select)
    assert _critical(within_sign) == []  # within the limit, nothing the record shows against it
    assert _critical(within_select) == []
    (pregnancy,) = _critical(pregnant_sign)
    assert pregnancy["source"]["topic"]["code"] == "contra-pregnancy" and pregnancy["overrideReasons"]
    assert "contra-pregnancy" in _topics(pregnant_select)


def test_feedback_from_the_sandboxs_card_list_is_stored(
    sandbox: Any, prefetched: list[Json], server: Server
) -> None:
    (bolus,) = _critical(_cards(prefetched[0]))
    (pregnancy,) = _critical(_cards(prefetched[4]))
    sign_url = f"{server.url}/cds-services/{SIGN}"
    reason = pregnancy["overrideReasons"][0]
    accepted, overridden = sandbox(
        {"accept": {"serviceUrl": sign_url, "card": bolus, "suggestion": bolus["suggestions"][0]}},
        {"override": {"serviceUrl": sign_url, "card": pregnancy, "reason": reason}},
    )
    for result in (accepted, overridden):
        (answer,) = result["http"]
        assert (answer["method"], answer["url"], answer["status"]) == ("post", sign_url + "/feedback", 200)
        assert answer["body"] == {"received": 1}
    assert accepted["exchange"] == [{"type": "TAKE_SUGGESTION", "suggestion": bolus["suggestions"][0]}]
    assert overridden["exchange"][0]["type"] == "DISMISS_CARD"
    rows = _rows(
        server,
        "SELECT card, outcome, override_code, override_system, accepted_suggestions, outcome_timestamp, "
        "client FROM feedback WHERE card IN (?, ?) ORDER BY outcome",
        bolus["uuid"],
        pregnancy["uuid"],
    )
    assert [r[:5] for r in rows] == [
        (bolus["uuid"], "accepted", None, None, json.dumps([bolus["suggestions"][0]["uuid"]])),
        (pregnancy["uuid"], "overridden", reason["code"], reason["system"], "[]"),
    ]
    assert all(r[5].endswith("Z") and r[6] == ISSUER for r in rows)  # the sandbox's UTC time, its issuer
    statements = _rows(
        server,
        "SELECT c.statement, a.verdict FROM cards c JOIN assessments a ON a.id = c.assessment_id "
        "WHERE c.uuid IN (?, ?) ORDER BY c.statement",
        bolus["uuid"],
        pregnancy["uuid"],
    )
    assert statements == [("contra-pregnancy", "contraindicated"), ("dose-bolus-limit", "dose-exceeds-limit")]


def test_with_every_prefetch_key_left_out_a_listed_open_server_gives_the_same_cards(
    sandbox: Any, prefetched: list[Json], server: Server, fhir: dict[str, FhirStub]
) -> None:
    for stub in fhir.values():
        stub.requests.clear()
    steps = [_call(server, service, fhir[which].base, order, {}) for service, which, order in SCENARIOS]
    results = sandbox(*steps)
    for with_prefetch, without in zip(prefetched, results, strict=True):
        assert "prefetch" not in _exchange(without)["request"]
        assert sorted(c["summary"] for c in _cards(without)) == sorted(
            c["summary"] for c in _cards(with_prefetch)
        )
    requests = fhir["plain"].requests + fhir["pregnant"].requests
    assert requests and all(auth is None for _, auth in requests)  # read without a token
    assert not fhir["unlisted"].requests
    instances = {_exchange(r)["request"]["hookInstance"] for r in results}
    rows = _rows(server, "SELECT hook_instance, completeness FROM assessments")
    assert sorted(c for h, c in rows if h in instances) == ["full"] * len(SCENARIOS)


def test_a_server_off_the_list_is_refused_and_never_contacted(
    sandbox: Any, server: Server, fhir: dict[str, FhirStub]
) -> None:
    unlisted = fhir["unlisted"]
    unlisted.requests.clear()
    (result,) = sandbox(_call(server, SIGN, unlisted.base, OVER, {}))
    (answer,) = result["http"]
    assert answer["status"] == 412
    assert "not one of the FHIR servers this service is set up to read" in answer["body"]["error"]
    assert unlisted.requests == []
    instance = _exchange(result)["request"]["hookInstance"]
    assert _rows(
        server, "SELECT verdict, completeness FROM assessments WHERE hook_instance = ?", instance
    ) == [(None, "precondition-failed")]
