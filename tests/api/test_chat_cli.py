"""`tenshu chat --url`: the terminal chat against a running server, as a person runs it."""

from __future__ import annotations

import subprocess
import sys


def chat(server, *args: str, input: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tenshu", "chat", "--url", server.base_url, "--key", server.key,
         "--temperature", "0", "--max-tokens", "24", *args],
        capture_output=True, text=True, timeout=120, input=input)


def test_chat_against_a_server_holds_a_conversation_with_commands(server):
    script = "\n".join([
        "/model",
        "who are you?",
        "/system Answer as a cat.",
        '"""',
        "what do you",
        "eat?",
        '"""',
        "/reset",
        "/model nope",
        "/bye",
    ]) + "\n"
    result = chat(server, input=script)
    lines = result.stdout.splitlines()
    assert "* tenshu-tiny" in lines and "  all-minilm-l6-v2" in lines
    replies = [line for line in lines if line and not line.startswith(("* ", "  "))]
    assert len(replies) == 2 and all(replies)
    assert "[system message set]" in result.stderr
    assert "[conversation cleared]" in result.stderr
    assert "no model 'nope' on the server" in result.stderr  # said, and the chat goes on
    assert result.returncode == 0 and "Traceback" not in result.stderr


def test_chat_says_clearly_when_the_server_is_unreachable(server):
    result = subprocess.run(
        [sys.executable, "-m", "tenshu", "chat", "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=120, input="hi\n")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr and "Traceback" not in result.stderr
