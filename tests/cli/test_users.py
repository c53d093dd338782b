"""`tenshu users`, `tenshu keys --user`, `tenshu feedback` and `tenshu export` as a person runs
them: real subprocesses on a TENSHU_HOME of their own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from tenshu.store import Principal, open_store
from tests.store.test_conversations import openwebui_export, recorded


@pytest.fixture
def tenshu(tmp_path):
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tenshu", *args], input=stdin,
                              capture_output=True, text=True, timeout=120, env=env)

    return run


def test_users_add_list_passwd_set_and_keys_for_them(tenshu, tmp_path):
    assert tenshu("users", "add", "ana", "--password", stdin="a long enough one\n"
                  ).returncode == 0
    assert tenshu("users", "add", "kim", "--admin").stdout.strip() == "added admin kim"
    header, *rows = tenshu("users", "list").stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "RECORDS", "PASSWORD", "CREATED"]
    assert [r.split()[:4] for r in rows] == [["owner", "admin", "request", "no"],
                                             ["ana", "member", "request", "yes"],
                                             ["kim", "admin", "request", "no"]]
    assert tenshu("users", "passwd", "ana", stdin="short\n").returncode == 1
    assert tenshu("users", "passwd", "ana", stdin="another long one\n").returncode == 0
    with open_store(tmp_path / "state.db") as store:
        assert store.users.check_password("ana", "another long one") is not None
    assert "records always" in tenshu("users", "set", "ana", "--record", "always").stdout
    key = tenshu("keys", "create", "--name", "ana-phone", "--user", "ana").stdout.strip()
    with open_store(tmp_path / "state.db") as store:
        assert store.keys.verify(key).user_name == "ana"
    listed = tenshu("keys", "list", "--user", "ana").stdout.splitlines()
    assert len(listed) == 2 and listed[1].split()[:2] == ["ana-phone", "ana"]
    missing = tenshu("keys", "create", "--name", "x", "--user", "nobody")
    assert missing.returncode == 1 and "no user named 'nobody'" in missing.stderr
    taken = tenshu("users", "add", "ana")
    assert taken.returncode == 1 and "already named 'ana'" in taken.stderr


def test_removing_a_user_says_what_goes_and_asks(tenshu, tmp_path):
    tenshu("users", "add", "ana")
    tenshu("keys", "create", "--name", "ana-phone", "--user", "ana")
    with open_store(tmp_path / "state.db") as store:
        asyncio.run(recorded(store, Principal.of(store.users.get("ana")), ["hi", "there"]))
    asked = tenshu("users", "remove", "ana")  # no terminal to ask on: nothing happens
    assert asked.returncode == 1 and "--yes" in asked.stderr
    assert "1 keys, 1 conversations, 2 turns, 0 feedback" in asked.stderr
    assert "nothing removed" in asked.stderr
    done = tenshu("users", "remove", "ana", "--yes")
    assert done.returncode == 0, done.stderr
    assert ("removed ana: 1 conversations, 2 turns, 0 feedback, 0 collections, 0 runs, "
            "0 responses, 0 deliveries, 0 notifications, 1 keys") in done.stdout
    assert "ana" not in tenshu("users", "list").stdout
    last = tenshu("users", "remove", "owner", "--yes")
    assert last.returncode == 1 and "last admin" in last.stderr


def test_feedback_import_export_and_a_users_export(tenshu, tmp_path):
    tenshu("users", "add", "ana")
    exported = tmp_path / "feedback-export.json"
    exported.write_text(json.dumps(openwebui_export()))
    first = tenshu("feedback", "import", str(exported), "--user", "ana")
    assert first.returncode == 0, first.stderr
    assert "imported 1 rating(s) as ana's; 0 imported before, 3 skipped" in first.stdout
    again = tenshu("feedback", "import", str(exported), "--user", "ana")
    assert "imported 0 rating(s)" in again.stdout and "1 imported before" in again.stdout

    lines = tenshu("feedback", "export", "--format", "jsonl")
    assert lines.returncode == 0, lines.stderr
    items = [json.loads(line) for line in lines.stdout.splitlines()]
    assert sorted(i["kind"] for i in items) == ["preference", "rating"]
    rating = next(i for i in items if i["kind"] == "rating")
    assert rating["user"] == "ana" and rating["rating"] == 1 and rating["model"] == "llama3"
    assert [m["content"][0]["text"] for m in rating["prompt"]] == [
        "What is a moat?", "Water around a castle.", "Why?"]
    assert rating["answer"]["content"][0]["text"] == "To keep attackers out."
    preference = next(i for i in items if i["kind"] == "preference")
    assert preference["other_answer"]["content"][0]["text"] == "Because."
    assert "exported 2 feedback item(s)" in lines.stderr

    out = tmp_path / "ana.json"
    assert tenshu("export", "--user", "ana", "--out", str(out)).returncode == 0
    document = json.loads(out.read_text())
    assert document["user"]["name"] == "ana" and len(document["conversations"]) == 2
    assert len(document["feedback"]) == 2
    assert sum(len(c["messages"]) for c in document["conversations"]) == 3
    assert tenshu("export", "--user", "nobody").returncode == 1
