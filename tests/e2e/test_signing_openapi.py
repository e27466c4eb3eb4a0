"""schemathesis against the signing service's own OpenAPI: no 5xx, responses match the schema."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
)

from .conftest import ADMIN_TOKEN, Stack


@pytest.fixture(scope="session")
def signing_schema(stack: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{stack.urls['signing']}/openapi.json")


schema = schemathesis.pytest.from_fixture("signing_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_signing_api_conforms(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        checks=[not_a_server_error, response_schema_conformance, negative_data_rejection],
    )
