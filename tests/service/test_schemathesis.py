"""Property-based API testing: schemathesis generates requests for every operation in the OpenAPI document of
the application (in this process: its calls go to it directly, over ASGI); none may get a 5xx answer.
Example counts are bounded: the module runs in under a minute."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from ketamine_cds.service.app import create_app
from ketamine_cds.service.settings import Settings

MAX_EXAMPLES = 200
pytestmark = pytest.mark.slow  # a thousand generated calls (about 10 s): everyday runs leave it out


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The OpenAPI document of the application in this process, whose calls go to it directly (ASGI)."""
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("schemathesis"), allow_unauthenticated=True))
    try:
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        ):
            yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        gc.unfreeze()  # start-up freezes the heap it finds (app.py): here, the test session's


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_for_generated_input(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])
