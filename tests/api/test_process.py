"""`tenshu serve` as a process: killed with -9 under load it loses no answered request's audit
record; stopped with SIGTERM in the middle of a long embedding it exits within its grace
period; traced while serving every protocol it makes no connection off the machine; and what
it keeps in its home only its owner can read."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest

from tenshu.store import open_store
from tests.api import process

CHAT = {"model": "tenshu-tiny", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "who are you?"}]}


def test_kill_9_under_load_loses_no_answered_request(tmp_path):
    home = tmp_path / "home"
    server = process.start(home, "--max-queue", "512")
    try:
        async def load() -> list[str]:
            async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
                async def one(i: int) -> str | None:
                    body = {**CHAT, "messages": [{"role": "user", "content": f"hello {i}"}]}
                    response = await client.post("/v1/chat/completions", json=body)
                    return response.headers["request-id"] if response.status_code == 200 \
                        else None

                return await asyncio.gather(*(one(i) for i in range(96)))

        answered = [rid for rid in asyncio.run(load()) if rid]
        assert len(answered) == 96
    finally:
        server.process.kill()  # at once: the audit writer's last batch was not written
        server.process.wait()
    # the next start writes what the journal kept
    with process.running(home) as again:
        assert httpx.get(again.url + "/health").status_code == 200
    with open_store(home / "state.db") as store:
        logged = {store.audit.find(rid) is not None for rid in answered}
    assert logged == {True}
    assert not list(home.glob("audit.journal*"))  # written, then cleared


def test_sigterm_during_a_long_embedding_exits_within_the_grace_period(tmp_path):
    server = process.start(tmp_path / "home", "--grace", "2")
    assert httpx.post(server.url + "/v1/embeddings", timeout=120,
                      json={"model": "all-minilm-l6-v2", "input": "load"}).status_code == 200
    # ~1,100 inputs of ~240 tokens (under the 300,000 a request may hold): minutes of work
    inputs = ["the castle keep at dusk, " * 40] * 1_100
    outcome: dict = {}

    def embed():
        try:
            outcome["status"] = httpx.post(server.url + "/v1/embeddings", timeout=600, json={
                "model": "all-minilm-l6-v2", "input": inputs}).status_code
        except httpx.TransportError as exc:
            outcome["error"] = exc

    before = cpu_seconds(server.process.pid)
    client = threading.Thread(target=embed)
    client.start()
    # sent, read and being embedded: the server has been working on it for a few CPU seconds
    deadline = time.monotonic() + 120
    while cpu_seconds(server.process.pid) - before < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "status" not in outcome
    stopped = time.monotonic()
    try:
        code = server.stop(signal.SIGTERM, timeout=60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    waited = time.monotonic() - stopped
    client.join(60)
    assert code == 0, server.log()[-2000:]
    # the grace (2 s), then the batch in progress and the last writes; never the minutes of
    # work left (the generous bound is for loaded machines)
    assert waited < 45, server.log()[-2000:]
    assert outcome.get("status", 503) == 503


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used, from Linux's /proc (elsewhere, wall-clock time stands
    in for it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return time.monotonic()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# A connection strace saw: the address family and where it went.
_CONNECT = re.compile(r"connect\(\d+, \{sa_family=(AF_INET6?|AF_UNIX), (.*?)\}")


def outbound(trace: str) -> list[str]:
    """Connections in an strace log that leave this machine (or ask a name server)."""
    found = []
    for family, address in _CONNECT.findall(trace):
        if family == "AF_UNIX":
            continue
        ip = re.search(r'inet_(?:addr|pton)\((?:AF_INET6, )?"([^"]+)"', address)
        port = re.search(r"htons\((\d+)\)", address)
        local = ip and (ip.group(1).startswith("127.") or ip.group(1) in ("::1",
                                                                          "::ffff:127.0.0.1"))
        if not local or (port and port.group(1) == "53"):
            found.append(f"{family} {address}")
    return found


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_serving_every_protocol_makes_no_connection_off_the_machine(tmp_path):
    home = tmp_path / "home"
    trace = tmp_path / "connect.trace"
    with process.running(home, wrapper=("strace", "-f", "-qq", "--seccomp-bpf", "-e",
                                        "trace=connect", "-o", str(trace))) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            assert client.post("/v1/chat/completions", json={**CHAT, "stream": True}
                               ).status_code == 200
            assert client.post("/v1/completions", json={"model": "tenshu-tiny", "prompt": "hi",
                                                        "max_tokens": 4}).status_code == 200
            assert client.post("/v1/messages", json=CHAT).status_code == 200
            assert client.post("/api/chat", json={**CHAT, "stream": False}).status_code == 200
            assert client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2",
                                                       "input": ["a", "b"]}).status_code == 200
            assert client.post("/v1/chat/completions", json={
                **CHAT, "response_format": {"type": "json_object"}}).status_code == 200
            for path in ("/v1/models", "/api/tags", "/metrics", "/docs", "/openapi.json"):
                assert client.get(path).status_code == 200, path
        _check_private(home)
    text = trace.read_text()
    assert "connect(" in text  # the trace worked: it saw the clients' own loopback connects
    assert outbound(text) == []


def _check_private(home) -> None:
    """The home and what the server keeps in it: its owner's alone."""
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    kept = [p for p in home.iterdir() if p.name.startswith(("state.db", "audit.journal"))]
    assert any(p.name == "state.db" for p in kept)
    for path in kept:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_home_left_open_to_others_is_closed_at_start(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TENSHU_HOME", str(home))
    with open_store(home / "state.db") as store:
        store.keys.create("laptop")
    home.chmod(0o755)  # as an older tenshu, or a person, left them
    (home / "state.db").chmod(0o644)
    with open_store(home / "state.db") as store:
        assert [k.name for k in store.keys.list()] == ["laptop"]
    _check_private(home)


def test_kill_9_while_recording_leaves_a_sound_database_and_no_answered_turn_lost(tmp_path):
    home = tmp_path / "home"
    server = process.start(home, "--max-queue", "512")
    answered: list[tuple[str, str]] = []  # (conversation, turn) of each answer received
    stop = threading.Event()

    async def client(i: int, http: httpx.AsyncClient) -> None:
        conv = "new"
        for j in range(1_000):
            if stop.is_set():
                return
            try:
                r = await http.post("/v1/chat/completions", headers={
                    "x-tenshu-conversation": conv}, json={
                    **CHAT, "max_tokens": 2, "messages": [
                        {"role": "user", "content": f"client {i} turn {j} " + "pad " * 50}]})
            except httpx.TransportError:
                return  # killed
            if r.status_code == 200:
                conv = r.headers["x-tenshu-conversation"]
                answered.append((conv, r.headers["x-tenshu-turn"]))

    async def load() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            await asyncio.gather(*(client(i, http) for i in range(16)))

    runner = threading.Thread(target=lambda: asyncio.run(load()))
    runner.start()
    deadline = time.monotonic() + 120
    while len(answered) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.process.kill()  # in the middle of the writes
    server.process.wait()
    stop.set()
    runner.join(60)
    got = list(answered)
    assert len(got) >= 60
    with sqlite3.connect(home / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with process.running(home):  # the next start writes what the journal kept
        pass
    with sqlite3.connect(home / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {row[0]: row for row in db.execute(
            "SELECT id, conversation_id, seq, messages, completion FROM turns")}
    for conv, turn in got:  # every answered turn is there, whole
        row = rows.get(turn)
        assert row is not None and row[1] == conv, turn
    for _, _, _, messages, completion in rows.values():  # and nothing is half there
        assert json.loads(messages)[0]["role"] == "user" and json.loads(completion)
    per_conversation: dict[str, list[int]] = {}
    for _, conv, seq, _, _ in rows.values():
        per_conversation.setdefault(conv, []).append(seq)
    assert all(sorted(s) == list(range(1, len(s) + 1)) for s in per_conversation.values())
