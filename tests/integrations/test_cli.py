"""`tenshu integrations` as a person runs it: a real subprocess, whose browser ($BROWSER) signs
in at a real OAuth 2 server on loopback; and no token anywhere but the token store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integrations.browser import visit
from tests.integrations.conftest import SECRET_ENV

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, server):
    home = tmp_path / "home"
    home.mkdir()
    (home / "tenshu.toml").write_text(f"""
[integrations.work]
provider = "custom"
client_id = "{server.client.client_id}"
client_secret_env = "{SECRET_ENV}"
scopes = ["read", "write"]
authorize_url = "{server.authorize_url}"
token_url = "{server.token_url}"
revoke_url = "{server.revoke_url}"
""")
    browser = tmp_path / "browser"  # $BROWSER names one program, which is given the URL
    browser.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests/integrations/browser.py'}"
                       ' "$1"\n')
    browser.chmod(0o755)
    return home


def environment(home: Path) -> dict:
    return {**os.environ, "TENSHU_HOME": str(home), SECRET_ENV: "test-secret",
            "BROWSER": str(home.parent / "browser"),
            # the files, never the keychain of the machine the tests run on
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}


def tenshu(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tenshu", "integrations", *args], cwd=REPO,
                          env=environment(home), capture_output=True, text=True, timeout=60)


def leaks(secrets: list[str], home: Path, *outputs: subprocess.CompletedProcess) -> list[str]:
    """Where any of `secrets` appears: a file under the home (the state database included) or
    a command's output."""
    found = [str(p) for p in home.rglob("*") if p.is_file()
             for s in secrets if s.encode() in p.read_bytes()]
    return found + [f"output of {o.args[3:]}" for o in outputs for s in secrets
                    if s in o.stdout + o.stderr]


def test_connect_list_and_revoke(home, server):
    connected = tenshu(home, "connect", "work")
    assert connected.returncode == 0, connected.stderr
    assert connected.stdout.startswith("connected work (custom); scopes: read write; expires: ")
    assert "encrypted files in" in connected.stdout
    assert server.challenges == ["S256"] and len(server.tokens) == 1

    listed = tenshu(home, "list")
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert row[:5] == ["work", "custom", "connected", "read", "write"]
    assert (home / "state.db").exists() and list((home / "private" / "integrations").iterdir())
    assert leaks(server.secrets(), home, connected, listed) == []

    revoked = tenshu(home, "revoke", "work")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == "revoked work at custom and deleted its token"
    assert server.revoked == ["refresh_token", "access_token"]
    assert not server.valid(server.tokens[0].access_token)
    after = tenshu(home, "list")
    assert after.stdout.splitlines()[1].split()[:3] == ["work", "custom", "not"]
    assert leaks(server.secrets(), home, revoked, after) == []


def test_no_browser_prints_the_url_and_waits(home, server):
    with subprocess.Popen([sys.executable, "-m", "tenshu", "integrations", "connect", "work",
                           "--no-browser", "--timeout", "30"], cwd=REPO, env=environment(home),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        url = process.stdout.readline().strip()
        assert url.startswith(server.authorize_url + "?")
        page = visit(url)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert page.status_code == 200 and "connected to work" in page.text
    assert out.startswith("connected work")


def test_a_bad_table_is_named(home):
    (home / "tenshu.toml").write_text('[integrations.work]\nprovider = "custom"\n'
                                      'client_id = "c"\nclient_secret = "hunter2"\n')
    done = tenshu(home, "list")
    assert done.returncode == 1
    assert "integrations.work.client_secret: keep the secret out of tenshu.toml" in done.stderr


def test_removing_a_user_revokes_and_deletes_their_tokens(home, server):
    users = [sys.executable, "-m", "tenshu", "users"]
    made = subprocess.run([*users, "add", "ben"], cwd=REPO, env=environment(home),
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    for who in ("ben", None):  # ben's token, and the owner's
        connected = tenshu(home, "connect", "work", *(["--user", who] if who else []))
        assert connected.returncode == 0, connected.stderr
    # a token of an integration since taken out of tenshu.toml: in the files all the same
    folder = home / "private" / "integrations"
    (ben_file,) = [p for p in folder.iterdir() if p.name.endswith(".work.token")
                   and not p.name.startswith("1.")]
    ben_id = ben_file.name.split(".")[0]
    (folder / f"{ben_id}.old.token").write_bytes(ben_file.read_bytes())

    removed = subprocess.run([*users, "remove", "ben", "--yes"], cwd=REPO, env=environment(home),
                             capture_output=True, text=True, timeout=60)

    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip().endswith("2 integration tokens")
    assert server.revoked == ["refresh_token", "access_token"]  # ben's grant, not the owner's
    assert sorted(p.name for p in folder.iterdir()) == ["1.work.token"]
    listed = tenshu(home, "list")
    assert listed.stdout.splitlines()[1].split()[:3] == ["work", "custom", "connected"]
