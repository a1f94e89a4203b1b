"""Soak: many clients against a real server that is killed (SIGKILL) and restarted, round after round.

Prints figures and counts; never asserts on timing. Exit status 1 when something acknowledged was lost (an
order-sign call answered 200 whose audit row is not in the database, or a feedback answered 200 whose row is
not), when any answer is a 5xx other than 503, or when the server does not come back; 0 otherwise.

    python bench/bench_soak.py                       # 50 clients, 5 rounds of 20 s, SQLite
    python bench/bench_soak.py --seconds 5           # shorter rounds, for a smoke check
    python bench/bench_soak.py --database-url postgresql://user@host/db   # the audit trail on PostgreSQL
    python bench/bench_soak.py --auth                # every call with a signed JWT (the jti replay check too)

Each round: ``ketamine-cds serve`` in its own process on a free 127.0.0.1 port (the same data folder or
database every round), ``--clients`` threads, each with its own keep-alive connection, calling for
``--seconds``: ``order-sign`` with a draft ketamine bolus over the limit (one critical card, one audit row),
then feedback on that card (overridden, with a coded reason: one feedback row), and again. While they are
still calling, the server is killed with SIGKILL; the clients' calls then fail (no answer: nothing
acknowledged). The next round restarts the server on the same data. After the last round the server is
started once more (it must come up on what the kills left), stopped, and the database is counted: every
hookInstance answered 200 must have its row in ``assessments``, every card whose feedback was answered 200
its row in ``feedback``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SIGN = "/cds-services/ketamine-order-sign"
FEEDBACK = SIGN + "/feedback"
ISSUER = "https://soak-ehr.example"
INSTANCE_MARK = "@@HOOK-INSTANCE@@"
UCUM = "http://unitsofmeasure.org"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Signer:
    """An EHR's ES384 key: the trust list that names it, and tokens for an endpoint."""

    private: Any = None
    kid: str = "soak-1"

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.private = ec.generate_private_key(ec.SECP384R1())

    def trust_list(self) -> dict[str, Any]:
        from jwt.algorithms import ECAlgorithm

        jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "ES384"})
        return {"issuers": [{"iss": ISSUER, "jwks": {"keys": [jwk]}}]}

    def token(self, audience: str) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": ISSUER, "aud": audience, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.private, algorithm="ES384", headers={"kid": self.kid, "typ": "JWT"})


@dataclass
class Service:
    data_dir: Path
    database_url: str | None
    signer: Signer | None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> float:
        """Start the server; the seconds it took to answer /readyz."""
        env = {**os.environ, "KETAMINE_CDS_DATA_DIR": str(self.data_dir), "KETAMINE_CDS_PUBLIC_URL": self.url}
        if self.database_url:
            env["KETAMINE_CDS_DATABASE_URL"] = self.database_url
        if self.signer is None:
            env["KETAMINE_CDS_ALLOW_UNAUTHENTICATED"] = "1"
        else:
            trust = self.data_dir.parent / "soak-trust.json"
            trust.write_text(json.dumps(self.signer.trust_list()))
            env["KETAMINE_CDS_TRUST_LIST"] = str(trust)
        log = (self.data_dir.parent / "soak-server.log").open("ab")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ketamine_cds", "serve", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}; see soak-server.log")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise SystemExit("the server did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def hook_body(templates: dict[str, str]) -> str:
    """An order-sign call, its prefetch complete (searches that find nothing: null), with a draft ketamine
    bolus of 40 mg for 80 kg (over 0.35 mg/kg: one critical card); INSTANCE_MARK stands for hookInstance."""
    pid = "soak-p1"
    found = {
        "patient": {"resourceType": "Patient", "id": pid, "birthDate": "1970-05-01", "gender": "female"},
        "weights": _bundle(
            {
                "resourceType": "Observation",
                "id": "w1",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": time.strftime("%Y-%m-%d"),
                "valueQuantity": {
                    "value": 80,
                    "unit": "kg",
                    "system": "http://unitsofmeasure.org",
                    "code": "kg",
                },
            }
        ),
        "procedures": _bundle(
            {
                "resourceType": "Procedure",
                "id": "proc1",
                "status": "preparation",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
                "subject": {"reference": f"Patient/{pid}"},
            }
        ),
    }
    prefetch = {key: found.get(key) for key in templates}
    order = {
        "resourceType": "MedicationRequest",
        "id": "soak-k1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6130"}],
            "text": "ketamine",
        },
        "dosageInstruction": [
            {
                "route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}]},
                "doseAndRate": [
                    {
                        "doseQuantity": {
                            "value": 40,
                            "unit": "mg",
                            "system": "http://unitsofmeasure.org",
                            "code": "mg",
                        }
                    }
                ],
            }
        ],
    }
    body = {
        "hook": "order-sign",
        "hookInstance": INSTANCE_MARK,
        "context": {
            "userId": "Practitioner/soak",
            "patientId": pid,
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]},
        },
        "prefetch": prefetch,
    }
    return json.dumps(body)


@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Counter[str] = field(default_factory=Counter)  # "order-sign 200", "feedback 503", ...
    assessed: set[str] = field(default_factory=set)  # hookInstances answered 200
    fed_back: set[str] = field(default_factory=set)  # cards whose feedback was answered 200
    calls: int = 0


