"""The tenshu command as a person runs it: a real subprocess."""

from __future__ import annotations

import subprocess
import sys


def tenshu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tenshu", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_commands():
    result = tenshu("--help")
    assert result.returncode == 0
    for command in ("serve", "run", "bench"):
        assert command in result.stdout


def test_run_streams_a_completion(checkpoint):
    path = checkpoint("qwen3")
    result = tenshu("run", str(path), "Once upon a time", "--max-tokens", "20", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) > 0
    again = tenshu("run", str(path), "Once upon a time", "--max-tokens", "20", "--seed", "1")
    assert again.stdout == result.stdout


def test_run_with_chat_template(checkpoint):
    result = tenshu("run", str(checkpoint("qwen3")), "Hi", "--chat", "--max-tokens", "5")
    assert result.returncode == 0, result.stderr


def test_run_on_a_missing_model_is_a_clear_error(tmp_path):
    result = tenshu("run", str(tmp_path / "nope"), "hi")
    assert result.returncode == 1
    assert "not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_says_the_server_is_not_built_yet():
    result = tenshu("serve")
    assert result.returncode == 1
    assert "not built yet" in result.stderr
