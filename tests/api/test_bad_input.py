"""Bad input on all nine generation and embedding endpoints: every malformed body, wrong type and
odd value is a 4xx in the endpoint's own protocol format (never a 500, never another protocol's
shape), and the red team's findings each get the 400 that names the field: lone surrogates,
loosely typed values, unbounded stop lists, schemas no finite document satisfies."""

from __future__ import annotations

import copy
import json

import httpx
import pytest

ENDPOINTS = {
    "/v1/chat/completions": {"model": "tenshu-tiny", "max_tokens": 2,
                             "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "tenshu-tiny", "max_tokens": 2, "prompt": "hi"},
    "/v1/embeddings": {"model": "all-minilm-l6-v2", "input": "hi"},
    "/v1/messages": {"model": "tenshu-tiny", "max_tokens": 2,
                     "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"model": "tenshu-tiny",
                                  "messages": [{"role": "user", "content": "hi"}]},
    "/api/chat": {"model": "tenshu-tiny", "stream": False, "options": {"num_predict": 2},
                  "messages": [{"role": "user", "content": "hi"}]},
    "/api/generate": {"model": "tenshu-tiny", "stream": False, "prompt": "hi",
                      "options": {"num_predict": 2}},
    "/api/embed": {"model": "all-minilm-l6-v2", "input": "hi"},
    "/api/embeddings": {"model": "all-minilm-l6-v2", "prompt": "hi"},
}
MALFORMED = [b"", b"garbage", b"[]", b'"a string"', b"null", b"1", b"{", b'{"model":',
             b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
             b'{"model": "tenshu-tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}']
WRONG = ["x", "", True, False, 0, -1, 1.5, 10**30, -10**30, 1e308, None, [], {}, [1],
         {"a": 1}, "NaN", float("nan"), float("inf")]


def protocol_error(path: str, body) -> bool:
    """Whether `body` is an error in the format of the protocol `path` belongs to."""
    if path.startswith("/api/"):
        return isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
    if path.startswith("/v1/messages"):
        return (isinstance(body, dict) and body.get("type") == "error"
                and isinstance(body["error"].get("type"), str)
                and isinstance(body["error"].get("message"), str))
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)


