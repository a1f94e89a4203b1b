"""A real ketamine-cds server (uvicorn, in its own process) on a free loopback port, or the application in
this process (``in_process``, ``app_client``) where the process does not matter."""

from __future__ import annotations

import functools
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)  # more arguments to `ketamine-cds serve`
    command: list[str] = field(default_factory=lambda: ["-m", "ketamine_cds", "serve"])  # after python

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        env = {**os.environ, "KETAMINE_CDS_DATA_DIR": str(self.data_dir), **self.env}
        self.log = (self.data_dir / f"server-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, *self.command, "--port", str(self.port), *self.args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log_text()}")
            try:
                if httpx.get(self.url + "/openapi.json", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_text()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
        self.log.close()

    def log_text(self) -> str:
        self.log.flush()
        return (self.data_dir / f"server-{self.port}.log").read_text(errors="replace")[-4000:]


class InProcessClient:
    """A synchronous HTTP client of an application in this process (``httpx.ASGITransport``, whose client is
    asynchronous, driven from an event loop in a thread of its own): the methods of ``httpx.Client`` the
    tests use, with the same responses."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient, base_url: str) -> None:
        self._portal, self._client = portal, client
        self.base_url = base_url  # the service's own base URL (its settings'), which its cards' links use

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kwargs)


@contextmanager
def in_process(data_dir: Path, **settings: Any) -> Iterator[InProcessClient]:
    """The application in this process (no server, no port), started and stopped as uvicorn would (its
    lifespan): for tests of the HTTP contract, where the process does not matter. Authentication is off
    unless asked for."""
    from ketamine_cds.service.app import create_app
    from ketamine_cds.service.settings import Settings

    app = create_app(Settings(data_dir=data_dir, **{"allow_unauthenticated": True, **settings}))
    transport = httpx.ASGITransport(app=app)
    try:
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        ):
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60)
            try:
                yield InProcessClient(portal, client, app.state.settings.base_url)
            finally:
                portal.call(client.aclose)
    finally:
        gc.unfreeze()  # start-up freezes the heap it finds (app.py): here, the test session's


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessClient]:
    """A client of the application in this process, for the test module (authentication off)."""
    with in_process(tmp_path_factory.mktemp("in-process")) as client:
        yield client


@pytest.fixture(scope="module")
def client(dev_server: Server) -> Iterator[httpx.Client]:
    """An HTTP client for the development server of the test module."""
    with httpx.Client(base_url=dev_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def templates(dev_server: Server) -> dict[str, str]:
    """The server's prefetch templates, from its discovery document."""
    from fhir_stub import templates_of

    return templates_of(dev_server.url)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with authentication disabled by the development flag."""
    server = Server(tmp_path_factory.mktemp("dev"), {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1"}).start()
    yield server
    server.stop()


def _initdb() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True):
        return candidate
    return None


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL server of the test session's own on a free loopback port, run with pg_ctl."""

    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ketamine-cds-pg-")))
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self._as_postgres(), str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), *args],
            check=check,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> PostgresCluster:
        """initdb (the first time) and start; the root is outside pytest's 0700 tree (postgres reaches it)."""
        if not (self.root / "data").exists():
            if self._as_postgres():
                subprocess.run(["chown", "postgres", str(self.root)], check=True)
            initdb = [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.root / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
            ]
            subprocess.run(
                [*self._as_postgres(), *initdb],
                check=True,
                capture_output=True,
            )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self.pg_ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        # its log to the file: a server started with its output on our pipe would keep the pipe open
        self.pg_ctl("-m", mode, "-l", str(self.root / "log"), "-w", "restart")

    def remove(self) -> None:
        self.pg_ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_cluster() -> PostgresCluster:
    """A new cluster, or a skip when PostgreSQL is not installed (a failure when CI requires it)."""
    initdb = _initdb()
    if initdb is None:
        if os.environ.get("KETAMINE_CDS_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (KETAMINE_CDS_REQUIRE_POSTGRES) but initdb was not found")
        pytest.skip("PostgreSQL is not installed here; CI installs it")
    return PostgresCluster(initdb.parent)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free loopback port, or KETAMINE_CDS_TEST_DATABASE_URL if given.

    Skipped when no PostgreSQL is installed, unless KETAMINE_CDS_REQUIRE_POSTGRES is set (as CI does).
    """
    given = os.environ.get("KETAMINE_CDS_TEST_DATABASE_URL")
    if given:
        yield given
        return
    cluster = postgres_cluster().start()
    try:
        yield cluster.url
    finally:
        cluster.remove()


@pytest.fixture
def postgres_restartable() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of the test's own, which the test may stop, start and restart."""
    cluster = postgres_cluster().start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A database of the test's own on the session's PostgreSQL server, dropped afterwards: no test sees
    the rows another test wrote, whatever the order they run in."""
    import psycopg

    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- markers for the whole suite ------------------------------------------------------------------------
# Here rather than in a tests/conftest.py, which mypy would take for this module (both are "conftest"):
# the hook sees every collected item whichever conftest defines it.

# fixture -> marker: the real parts a test needs
_NEEDS = {
    "spark_cluster": "spark",
    "postgres_restartable": "postgres",
    "spark": "spark",
    "browser": "browser",
    "page": "browser",
    "chromium": "browser",
    "postgres_url": "postgres",
    "dev_server": "server",
    "site_server": "server",
}
# modules whose tests start their own server processes (or Node) inside the test body
_SERVER_MODULES = {
    "test_database_restart",
    "test_hardening",
    "test_auth",
    "test_durability",
    "test_fhir_servers",
    "test_hooks_external",
    "test_hooks_fhir",
    "test_sandbox_e2e",
    "test_site_service",
    "test_page_browser",
}
# modules whose tests run the batch audit end to end on DuckDB (a few seconds each), and modules that run the
# command line (or the README's commands) in processes of their own
_AUDIT_MODULES = {
    "test_fhir_conformance",
    "test_audit_equals_engine",
    "test_input_forms",
    "test_buckets",
    "test_tolerance",
    "test_audit_rows",
    "test_report",
    "test_decisions",
}
_PROCESS_MODULES = {"test_cli", "test_cli_hardening", "test_readme"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers so that everyday runs can leave the slow parts out: ``scripts/test -m "not slow"`` runs the
    engine, adapters, knowledge base, command line and in-process audit tests, and the hook contract on the
    application in this process (test_contract, test_drafts); ``.ci/run`` runs everything.
    A test is ``slow`` when it needs a server process, a browser, Spark, PostgreSQL or Node, runs the batch
    audit end to end or the command line in processes of its own, each of which also has its own marker."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        marks = {marker for fixture, marker in _NEEDS.items() if fixture in fixtures}
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.id:  # a store parametrized over both databases
            marks.add("postgres")
        module = item.path.stem
        if module in _SERVER_MODULES or item.get_closest_marker("server") is not None:
            marks.add("server")  # a module that starts servers in its tests' bodies, or a test marked so
        if module == "test_sandbox_e2e":
            marks.add("node")
        if module in _AUDIT_MODULES and item.path.parent.name == "audit":
            marks.add("audit")
        if module in _PROCESS_MODULES:
            marks.add("process")
        for marker in sorted(marks):
            item.add_marker(getattr(pytest.mark, marker))
        if marks:
            item.add_marker(pytest.mark.slow)
