"""The README's examples are true: every ``console`` block's commands are run and print what the README says,
and every file the README shows (after ``<!-- file: PATH -->``) is that file.

The commands run in a scratch folder that sees the repository's ``examples/`` and ``.venv/``, one after
another in README order (the integrator's quick start starts the service in the background, signs a token,
calls order-sign and reads the audit trail), so they leave nothing in the repository. The service's port is
a free one instead of 8000 (another may be running on this machine); nothing else is changed. The set-up
commands (``scripts/start``, ``scripts/test``: installing) are in ``sh`` blocks, not run here; CI runs them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@dataclass(frozen=True)
class Example:
    block: int  # which console block (1-based), for the failure message
    command: str
    output: str


def console_blocks(text: str) -> list[list[Example]]:
    """The ``console`` blocks: "$ " starts a command (a trailing backslash continues it), the lines up to the
    next command are its output."""
    blocks: list[list[Example]] = []
    for number, body in enumerate(re.findall(r"^```console\n(.*?)^```", text, re.S | re.M), start=1):
        examples: list[Example] = []
        command: list[str] = []
        output: list[str] = []
        continued = False
        for line in body.splitlines():
            if line.startswith("$ ") or (continued and command):
                if line.startswith("$ ") and command and not continued:
                    examples.append(Example(number, " ".join(command), "\n".join(output)))
                    command, output = [], []
                part = line[2:] if line.startswith("$ ") else line.strip()
                continued = part.endswith("\\")
                command.append(part.removesuffix("\\").strip())
            else:
                output.append(line)
        if command:
            examples.append(Example(number, " ".join(command), "\n".join(output)))
        blocks.append(examples)
    return blocks


def shown_files(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^<!-- file: (\S+) -->\n```\w*\n(.*?)^```", text, re.S | re.M)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Shell:
    """Runs the README's commands as a reader would, in a scratch folder."""

    folder: Path
    port: int
    background: list[subprocess.Popen[bytes]]

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KETAMINE_CDS_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["KETAMINE_CDS_PORT"] = str(self.port)
        return env

    def run(self, command: str) -> str:
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        if command.endswith(" &"):
            log = (self.folder / f"background-{len(self.background)}.log").open("wb")
            process = subprocess.Popen(
                ["bash", "-c", command.removesuffix(" &")],
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.background.append(process)
            self._wait_for_service(process)
            return ""
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
        return done.stdout.decode()

    def _wait_for_service(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the background command exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/cds-services", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the service did not start")

    def stop(self) -> None:
        for process in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the session this test started, and only it
                process.wait(timeout=20)


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    folder = tmp_path_factory.mktemp("readme")
    for name in ("examples", ".venv"):
        (folder / name).symlink_to(ROOT / name)
    runner = Shell(folder, _free_port(), [])
    try:
        yield runner
    finally:
        runner.stop()


def _normal(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip("\n").splitlines()]


def test_the_readme_has_examples_to_keep_true() -> None:
    text = README.read_text()
    assert len(console_blocks(text)) >= 5
    assert [path for path, _ in shown_files(text)]


def test_every_console_example_prints_what_the_readme_says(shell: Shell) -> None:
    failures = []
    for block in console_blocks(README.read_text()):
        for example in block:
            actual = shell.run(example.command)
            if _normal(actual) != _normal(example.output):
                failures.append(
                    f"block {example.block}: $ {example.command}\n--- README\n{example.output}\n"
                    f"--- actual\n{actual}"
                )
    assert not failures, "\n\n".join(failures)


def test_every_file_the_readme_shows_is_that_file() -> None:
    for path, content in shown_files(README.read_text()):
        assert (ROOT / path).read_text() == content, path