def client(base: str, body: str, signer: Signer | None, tally: Tally, stop: threading.Event) -> None:
    system = base + "/CodeSystem/override-reason"
    with httpx.Client(base_url=base, timeout=30.0) as http:
        while not stop.is_set():
            instance = str(uuid.uuid4())
            headers = {"Content-Type": "application/json"}
            if signer is not None:
                headers["Authorization"] = "Bearer " + signer.token(base + SIGN)
            try:
                response = http.post(SIGN, content=body.replace(INSTANCE_MARK, instance), headers=headers)
            except httpx.TransportError:
                with tally.lock:
                    tally.calls += 1
                    tally.answers["order-sign no answer"] += 1
                stop.wait(0.05)  # the server is gone: the round is ending
                continue
            with tally.lock:
                tally.calls += 1
                tally.answers[f"order-sign {response.status_code}"] += 1
                if response.status_code == 200:
                    tally.assessed.add(instance)
            if response.status_code != 200:
                continue
            cards = response.json().get("cards", [])
            if not cards:
                continue
            card = cards[0]["uuid"]
            feedback = {
                "feedback": [
                    {
                        "card": card,
                        "outcome": "overridden",
                        "overrideReason": {"reason": {"code": "prior-ketamine-exposure", "system": system}},
                        "outcomeTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                ]
            }
            auth = {"Authorization": "Bearer " + signer.token(base + FEEDBACK)} if signer is not None else {}
            try:
                answer = http.post(FEEDBACK, json=feedback, headers=auth)
            except httpx.TransportError:
                with tally.lock:
                    tally.calls += 1
                    tally.answers["feedback no answer"] += 1
                continue
            with tally.lock:
                tally.calls += 1
                tally.answers[f"feedback {answer.status_code}"] += 1
                if answer.status_code == 200:
                    tally.fed_back.add(card)


def stored(service: Service) -> tuple[set[str], set[str], str]:
    """hookInstances in assessments, cards in feedback, and the database's own check."""
    if service.database_url:
        import psycopg

        with psycopg.connect(service.database_url) as db:
            instances = {r[0] for r in db.execute("SELECT hook_instance FROM assessments")}
            cards = {r[0] for r in db.execute("SELECT card FROM feedback")}
        return instances, cards, "n/a (PostgreSQL)"
    with sqlite3.connect(service.data_dir / "ketamine-cds.sqlite3") as db:
        instances = {r[0] for r in db.execute("SELECT hook_instance FROM assessments")}
        cards = {r[0] for r in db.execute("SELECT card FROM feedback")}
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
    return instances, cards, check


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="calling time per round, before the kill")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--database-url", help="postgresql://... (an empty database of its own); default SQLite"
    )
    parser.add_argument("--auth", action="store_true", help="signed JWTs on every call (default: dev flag)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, server log)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ketamine-cds-soak-"))
    signer = Signer() if args.auth else None
    service = Service(workdir / "data", args.database_url, signer)
    tally = Tally()
    print(
        f"soak: {args.clients} clients, {args.rounds} rounds of {args.seconds:g} s then SIGKILL; "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}; "
        f"{'signed JWTs' if signer else 'development flag (no JWT)'}; {os.cpu_count()} cores; {workdir}"
    )
    failed = False
    try:
        for round_no in range(1, args.rounds + 1):
            ready_s = service.start()
            if round_no == 1:
                services = httpx.get(service.url + "/cds-services", timeout=10).json()["services"]
                templates = next(s for s in services if s["hook"] == "order-sign")["prefetch"]
                body = hook_body(templates)
            before = tally.calls
            stop = threading.Event()
            threads = [
                threading.Thread(target=client, args=(service.url, body, signer, tally, stop), daemon=True)
                for _ in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            time.sleep(args.seconds)
            service.kill()  # mid-traffic: every client is calling
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            print(f"round {round_no}: ready in {ready_s:.1f} s, {tally.calls - before} calls, then SIGKILL")
        ready_s = service.start()
        print(f"after the last kill: ready in {ready_s:.1f} s; stopped (SIGTERM) to count")
        service.stop()
    except SystemExit as exc:
        print(f"ERROR: {exc}")
        failed = True

    instances, cards, integrity = stored(service)
    lost_assessments = tally.assessed - instances
    lost_feedback = tally.fed_back - cards
    server_errors = {
        k: v for k, v in tally.answers.items() if k.split()[-1].startswith("5") and not k.endswith("503")
    }
    print()
    print(f"calls: {tally.calls}")
    print("answers by status:")
    for key, count in sorted(tally.answers.items()):
        print(f"  {key:24} {count:>8}")
    print(f"audit rows (assessments): {len(instances)}  (order-sign answered 200: {len(tally.assessed)})")
    print(f"feedback rows: {len(cards)}  (feedback answered 200: {len(tally.fed_back)})")
    print(
        f"written but not acknowledged (in flight at a kill): assessments {len(instances - tally.assessed)}, "
        f"feedback {len(cards - tally.fed_back)}"
    )
    print(f"SQLite integrity_check: {integrity}")
    lost = len(lost_assessments) + len(lost_feedback)
    print(f"lost rows: {lost} (assessments {len(lost_assessments)}, feedback {len(lost_feedback)})")
    failed = failed or lost > 0 or bool(server_errors) or integrity not in ("ok", "n/a (PostgreSQL)")
    print(
        f"SUMMARY: {tally.calls} calls over {args.rounds} SIGKILLs, {len(instances)} audit rows, "
        f"{len(cards)} feedback rows, lost {lost}, 5xx other than 503: {sum(server_errors.values())}"
        + (" -- FAILED" if failed else "")
    )
    if args.keep:
        print(f"kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
