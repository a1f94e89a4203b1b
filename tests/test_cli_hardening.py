"""Issue 20's command-line hardening, run as a real process: one line naming the argument, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

from test_cli import cli


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_and_report_name_a_database_url_they_cannot_reach(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/audit"
    for args in (
        ("serve", "--data-dir", str(tmp_path), "--allow-unauthenticated", "--database-url", url),
        ("report", "--database-url", url),
    ):
        done = cli(*args)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("ketamine-cds: --database-url: cannot connect to the database"), line