def field_paths(value, prefix=()):
    """Every key path of a body, into its first list item."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from field_paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        yield from field_paths(value[0], (*prefix, 0))


def with_value(body: dict, path: tuple, value) -> dict:
    body = copy.deepcopy(body)
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


def bad_bodies():
    """(endpoint, body bytes): malformed bodies, then each field of a good body set to each
    wrong value in turn."""
    for path, good in ENDPOINTS.items():
        for body in MALFORMED:
            yield path, body
        for where in field_paths(good):
            for value in WRONG:
                yield path, json.dumps(with_value(good, where, value)).encode()


def test_no_bad_input_gets_a_500_or_another_protocols_error(server):
    cases = list(bad_bodies())
    assert len(cases) >= 600
    wrong_format, server_errors, errors = [], [], 0
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=120) as client:
        for path, body in cases:
            response = client.post(path, content=body,
                                   headers={"Content-Type": "application/json"})
            if response.status_code >= 500:
                server_errors.append((path, body[:80], response.status_code))
            elif response.status_code >= 400:
                errors += 1
                if not protocol_error(path, response.json()):
                    wrong_format.append((path, body[:80], response.text[:120]))
    assert server_errors == [] and wrong_format == []
    assert errors > len(cases) // 2  # most of them are refused, each in its own format


SURROGATE_FIELDS = {  # where each endpoint's text goes, as the error names it
    "/v1/chat/completions": ("messages", 0, "content"),
    "/v1/completions": ("prompt",),
    "/v1/embeddings": ("input",),
    "/v1/messages": ("messages", 0, "content"),
    "/v1/messages/count_tokens": ("messages", 0, "content"),
    "/api/chat": ("messages", 0, "content"),
    "/api/generate": ("prompt",),
    "/api/embed": ("input",),
    "/api/embeddings": ("prompt",),
}


@pytest.mark.parametrize("escaped", [True, False], ids=["escaped", "raw-bytes"])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_lone_surrogate_is_a_400_naming_the_field(server, path, escaped):
    where = SURROGATE_FIELDS[path]
    body = json.dumps(with_value(ENDPOINTS[path], where, "hi \ud800 there"), ensure_ascii=escaped)
    data = body.encode("utf-8", "surrogatepass")
    assert (b"\\ud800" in data) is escaped
    response = httpx.post(server.base_url + path, content=data, headers={
        **server.headers(), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert protocol_error(path, response.json())
    assert ".".join(map(str, where)) in response.text and "surrogate" in response.text
    # an emoji written as a surrogate pair is one character, and fine
    pair = json.dumps(with_value(ENDPOINTS[path], where, "hi \U0001f600"))
    assert "\\ud83d\\ude00" in pair
    fine = httpx.post(server.base_url + path, content=pair, headers={
        **server.headers(), "Content-Type": "application/json"}, timeout=60)
    assert fine.status_code == 200, fine.text


LOOSE = [  # (endpoint, field, a value the reference API refuses for it)
    ("/v1/chat/completions", "max_tokens", "10"),
    ("/v1/chat/completions", "max_tokens", True),
    ("/v1/chat/completions", "max_tokens", 10.0),
    ("/v1/chat/completions", "n", "2"),
    ("/v1/chat/completions", "stream", "yes"),
    ("/v1/chat/completions", "temperature", "0.5"),
    ("/v1/chat/completions", "logprobs", 1),
    ("/v1/completions", "echo", "true"),
    ("/v1/completions", "max_tokens", "3"),
    ("/v1/embeddings", "dimensions", "384"),
    ("/v1/messages", "max_tokens", "10"),
    ("/v1/messages", "stream", 1),
    ("/v1/messages", "temperature", "1"),
    ("/v1/messages", "thinking", {"type": "bogus"}),
    ("/v1/messages", "thinking", {"type": "enabled", "budget_tokens": "1024"}),
    ("/api/chat", "stream", "false"),
    ("/api/generate", "raw", "true"),
    ("/api/generate", "options", {"num_predict": "2"}),
    ("/api/generate", "options", {"temperature": "hot"}),
]


@pytest.mark.parametrize(("path", "field", "value"), LOOSE)
def test_values_of_the_wrong_type_are_refused_not_coerced(server, path, field, value):
    response = httpx.post(server.base_url + path, json=with_value(ENDPOINTS[path], (field,),
                                                                  value), headers=server.headers())
    assert response.status_code == 400, response.text
    assert protocol_error(path, response.json()) and field in response.text


@pytest.mark.parametrize(("path", "field", "stops", "why"), [
    ("/v1/chat/completions", ("stop",), ["a", "b", "c", "d", "e"], "at most 4"),
    ("/v1/completions", ("stop",), [str(i) for i in range(5)], "at most 4"),
    ("/v1/messages", ("stop_sequences",), [f"s{i}" for i in range(17)], "at most 16"),
    ("/api/chat", ("options", "stop"), [f"s{i}" for i in range(17)], "at most 16"),
    ("/api/generate", ("options", "stop"), [f"s{i}" for i in range(100_000)], "at most 16"),
    ("/v1/chat/completions", ("stop",), ["x" * 257], "256 characters"),
    ("/v1/messages", ("stop_sequences",), ["x" * 257], "256 characters"),
])
def test_stop_lists_are_bounded_in_number_and_length(server, path, field, stops, why):
    response = httpx.post(server.base_url + path, json=with_value(ENDPOINTS[path], field, stops),
                          headers=server.headers())
    assert response.status_code == 400, response.text
    assert protocol_error(path, response.json()) and why in response.text
    within = httpx.post(server.base_url + path, headers=server.headers(), timeout=60,
                        json=with_value(ENDPOINTS[path], field, stops[:4] if "at most" in why
                                        else ["x" * 256]))
    assert within.status_code == 200, within.text


DEGENERATE = [{"$ref": "#"}, {"type": "array", "items": {"$ref": "#"}, "minItems": 1},
              {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]},
              {"anyOf": []}, {"type": "string", "minLength": 5, "maxLength": 2}]


@pytest.mark.parametrize("schema", DEGENERATE, ids=range(len(DEGENERATE)))
def test_a_schema_no_finite_document_satisfies_is_a_400(server, schema):
    asks = [
        ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": schema}}}),
        ("/v1/messages", {"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
        ("/api/chat", {"format": schema}),
    ]
    for path, extra in asks:
        response = httpx.post(server.base_url + path, json={**ENDPOINTS[path], **extra},
                              headers=server.headers())
        assert response.status_code == 400, (path, response.text)
        assert protocol_error(path, response.json())
    if "minLength" in schema:
        return  # a forced call's arguments fall back to any object when their schema cannot
        # compile (chat/tools.py): tool lists come from clients; only recursion is refused
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    forced = httpx.post(server.base_url + "/v1/chat/completions", headers=server.headers(),
                        json={**ENDPOINTS["/v1/chat/completions"], "tools": [tool],
                              "tool_choice": "required"})
    assert forced.status_code == 400, forced.text


def test_a_recursive_schema_with_a_way_out_still_works(server):
    tree = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5},
                                             "children": {"type": "array", "maxItems": 1,
                                                          "items": {"$ref": "#"}}},
            "required": ["name"]}
    response = httpx.post(server.base_url + "/v1/chat/completions", headers=server.headers(),
                          timeout=120, json={**ENDPOINTS["/v1/chat/completions"],
                                             "max_tokens": 200, "temperature": 0,
                                             "response_format": {"type": "json_schema",
                                                                 "json_schema": {"name": "t",
                                                                                 "schema": tree}}})
    assert response.status_code == 200, response.text


def deep_schema(levels: int) -> str:
    """A JSON schema of objects nested `levels` deep (as text: json.dumps itself would recurse
    too deeply to write it)."""
    return ('{"type":"object","properties":{"a":' * levels + '{"type":"string"}'
            + '},"required":["a"]}' * levels)


@pytest.mark.parametrize("levels", [400, 2_000, 30_000])
def test_a_body_nested_too_deeply_is_a_400_and_the_connection_lives_on(server, levels):
    schema = deep_schema(levels)
    bodies = {
        "/v1/chat/completions": '{"model":"tenshu-tiny","max_tokens":3,"messages":[{"role":'
                                '"user","content":"hi"}],"tools":[{"type":"function",'
                                f'"function":{{"name":"f","parameters":{schema}}}}}]}}',
        "/v1/messages": '{"model":"tenshu-tiny","max_tokens":3,"messages":[{"role":"user",'
                        f'"content":"hi"}}],"tools":[{{"name":"f","input_schema":{schema}}}]}}',
        "/api/chat": '{"model":"tenshu-tiny","stream":false,"messages":[{"role":"user",'
                     f'"content":"hi"}}],"format":{schema}}}',
    }
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=120) as client:
        for path, body in bodies.items():
            response = client.post(path, content=body,
                                   headers={"Content-Type": "application/json"})
            assert 400 <= response.status_code < 500, (path, response.text[:200])
            assert protocol_error(path, response.json()), (path, response.text[:200])
            if path.startswith("/v1/chat"):
                assert response.json()["error"]["type"] == "invalid_request_error"
        # the same connection still serves
        assert client.post("/v1/chat/completions",
                           json=ENDPOINTS["/v1/chat/completions"]).status_code == 200
