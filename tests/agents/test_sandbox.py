"""The exec tools' sandbox (tenshu/agents/sandbox.py), run for real: every escape attempt fails,
every limit holds, and nothing is left running afterwards."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from tenshu.agents.sandbox import (
    ExecResult,
    Limits,
    SandboxUnavailable,
    find_sandbox,
    require_sandbox,
    run_python,
    run_shell,
)
from tenshu.core.errors import InvalidRequestError

SANDBOX = find_sandbox()
pytestmark = pytest.mark.skipif(
    SANDBOX is None, reason="no working sandbox here (Linux: install bubblewrap and allow user "
                            "namespaces; see require_sandbox()'s message)")
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


def marker() -> str:
    """A number no other command line on the machine holds (`sleep` takes it as seconds)."""
    return f"900.{secrets.randbelow(10**12):012d}"


def running(mark: str) -> list[int]:
    """The PIDs on the host, in any namespace, whose command line holds `mark`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass  # gone while we looked
    return pids


async def shell(command: str, workspace: Path, **kw) -> ExecResult:
    return await run_shell(SANDBOX, command, workspace=workspace, **kw)


async def test_output_and_exit_code_come_back(workspace):
    result = await shell("echo out; echo err >&2; exit 3", workspace)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.timed_out and not result.truncated


async def test_stdin_reaches_the_command(workspace):
    result = await run_python(SANDBOX, "import sys; print(sys.stdin.read().upper())",
                              workspace=workspace, stdin="hello")
    assert result.stdout == "HELLO\n"


async def test_workspace_is_the_writable_cwd_and_home(workspace):
    result = await shell('pwd; echo "$HOME"; echo made > made.txt; mkdir -p d && echo x > d/y',
                         workspace)
    assert result.stdout == "/workspace\n/workspace\n"
    assert (workspace / "made.txt").read_text() == "made\n"
    assert (workspace / "d" / "y").read_text() == "x\n"


async def test_nothing_outside_the_workspace_is_writable(workspace, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    name = f"escape-{secrets.token_hex(4)}"
    for target in (outside / name, Path("/usr") / name, Path("/etc") / name, Path("/") / name,
                   Path("/dev") / name, PROJECT / name):
        result = await shell(f"echo x > {target}", workspace)
        assert result.exit_code != 0, target
        assert not target.exists(), target
    # /tmp inside is private: what is written there is not the host's /tmp
    result = await shell(f"echo x > /tmp/{name} && cat /tmp/{name}", workspace)
    assert result.stdout == "x\n"
    assert not (Path("/tmp") / name).exists()


async def test_host_homes_and_the_project_are_invisible(workspace, tmp_path):
    secret_dir = tmp_path / "home" / ".ssh"
    secret_dir.mkdir(parents=True)
    (secret_dir / "id_ed25519").write_text("TOP-SECRET-KEY")
    home = Path.home()
    result = await shell(
        f"cat {secret_dir}/id_ed25519; ls {tmp_path}; ls -a /root /home {home} {PROJECT}; "
        f"cat /root/.ssh/* {home}/.ssh/* {PROJECT}/pyproject.toml; ls /", workspace)
    assert "TOP-SECRET-KEY" not in result.stdout + result.stderr
    assert "tenshu" not in result.stdout
    top = set(result.stdout.split())
    assert not top & {"root", "home", "work", "opt", "srv", "mnt", "var"}
    assert {"usr", "workspace", "tmp", "etc"} <= top


async def test_server_environment_does_not_leak(workspace, monkeypatch):
    monkeypatch.setenv("TENSHU_TEST_SECRET", "hunter2")
    result = await shell("env", workspace, env={"GREETING": "hi"})
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines()}
    assert "hunter2" not in result.stdout
    assert names <= {"PATH", "HOME", "LANG", "TERM", "GREETING", "PWD", "SHLVL", "_"}
    assert "GREETING=hi" in result.stdout.splitlines()


async def test_not_root_and_no_shadow(workspace):
    result = await shell("id -u; cat /etc/shadow", workspace)
    assert result.stdout.strip() != "0"
    assert result.exit_code != 0


async def test_no_network_unless_asked(workspace):
    connected = asyncio.Event()

    async def accept(reader, writer):
        connected.set()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = ("import socket\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
            "    print('connected')\nexcept OSError as e:\n    print('refused', e)\n")
    async with server:
        closed = await run_python(SANDBOX, code, workspace=workspace)
        assert closed.stdout.startswith("refused"), closed
        assert not connected.is_set()
        opened = await run_python(SANDBOX, code, workspace=workspace, network=True)
        assert opened.stdout.startswith("connected"), opened
        await asyncio.wait_for(connected.wait(), 10)


