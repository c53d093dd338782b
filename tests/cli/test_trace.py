"""`tenshu trace ID`: one request's path through the router, read back from the audit log."""

from __future__ import annotations

import json

import pytest

from tenshu.cli import main
from tenshu.router.trace import Attempt, Trace
from tenshu.store import open_store


def routed_request(key_id: int | None) -> dict:
    trace = Trace(route="code", tier="cloud", reason="sentinel", score=0.812,
                  private=None, backend="qwen-local",
                  attempts=[Attempt("gpt-cloud", "error", "overloaded: upstream busy", 412.0),
                            Attempt("qwen-local", "ok", ms=96.0)])
    return dict(request_id="req_4f1c0a9e", protocol="openai", route="/v1/chat/completions",
                model="auto", key_id=key_id, input_tokens=120, output_tokens=45, ttft_ms=508.0,
                duration_ms=1234.5, routed=trace.route, tier=trace.tier, backend=trace.backend,
                fallbacks=trace.fallbacks, cost_usd=0.0, score=trace.score,
                trace=trace.to_json())


def test_trace_shows_where_a_request_went(home, log, capsys):
    with open_store(home / "state.db") as store:
        laptop, _ = store.keys.create("laptop")
    log(routed_request(laptop.id))

    assert main(["trace", "chatcmpl-4f1c0a9e"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(None, 1) for line in out.splitlines() if line[:1] != " ")
    assert lines["request"] == "req_4f1c0a9e"
    assert lines["key"] == f"laptop (#{laptop.id})"
    assert lines["call"] == "openai /v1/chat/completions"
    assert lines["model"] == "auto"
    assert lines["route"] == "code, tier cloud (sentinel)"
    assert lines["sentinel"] == "score 0.812"
    assert lines["attempts"] == "1. gpt-cloud   error  412 ms  overloaded: upstream busy"
    assert "\n           2. qwen-local  ok      96 ms\n" in out
    assert lines["answered"] == "qwen-local (after 1 fallback)"
    assert (lines["status"], lines["tokens"], lines["cost"]) == ("200", "120 in, 45 out", "$0")
    assert (lines["ttft"], lines["duration"]) == ("508 ms", "1.23 s")
    assert "private" not in lines


def test_trace_of_a_private_failed_request(home, log, capsys):
    trace = Trace(route="chat", tier="local", reason="default", private="the key is private",
                  attempts=[Attempt("qwen-local", "error", "internal: out of memory", 30.0)])
    log(dict(request_id="req_77", protocol="anthropic", route="/v1/messages",
                   model="claude-sonnet", status=500, error_kind="internal", duration_ms=31.0,
                   routed="chat", tier="local", fallbacks=1, trace=trace.to_json()))
    assert main(["trace", "msg_77"]) == 0
    out = capsys.readouterr().out
    assert "kept on this machine: the key is private" in out
    assert "answered   nobody (after 1 fallback)" in out
    assert "status     500 internal" in out
    assert "ttft       - (no token)" in out
    assert "key        none (anonymous)" in out


def test_trace_json(home, log, capsys):
    log(routed_request(None))
    assert main(["trace", "4f1c0a9e", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["request_id"] == "req_4f1c0a9e" and data["backend"] == "qwen-local"
    assert data["fallbacks"] == 1 and data["score"] == pytest.approx(0.812)
    assert data["trace"]["attempts"][0]["backend"] == "gpt-cloud"  # an object, not a string
    assert data["key_name"] is None and data["ts"].endswith("+00:00")


def test_an_unknown_id_is_a_clear_error(home, log, capsys):
    log(routed_request(None))
    assert main(["trace", "req_nope"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no request 'req_nope' in the audit log" in captured.err
