"""Schemathesis against ``/openapi.json`` of a real API process: no 5xx, and every answer fits
the schema (documented status, content type and body). Examples are bounded for ``make test``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import SCHEMA
from importd.config import Settings
from tests.api.conftest import api_process

#: Examples per operation (bounded: the whole run stays within a few seconds per operation).
MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_url(api_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with api_process(api_settings, tmp_path_factory.mktemp("schemathesis")) as api:
        served = httpx.get(f"{api.url}/openapi.json").json()
        assert served == SCHEMA  # the process serves the schema loaded below
        yield api.url


schema = schemathesis.openapi.from_dict(SCHEMA)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_within_its_schema_and_never_with_5xx(case: Any, api_url: str) -> None:
    case.call_and_validate(base_url=api_url, checks=CHECKS, timeout=20)


def test_the_schema_documents_every_route_of_the_app() -> None:
    from api.app import ROUTES
    from api.openapi import SCHEMA

    documented = {(path, method.upper()) for path, ops in SCHEMA["paths"].items() for method in ops}
    served = {(r.path, m) for r in ROUTES for m in (r.methods or ()) if m != "HEAD"} | {("/metrics", "GET")}
    assert served - {("/", "GET"), ("/openapi.json", "GET")} == documented


def test_the_schema_documents_null_as_ignore_in_every_columns_mapping() -> None:
    """A client learns from /openapi.json that a header field mapped to null is ignored."""
    mapping = SCHEMA["components"]["schemas"]["Mapping"]["properties"]["columns"]["additionalProperties"]
    put = SCHEMA["paths"]["/api/mappings"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    preview = SCHEMA["components"]["schemas"]["Preview"]["properties"]["mapping"]["properties"]
    for value in (mapping, put["properties"]["columns"]["additionalProperties"],
                  preview["columns"]["additionalProperties"]):
        assert value["nullable"] is True and "ignored" in value["description"]
    assert "ignored" in preview["fields"]["items"]["properties"]
    assert SCHEMA["components"]["schemas"]["Job"]["properties"]["links"]["additionalProperties"] == {"type": "string"}
    for path in ("/api/upload", "/api/preview"):
        [param] = [p for p in SCHEMA["paths"][path]["post"]["parameters"] if p["name"] == "columns"]
        assert "null to ignore" in param["description"]
