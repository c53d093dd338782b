"""`tenshu keys` as a person runs it: a real subprocess on a TENSHU_HOME of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture
def tenshu(tmp_path):
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tenshu", "keys", *args],
                              capture_output=True, text=True, timeout=120, env=env)

    return run


def test_create_list_revoke(tenshu, tmp_path):
    created = tenshu("create", "--name", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # the key alone, so KEY=$(tenshu keys create ...) works
    assert key.startswith("tsk-") and len(key) == 44
    assert "only time" in created.stderr
    assert (tmp_path / "state.db").exists()

    listed = tenshu("list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "USER", "PREFIX", "CREATED", "LAST", "USED", "PRIVATE",
                              "STATUS"]
    assert row.split()[:3] == ["ci", "owner", key[:12]] and row.split()[-2:] == ["no", "active"]
    assert "never" in row
    assert key not in listed.stdout

    revoked = tenshu("revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    assert "ci" in revoked.stdout

    listed = tenshu("list")
    assert listed.stdout.splitlines()[1].endswith("revoked")


def test_revoking_an_unknown_key_is_a_clear_error(tenshu):
    result = tenshu("revoke", "ghost")
    assert result.returncode == 1
    assert "no API key is named or prefixed 'ghost'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_duplicate_name_is_a_clear_error(tenshu):
    assert tenshu("create", "--name", "ci").returncode == 0
    result = tenshu("create", "--name", "ci")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "already named 'ci'" in result.stderr


def test_a_private_key(tenshu):
    created = tenshu("create", "--name", "notes", "--private")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("tsk-")
    assert "never leave this machine" in created.stderr
    assert tenshu("create", "--name", "laptop").returncode == 0
    rows = tenshu("list").stdout.splitlines()[1:]
    assert [(row.split()[0], row.split()[-2]) for row in rows] == [("notes", "yes"),
                                                                   ("laptop", "no")]