@pytest.mark.skipif(SANDBOX is not None and not SANDBOX.limits_processes,
                    reason="running as root with no pids cgroup: the process limit cannot hold")
async def test_process_limit_holds(workspace):
    code = ("import os, time\nn = 0\ntry:\n    while n < 300:\n        if os.fork() == 0:\n"
            "            time.sleep(30); os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print('stopped', n)\nelse:\n    print('forked', n)\n")
    result = await run_python(SANDBOX, code, workspace=workspace,
                              limits=Limits(processes=16, timeout_s=20))
    word, count = result.stdout.split()
    assert word == "stopped" and int(count) < 16, result


@pytest.mark.skipif(SANDBOX is not None and not SANDBOX.limits_processes,
                    reason="running as root with no pids cgroup: the process limit cannot hold")
async def test_fork_bomb_ends_and_leaves_nothing(workspace):
    mark = marker()  # the bomb's shells are forks of bash -c, so their command lines hold it
    bomb = asyncio.create_task(shell(f": {mark}; :(){{ :|:& }};:; sleep {mark}", workspace,
                                     limits=Limits(processes=32, timeout_s=2)))
    peak = 0
    while not bomb.done():
        peak = max(peak, len(running(mark)))
        await asyncio.sleep(0.02)
    result = bomb.result()
    assert result.timed_out and "fork" in result.stderr
    # a scan of /proc is not one instant, so a process that ended and one that replaced it may
    # both be counted: the margin is for that, not for the limit
    assert 0 < peak <= 2 * 32
    assert running(mark) == []
    after = await shell("echo fine", workspace)
    assert after.stdout == "fine\n"


async def test_timeout_kills_the_whole_tree(workspace):
    mark = marker()
    result = await shell(f"sleep {mark} & (sleep {mark}; true) & setsid sleep {mark} & "
                         "while :; do :; done", workspace, limits=Limits(timeout_s=1.5))
    assert result.timed_out and result.exit_code is None
    assert running(mark) == []


async def test_cancelling_kills_the_whole_tree(workspace):
    mark = marker()
    task = asyncio.create_task(shell(f"sleep {mark} & sleep {mark}", workspace))
    for _ in range(200):
        if len(running(mark)) >= 2:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert running(mark) == []


async def test_memory_limit(workspace):
    code = ("try:\n    b = bytearray(4 << 30)\n    print('allocated')\n"
            "except MemoryError:\n    print('MemoryError')\n")
    result = await run_python(SANDBOX, code, workspace=workspace, limits=Limits(memory_mb=256))
    assert result.stdout == "MemoryError\n", result


async def test_tmpfs_is_capped_by_the_memory_limit(workspace):
    result = await shell("head -c 8000000 /dev/zero > /tmp/big", workspace,
                         limits=Limits(memory_mb=4))
    assert result.exit_code != 0 and "No space left" in result.stderr


async def test_output_flood_is_cut(workspace):
    result = await shell("yes", workspace, limits=Limits(output_bytes=10_000, timeout_s=1.5))
    assert result.truncated and result.timed_out
    assert result.stdout.startswith("y\ny\n")
    assert len(result.stdout) < 10_200 and "[output cut at 10000 bytes" in result.stdout


async def test_python3_is_there(workspace):
    (workspace / "helper.py").write_text("ANSWER = 42\n")
    result = await run_python(SANDBOX, "import helper, sys; print(helper.ANSWER, sys.version_info[0])",
                              workspace=workspace)
    assert result.stdout == "42 3\n", result


async def test_bad_requests_are_refused(workspace):
    with pytest.raises(InvalidRequestError):
        Limits(timeout_s=0)
    with pytest.raises(InvalidRequestError):
        await SANDBOX.run([], workspace=workspace)
    with pytest.raises(InvalidRequestError):
        await SANDBOX.run(["true"], workspace=workspace / "missing")


def test_require_sandbox_says_what_to_install(tmp_path):
    assert find_sandbox(executable="/nonexistent/bwrap") is None
    with pytest.raises(SandboxUnavailable, match="apt install bubblewrap") as missing:
        require_sandbox(executable="/nonexistent/bwrap")
    assert missing.value.status == 501
    with pytest.raises(SandboxUnavailable, match="is not bubblewrap"):
        require_sandbox(executable="/bin/true")  # would "run" anything, sandboxing nothing
    # a bwrap that cannot make namespaces, as where user namespaces are not allowed
    denied = tmp_path / "bwrap"
    denied.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "bubblewrap 0.8.0" && exit 0\n'
                      'echo "bwrap: No permissions to create new namespace" >&2; exit 1\n')
    denied.chmod(0o755)
    with pytest.raises(SandboxUnavailable, match="cannot create namespaces.*userns"):
        require_sandbox(executable=str(denied))
