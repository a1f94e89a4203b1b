"""Property-based API testing: schemathesis generates requests for every operation in the running server's
OpenAPI document; none may get a 5xx answer. Example counts are bounded: the module runs in under a minute."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from conftest import Server
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 200


@pytest.fixture(scope="module")
def api_schema(dev_server: Server) -> Any:
    return schemathesis.openapi.from_url(dev_server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_for_generated_input(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])
