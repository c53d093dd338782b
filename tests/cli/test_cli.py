"""The tenshu command as a person runs it: a real subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys


def tenshu(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tenshu", *args], capture_output=True, text=True, timeout=120,
        input=input,
    )


def test_help_lists_the_commands():
    result = tenshu("--help")
    assert result.returncode == 0
    for command in ("serve", "chat", "run", "train", "bench"):
        assert command in result.stdout


def test_run_streams_a_completion(checkpoint):
    path = checkpoint("qwen3")
    args = ("run", str(path), "Once upon a time", "--raw", "--max-tokens", "20", "--seed", "1")
    result = tenshu(*args)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) > 0
    again = tenshu(*args)
    assert again.stdout == result.stdout


def test_run_quantizes_on_load_as_serve_does(checkpoint, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(checkpoint("qwen3"), path)
    result = tenshu("run", str(path), "Once upon a time", "--raw", "--max-tokens", "8",
                    "--quantization", "int4", "--kv-cache-dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert list((path / ".tenshu-cache").glob("int4-*.safetensors"))  # quantized, and cached


def test_run_without_a_model_uses_the_built_in_one():
    result = tenshu("run", "hello, who are you?", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert "mochi" in result.stdout.lower()


def test_chat_holds_a_conversation_from_piped_input():
    lines = "hi mochi!\nwhat do you like to eat?\ntell me more\n/clear\nbye\n"
    result = tenshu("chat", "--temperature", "0", input=lines)
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(replies) == 4  # one per message; /clear is a command, not a message
    assert "[conversation cleared]" in result.stderr


def test_chat_drops_the_oldest_turns_when_the_context_is_full(checkpoint):
    path = checkpoint("qwen3")
    lines = "".join(f"message number {i} " * 6 + "\n" for i in range(8))
    result = tenshu("chat", str(path), "--max-model-len", "128", "--max-tokens", "8",
                    "--seed", "0", input=lines)
    assert result.returncode == 0, result.stderr
    assert "oldest turn was dropped" in result.stderr
    assert "does not fit" not in result.stderr  # every message got an answer


def test_run_on_a_missing_model_is_a_clear_error(tmp_path):
    result = tenshu("run", str(tmp_path / "nope"), "hi")
    assert result.returncode == 1
    assert "not a directory" in result.stderr
    assert "Traceback" not in result.stderr

