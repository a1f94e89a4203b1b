"""Nothing acknowledged is lost: SIGKILL the server mid-stream of feedback, restart, and count."""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
from conftest import Server

FEEDBACK = "/cds-services/ketamine-order-sign/feedback"


def _post_until_refused(url: str, acknowledged: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while not stop.is_set():
            card = str(uuid.uuid4())
            body = {
                "feedback": [
                    {
                        "card": card,
                        "outcome": "overridden",
                        "overrideReason": {
                            "reason": {
                                "code": "prior-ketamine-exposure",
                                "system": url + "/CodeSystem/override-reason",
                            }
                        },
                        "outcomeTimestamp": dt.datetime.now(dt.UTC).isoformat(),
                    }
                ]
            }
            try:
                response = client.post(FEEDBACK, json=body)
            except httpx.TransportError:
                return  # the server is gone; anything not answered was not acknowledged
            if response.status_code == 200:
                acknowledged.append(card)


def test_every_acknowledged_feedback_survives_sigkill(tmp_path: Path) -> None:
    env = {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1"}
    server = Server(tmp_path, env).start()
    acknowledged: list[str] = []
    stop = threading.Event()
    writers = [
        threading.Thread(target=_post_until_refused, args=(server.url, acknowledged, stop)) for _ in range(4)
    ]
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.stop(signal.SIGKILL)  # mid-stream: writers are still posting
    stop.set()
    for writer in writers:
        writer.join(timeout=10)
    assert len(acknowledged) >= 50, server.log_text()

    restarted = Server(tmp_path, env).start()  # the same data directory
    try:
        with sqlite3.connect(tmp_path / "ketamine-cds.sqlite3") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            stored = {row[0] for row in db.execute("SELECT card FROM feedback")}
        assert set(acknowledged) <= stored
        ok = httpx.post(
            restarted.url + FEEDBACK, json={"feedback": [{"card": str(uuid.uuid4()), "outcome": "accepted"}]}
        )
        assert ok.status_code == 200  # the service works again on the same database
    finally:
        restarted.stop()
