"""The service survives its PostgreSQL server: stopped, it answers 503 with Retry-After (never 401 for a
database fault); started again, 200 without a restart of the service; restarted with ``pg_ctl restart`` under
a running service and its callers, nothing but 200 and 503, and every call answered 200 is on record."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
from conftest import PostgresCluster, Server
from fhir_stub import hook_request, ketamine, patient, planned_procedure, prefetch_for, quantity, weight
from jwks_stub import SigningKey, claims

EHR = "https://ehr.example"
SIGN = "/cds-services/ketamine-order-sign"


class Caller:
    """An EHR calling the running service with fresh signed tokens."""

    def __init__(self, server: Server, key: SigningKey) -> None:
        self.server, self.key = server, key
        services = httpx.get(server.url + "/cds-services", timeout=10).json()["services"]
        templates = next(s for s in services if s["hook"] == "order-sign")["prefetch"]
        record = [patient(), weight(70), planned_procedure()]
        self.prefetch = prefetch_for(templates, record, {"patientId": "p1"})

    def _headers(self, path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key.sign(claims(EHR, self.server.url + path))}"}

    def sign(self, instance: str | None = None) -> httpx.Response:
        """order-sign with a bolus over the limit: one card, one audit row."""
        body = hook_request("order-sign", [ketamine(dose=quantity(2, "mg/kg"))], prefetch=self.prefetch)
        body["hookInstance"] = instance or str(uuid.uuid4())
        return httpx.post(self.server.url + SIGN, json=body, headers=self._headers(SIGN), timeout=30)

    def feedback(self, card: str) -> httpx.Response:
        path = SIGN + "/feedback"
        body: dict[str, Any] = {"feedback": [{"card": card, "outcome": "accepted"}]}
        return httpx.post(self.server.url + path, json=body, headers=self._headers(path), timeout=30)


def _start(tmp_path: Path, url: str) -> tuple[Server, SigningKey]:
    key = SigningKey.ec("ec-restart")
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"issuers": [{"iss": EHR, "jwks": {"keys": [key.public_jwk()]}}]}))
    server = Server(tmp_path)
    server.env = {
        "KETAMINE_CDS_TRUST_LIST": str(trust),
        "KETAMINE_CDS_PUBLIC_URL": server.url,
        "KETAMINE_CDS_DATABASE_URL": url,
    }
    return server.start(), key


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["Retry-After"].isdigit()
    assert "error" in response.json()


def test_a_stopped_database_is_503_with_retry_after_and_the_service_reconnects(
    tmp_path: Path, postgres_restartable: PostgresCluster
) -> None:
    server, key = _start(tmp_path, postgres_restartable.url)
    caller = Caller(server, key)
    try:
        first = caller.sign()
        assert first.status_code == 200, first.text
        assert caller.feedback(first.json()["cards"][0]["uuid"]).status_code == 200
        assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200

        postgres_restartable.stop()
        for _ in range(3):
            _assert_unavailable(caller.sign())
            _assert_unavailable(caller.feedback(str(uuid.uuid4())))
        _assert_unavailable(httpx.get(server.url + "/readyz", timeout=10))
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # alive, not ready

        postgres_restartable.start()
        again = caller.sign()
        assert again.status_code == 200, again.text
        assert caller.feedback(again.json()["cards"][0]["uuid"]).status_code == 200
        assert httpx.get(server.url + "/readyz", timeout=10).json()["status"] == "ready"
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()


def test_pg_ctl_restart_under_running_callers_gives_only_200_and_503_and_loses_nothing(
    tmp_path: Path, postgres_restartable: PostgresCluster
) -> None:
    server, key = _start(tmp_path, postgres_restartable.url)
    caller = Caller(server, key)
    statuses: Counter[int] = Counter()
    answered: list[str] = []  # hook instances answered 200
    lock, stop = threading.Lock(), threading.Event()

    def call() -> None:
        while not stop.is_set():
            instance = str(uuid.uuid4())
            status = caller.sign(instance).status_code
            with lock:
                statuses[status] += 1
                if status == 200:
                    answered.append(instance)

    threads = [threading.Thread(target=call) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        postgres_restartable.restart()
        time.sleep(1.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        after = [caller.sign().status_code for _ in range(3)]
        log = server.log_text()
    finally:
        stop.set()
        server.stop()
    assert set(statuses) <= {200, 503}, statuses
    assert after == [200, 200, 200]
    with psycopg.connect(postgres_restartable.url) as db:
        stored = {row[0] for row in db.execute("SELECT hook_instance FROM assessments")}
    assert set(answered) <= stored, len(set(answered) - stored)
    assert "Traceback" not in log
