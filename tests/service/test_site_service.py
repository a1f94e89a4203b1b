"""Site protocols in the service: cards with the site's limit and override reasons, the page, the audit trail,
and a bad site file that stops the service."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server
from fhir_stub import Case, ketamine, patient, planned_procedure, quantity, templates_of, weight

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site" / "example-hospital.toml"


@pytest.fixture(scope="module")
def site_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1", "KETAMINE_CDS_SITE": str(EXAMPLE)}
    server = Server(tmp_path_factory.mktemp("site"), env).start()
    yield server
    server.stop()


def test_the_service_checks_orders_against_the_site_with_its_override_reasons(site_server: Server) -> None:
    case = Case([patient(), weight(80), planned_procedure()], [ketamine(dose=quantity(25, "mg"))])
    templates = templates_of(site_server.url)
    body = case.request("order-sign", templates)
    response = httpx.post(site_server.url + "/cds-services/ketamine-order-sign", json=body, timeout=30)
    (card,) = response.json()["cards"]
    assert card["indicator"] == "critical" and "site protocol's 20 mg" in card["summary"]
    assert "pain-service-approved" in {r["code"] for r in card["overrideReasons"]}
    resource = card["suggestions"][0]["actions"][0]["resource"]
    assert resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 20
    with sqlite3.connect(site_server.data_dir / "ketamine-cds.sqlite3") as db:
        stored = db.execute(
            "SELECT site FROM assessments WHERE hook_instance = ?", (body["hookInstance"],)
        ).fetchall()
    assert stored == [("Example Hospital acute pain service (2026-12-01)",)]


def test_the_page_shows_the_protocol_in_force(site_server: Server) -> None:
    page = httpx.get(site_server.url + "/", timeout=10).text
    assert "Site protocol in force: Example Hospital acute pain service (2026-12-01" in page


def test_a_bad_site_file_stops_the_service_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nname = "X"\nversion = "1"\n[statements.contra-pregnancy]\nhide = true\n')
    env = {
        **os.environ,
        "KETAMINE_CDS_DATA_DIR": str(tmp_path / "data"),
        "KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "ketamine_cds", "serve", "--port", "0", "--site", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and "statements.contra-pregnancy.hide" in done.stderr
    assert "Traceback" not in done.stderr
