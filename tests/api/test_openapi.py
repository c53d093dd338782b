"""schemathesis fuzzes the live server from its own OpenAPI document: whatever a client sends
that the document allows (or nearly allows), the server answers without a 5xx and with a body
that matches what it documents."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance


def test_no_server_error_and_no_schema_violation(server):
    # Driven by hand rather than through schemathesis' pytest plugin, which does not load
    # under pytest 9: one hypothesis run per operation of the document.
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json",
                                           headers=server.headers())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        @settings(max_examples=12, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(base_url=server.base_url, headers=server.headers(),
                                   checks=[not_a_server_error, response_schema_conformance])

        check()


def test_the_document_describes_every_protocol(server):
    import httpx

    document = httpx.get(server.base_url + "/openapi.json", headers=server.headers())
    paths = document.json()["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                 "/v1/messages", "/v1/messages/count_tokens", "/api/chat", "/api/generate",
                 "/api/embed", "/api/tags", "/api/show", "/api/ps", "/api/version"):
        assert path in paths, path
