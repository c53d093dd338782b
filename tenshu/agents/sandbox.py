"""The sandbox that agents' exec tools (shell, Python) run in: bubblewrap on Linux, sandbox-exec
on macOS. builtins.py calls `require_sandbox()` and then `run_shell` / `run_python`; where this
machine has no sandbox that works, the exec tools are refused (SandboxUnavailable), never run
bare.

Inside bubblewrap a command sees:

    /workspace          the host's workspace folder, read-write; the working directory and HOME
    /usr, /bin, /lib..  the host's system folders, read-only (python3 and bash come from here)
    /etc                a few files programs need (ld.so.cache, alternatives, a generated passwd
                        and group); the host's resolv.conf, hosts and certificates only with
                        network=True; never shadow
    /tmp, /dev/shm      private tmpfs, each at most `memory_mb`
    /proc, /dev         its own (a new PID namespace; null, zero, urandom, tty, pts)

and nothing else: not /root, /home, the project or the server's own files. It runs as uid 1000
in a user namespace of its own (further user namespaces are disabled), in a new session, with a
network namespace of its own (not even the host's loopback) unless network=True, a scrubbed
environment, and rlimits set by prlimit(1) inside the namespaces. At the timeout (or when the
caller is cancelled, or the server dies) the namespace's init is killed, which takes every
process in it down with it.

network=True shares the host's network as it is: bubblewrap cannot hold a command to an
allowlist of hosts (the HTTP fetch tool keeps its own), so the exec tools should ask for it only
where a person allowed it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tenshu.core.errors import InvalidRequestError, TenshuError

log = logging.getLogger(__name__)

INSIDE_WORKSPACE = "/workspace"
PATH = "/usr/local/bin:/usr/bin:/bin"
_UID = 1000  # inside the namespace; host root's files appear as this user's, read-only mounts
_CHUNK = 65536


@dataclass(frozen=True)
class Limits:
    """What one command may use. Each rlimit holds per process; the timeout holds for the tree."""

    timeout_s: float = 60.0      # wall clock; then the whole process tree is killed
    cpu_s: int = 60              # RLIMIT_CPU
    memory_mb: int = 1024        # RLIMIT_DATA; also the size of /tmp and of /dev/shm
    processes: int = 128         # most processes at once (a fork bomb stops here or at the timeout)
    output_bytes: int = 256_000  # stdout and stderr each are cut to this, and say they were cut
    file_mb: int = 1024          # RLIMIT_FSIZE: the largest file a command may write

    def __post_init__(self):
        for name in ("timeout_s", "cpu_s", "memory_mb", "processes", "output_bytes", "file_mb"):
            if not getattr(self, name) > 0:
                raise InvalidRequestError(f"sandbox limit {name} must be positive", field=name)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None   # None when killed at the timeout; 128+N when signal N ended it
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False
    duration_s: float = 0.0


class SandboxUnavailable(TenshuError):
    """This machine has no sandbox that works, so the exec tools cannot run here (501: asking
    again will not help; installing one will)."""

    status = 501
    kind = "sandbox_unavailable"


class Sandbox(Protocol):
    name: str  # "bubblewrap" | "sandbox-exec"

    @property
    def limits_processes(self) -> bool:
        """Whether `Limits.processes` holds here (else a fork bomb stops only at the timeout)."""

    async def run(self, argv: list[str], *, workspace: Path, network: bool = False,
                  limits: Limits = Limits(), stdin: str | None = None,
                  env: dict[str, str] | None = None) -> ExecResult:
        """Runs `argv` (looked up on PATH inside) with `workspace` as its writable working
        folder, `stdin` as its input and `env` added to the scrubbed environment. A failing
        command is a result, not an error: its exit code and stderr say what happened."""
        ...


# ---------------------------------------------------------------------------------------------
# Linux: bubblewrap
# ---------------------------------------------------------------------------------------------

# From /etc, only what programs need to start and to name users, times and services.
_ETC = ("ld.so.cache", "alternatives", "localtime", "nsswitch.conf", "services", "protocols")
# ...and what they need to reach the network, when they may.
_ETC_NETWORK = ("resolv.conf", "hosts", "host.conf", "gai.conf", "ssl/certs", "ssl/openssl.cnf",
                "ca-certificates", "pki", "crypto-policies")
_PASSWD = (f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
           f"sandbox:x:{_UID}:{_UID}:sandbox:{INSIDE_WORKSPACE}:/bin/sh\n"
           f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
_GROUP = f"root:x:0:\nsandbox:x:{_UID}:\nnogroup:x:65534:\n"
_HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"


@dataclass(frozen=True)
class Bubblewrap:
    """Runs commands under bwrap. `pids_cgroup` is set where the server is root: the kernel
    never applies RLIMIT_NPROC to host root's processes (the sandbox's uid maps to host root
    then), so a pids cgroup per run holds the process limit instead."""

    executable: str
    prlimit: str
    pids_cgroup: str | None = None  # the folder run cgroups are made in, where root
    name: str = "bubblewrap"

    @property
    def limits_processes(self) -> bool:
        """Whether `Limits.processes` holds here (else a fork bomb stops only at the timeout)."""
        return os.geteuid() != 0 or self.pids_cgroup is not None

    def command(self, argv: list[str], *, workspace: Path, network: bool, limits: Limits,
                env: dict[str, str], files: dict[str, int], info_fd: int) -> list[str]:
        """bwrap's command line; `files` maps paths inside to fds holding their contents."""
        size = str(limits.memory_mb << 20)
        cmd = [self.executable, "--unshare-all", "--unshare-user", "--disable-userns",
               "--uid", str(_UID), "--gid", str(_UID), "--hostname", "sandbox",
               "--die-with-parent", "--new-session", "--info-fd", str(info_fd)]
        if network:
            cmd.append("--share-net")
        cmd += _system_mounts()
        for name in _ETC + (_ETC_NETWORK if network else ()):
            if Path("/etc", name).exists():
                cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for path, fd in files.items():
            cmd += ["--ro-bind-data", str(fd), path]
        cmd += ["--proc", "/proc", "--dev", "/dev",
                "--size", size, "--tmpfs", "/dev/shm", "--size", size, "--tmpfs", "/tmp",
                "--bind", str(workspace), INSIDE_WORKSPACE, "--chdir", INSIDE_WORKSPACE,
                # the root and /dev are tmpfs too: read-only, so they cannot fill the host's RAM
                "--remount-ro", "/dev", "--remount-ro", "/", "--clearenv"]
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        # prlimit runs inside the user namespace, so RLIMIT_NPROC counts this sandbox's
        # processes, not every process of the host user that runs tenshu.
        return cmd + ["--", self.prlimit, f"--cpu={limits.cpu_s}",
                      f"--data={limits.memory_mb << 20}", f"--fsize={limits.file_mb << 20}",
                      f"--nproc={limits.processes}", "--", *argv]

    async def run(self, argv: list[str], *, workspace: Path, network: bool = False,
                  limits: Limits = Limits(), stdin: str | None = None,
                  env: dict[str, str] | None = None) -> ExecResult:
        workspace = _check(argv, workspace, env)
        environment = _environment(INSIDE_WORKSPACE, env)
        files = {"/etc/passwd": _PASSWD, "/etc/group": _GROUP}
        if not network:
            files["/etc/hosts"] = _HOSTS
        cgroup = _PidsCgroup.make(self.pids_cgroup, limits.processes) if self.pids_cgroup else None
        try:
            data_fds = {path: _data_fd(text) for path, text in files.items()}
            info_r, info_w = os.pipe()
            cmd = self.command(argv, workspace=workspace, network=network, limits=limits,
                               env=environment, files=data_fds, info_fd=info_w)
            if cgroup:  # joins the cgroup before bwrap starts, so nothing is forked outside it
                cmd = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup.procs), *cmd]
            return await _supervise(cmd, stdin=stdin, limits=limits,
                                    pass_fds=[*data_fds.values(), info_w], cwd=None,
                                    env={"PATH": "/usr/bin:/bin"}, info_fd=info_r)
        finally:
            if cgroup:
                await cgroup.remove()


def _system_mounts() -> list[str]:
    """/usr read-only, and /bin, /lib... as the host has them: links into /usr where merged."""
    mounts = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        host = Path("/", name)
        if host.is_symlink():
            mounts += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            mounts += ["--ro-bind", str(host), f"/{name}"]
    return mounts


def _data_fd(text: str) -> int:
    """A pipe's read end holding `text` (small: it fits the pipe's buffer, so this never blocks)."""
    r, w = os.pipe()
    with os.fdopen(w, "wb") as f:
        f.write(text.encode())
    return r


@dataclass(frozen=True)
class _PidsCgroup:
    """A pids cgroup for one run (cgroup v1's pids hierarchy or v2), made only where tenshu runs
    as root. v2's cgroup.kill ends whatever is left; v1 is emptied by signalling its pids."""

    path: Path

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    @staticmethod
    def parent() -> str | None:
        """Where run cgroups can be made on this machine, or None."""
        v1, v2 = Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")
        try:
            if (v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK):
                return str(v1)
            controllers = v2 / "cgroup.controllers"
            if controllers.exists() and "pids" in controllers.read_text().split():
                subtree = v2 / "cgroup.subtree_control"
                if "pids" not in subtree.read_text().split():
                    subtree.write_text("+pids")
                return str(v2)
        except OSError:
            pass
        return None

    @classmethod
    def make(cls, parent: str, processes: int) -> _PidsCgroup | None:
        path = Path(parent, f"tenshu-sandbox-{secrets.token_hex(6)}")
        try:
            path.mkdir()
            # bwrap's own two processes (outside and the namespace's init) count too
            (path / "pids.max").write_text(str(processes + 2))
        except OSError as exc:
            log.warning("could not make a pids cgroup at %s (%s): the process limit holds only "
                        "at the timeout", path, exc)
            with suppress(OSError):
                path.rmdir()
            return None
        return cls(path)

    async def remove(self) -> None:
        for _ in range(100):
            with suppress(OSError):
                if (self.path / "cgroup.kill").exists():
                    (self.path / "cgroup.kill").write_text("1")
                else:
                    for pid in self.procs.read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while killed processes finish exiting
                await asyncio.sleep(0.05)
        log.warning("could not remove %s", self.path)


# ---------------------------------------------------------------------------------------------
# macOS: sandbox-exec
# ---------------------------------------------------------------------------------------------

# UNTESTED: tenshu's tests run on Linux, so this profile has never run. It is kept small on
# purpose: deny everything, then allow running programs, reading the system (not the people's
# homes, volumes or temp folders), writing only the workspace and a private temp folder,
# and the network only when asked. Later rules win in SBPL, so the workspace may be in a home.
_PROFILE = """(version 1)
(deny default)
(allow process-exec process-fork)
(allow signal (target same-sandbox))
(allow process-info* (target same-sandbox))
(allow sysctl-read)
(allow file-read*)
(deny file-read* (subpath "/Users") (subpath "/Volumes") (subpath "/private/var/root")
      (subpath "/private/var/folders") (subpath "/private/tmp") (subpath "/Library/Keychains"))
(allow file-read* file-write* (subpath (param "WORKSPACE")) (subpath (param "TMP")))
(allow file-write-data (literal "/dev/null") (literal "/dev/zero") (literal "/dev/tty"))
"""
_PROFILE_NETWORK = "(allow network* system-socket)\n"


@dataclass(frozen=True)
class SandboxExec:
    """Runs commands under macOS's sandbox-exec. What holds less than with bubblewrap: there is
    no PID namespace, so the timeout kills the process group (a process that leaves it with
    setsid survives), and only the CPU and data rlimits are set (RLIMIT_NPROC is per user on
    macOS: it would count the person's whole session)."""

    executable: str = "/usr/bin/sandbox-exec"
    name: str = "sandbox-exec"

    @property
    def limits_processes(self) -> bool:
        return False

    async def run(self, argv: list[str], *, workspace: Path, network: bool = False,
                  limits: Limits = Limits(), stdin: str | None = None,
                  env: dict[str, str] | None = None) -> ExecResult:
        workspace = _check(argv, workspace, env)
        tmp = Path(tempfile.mkdtemp(prefix="tenshu-sandbox-")).resolve()
        environment = {**_environment(str(workspace), env), "TMPDIR": str(tmp)}
        profile = _PROFILE + (_PROFILE_NETWORK if network else "")
        cmd = [self.executable, "-p", profile, "-D", f"WORKSPACE={workspace}", "-D", f"TMP={tmp}",
               "/bin/sh", "-c", f'ulimit -t {limits.cpu_s} && ulimit -d {limits.memory_mb << 10}'
               ' && exec "$@"', "sh", *argv]
        try:
            return await _supervise(cmd, stdin=stdin, limits=limits, pass_fds=(), cwd=workspace,
                                    env=environment, info_fd=None)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Running and supervising one command
# ---------------------------------------------------------------------------------------------

def _check(argv: list[str], workspace: Path, env: dict[str, str] | None) -> Path:
    if not argv:
        raise InvalidRequestError("nothing to run: the command is empty", field="argv")
    workspace = Path(workspace).resolve()
    if not workspace.is_dir():
        raise InvalidRequestError(f"the workspace {workspace} is not a folder", field="workspace")
    for key, value in (env or {}).items():
        if not key or "=" in key or "\0" in key + value:
            raise InvalidRequestError(f"bad environment variable {key!r}", field="env")
    return workspace


def _environment(home: str, env: dict[str, str] | None) -> dict[str, str]:
    """Only these and the caller's own: nothing of the server's environment (its API keys)."""
    return {"PATH": PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb", **(env or {})}


async def _supervise(cmd: list[str], *, stdin: str | None, limits: Limits, pass_fds, cwd,
                     env: dict[str, str], info_fd: int | None) -> ExecResult:
    """Runs `cmd` in a new process group, reads its outputs with a cap while it runs, and kills it
    at the timeout or on cancellation. With bwrap, `info_fd` yields the PID of the namespace's
    init: killing that one ends every process in the namespace before bwrap itself can exit."""
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, pass_fds=pass_fds,
            cwd=cwd, env=env, start_new_session=True)
    except BaseException:
        if info_fd is not None:
            os.close(info_fd)
        raise
    finally:  # the child has its copies; ours would keep the info pipe from ever ending
        for fd in pass_fds:
            os.close(fd)
    init: list[int] = []  # the namespace's init, once bwrap has said it
    tasks = [asyncio.create_task(_capped(proc.stdout, limits.output_bytes)),
             asyncio.create_task(_capped(proc.stderr, limits.output_bytes))]
    if info_fd is not None:
        tasks.append(asyncio.create_task(_read_init(info_fd, init)))
    if stdin is not None:
        tasks.append(asyncio.create_task(_feed(proc.stdin, stdin.encode())))
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), limits.timeout_s)
        except TimeoutError:
            timed_out = True
            await _kill(proc, init)
    except BaseException:  # cancelled: leave nothing running behind us
        await asyncio.shield(_kill(proc, init))
        for task in tasks:
            task.cancel()
        raise
    # Every writer is dead by now, so the pipes end; the bound is for what cannot happen.
    done, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    (out, out_cut), (err, err_cut) = (t.result() if t.done() and not t.cancelled() else (b"", 0)
                                      for t in tasks[:2])
    code = proc.returncode
    return ExecResult(
        exit_code=None if timed_out else 128 - code if code < 0 else code,
        stdout=_text(out, out_cut), stderr=_text(err, err_cut), timed_out=timed_out,
        truncated=bool(out_cut or err_cut), duration_s=time.monotonic() - start)


async def _kill(proc: asyncio.subprocess.Process, init: list[int]) -> None:
    if proc.returncode is not None:
        return
    if init:  # bwrap is alive, so its child's PID cannot have been reused
        with suppress(OSError):
            os.kill(init[0], signal.SIGKILL)
        try:  # bwrap exits once the kernel has killed and reaped the whole namespace
            await asyncio.wait_for(proc.wait(), 10)
            return
        except TimeoutError:
            pass
    with suppress(OSError):  # bwrap itself; --die-with-parent then ends the namespace's init
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def _read_init(fd: int, init: list[int]) -> None:
    """bwrap writes {"child-pid": N, ...} to its info fd once the namespace exists."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        data = await reader.read()
    finally:
        transport.close()
    with suppress(ValueError, KeyError, TypeError):  # bwrap failed first; its stderr says why
        init.append(int(json.loads(data)["child-pid"]))


async def _capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, int]:
    """Keeps the first `cap` bytes and drains the rest (so the writer never blocks on a full
    pipe); returns what was kept and how many bytes were dropped."""
    kept, dropped = bytearray(), 0
    while chunk := await stream.read(_CHUNK):
        room = cap - len(kept)
        kept += chunk[:room]
        dropped += max(0, len(chunk) - room)
    return bytes(kept), dropped


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    with suppress(OSError):  # the command may exit without reading its input
        pipe.write(data)
        await pipe.drain()
    with suppress(OSError):
        pipe.close()


def _text(data: bytes, dropped: int) -> str:
    text = data.decode("utf-8", errors="replace")
    if dropped:
        text += f"\n[output cut at {len(data)} bytes; {dropped} more bytes were dropped]"
    return text


# ---------------------------------------------------------------------------------------------
# Finding this machine's sandbox
# ---------------------------------------------------------------------------------------------

_INSTALL = {
    "linux": "install bubblewrap: apt install bubblewrap (Debian, Ubuntu), dnf install bubblewrap "
             "(Fedora), pacman -S bubblewrap (Arch)",
    "darwin": "sandbox-exec ships with macOS at /usr/bin/sandbox-exec; it is missing here",
}


def find_sandbox(executable: str | None = None) -> Bubblewrap | SandboxExec | None:
    """This machine's sandbox, or None. Probed once (a trivial command in the full set of
    namespaces) and remembered; `executable` names bwrap or sandbox-exec where it is not the one
    on PATH."""
    found = _probe(sys.platform, executable)
    return None if isinstance(found, str) else found


def require_sandbox(executable: str | None = None) -> Bubblewrap | SandboxExec:
    """This machine's sandbox, or SandboxUnavailable saying what to install or fix."""
    found = _probe(sys.platform, executable)
    if isinstance(found, str):
        raise SandboxUnavailable(f"the shell and Python tools need a sandbox and {found}")
    return found


@functools.cache
def _probe(system: str, executable: str | None) -> Bubblewrap | SandboxExec | str:
    """The sandbox, or why there is none (finishing the sentence "...need a sandbox and")."""
    if system == "darwin":
        path = executable or "/usr/bin/sandbox-exec"
        if not os.access(path, os.X_OK):
            return f"none was found: {_INSTALL['darwin']}"
        ok, why = _trial([path, "-p", "(version 1)(allow default)", "/usr/bin/true"])
        return SandboxExec(path) if ok else f"{path} does not work here: {why}"
    if not system.startswith("linux"):
        return f"none is known for {platform.system()}: run tenshu on Linux with bubblewrap"
    path = shutil.which(executable or "bwrap")
    if path is None:
        return f"bwrap was not found: {_INSTALL['linux']}"
    prlimit = next((p for p in ("/usr/bin/prlimit", "/bin/prlimit") if os.access(p, os.X_OK)),
                   None)
    if prlimit is None:
        return "prlimit was not found (it sets the limits inside): install util-linux"
    ok, version = _trial([path, "--version"])
    found = re.match(r"bubblewrap (\d+)\.(\d+)", version) if ok else None
    if found is None:
        return f"{path} is not bubblewrap (--version said {version!r}): {_INSTALL['linux']}"
    if (int(found[1]), int(found[2])) < (0, 8):  # --disable-userns came in 0.8, --size in 0.7
        return (f"{version} is too old: 0.8 or newer is needed (Debian 12 and Ubuntu 24.04 "
                "ship it; elsewhere build it from github.com/containers/bubblewrap)")
    ok, why = _trial([path, "--unshare-all", "--unshare-user", "--disable-userns",
                      "--uid", str(_UID), "--gid", str(_UID), "--die-with-parent",
                      *_system_mounts(), "--proc", "/proc", "--dev", "/dev",
                      "--", prlimit, "--nproc=16", "--", "/usr/bin/true"])
    if not ok:
        return (f"bubblewrap cannot create namespaces here ({why}): allow unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 also "
                "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for "
                "bwrap), or in a container run it with user namespaces allowed")
    cgroup = _PidsCgroup.parent() if os.geteuid() == 0 else None
    if os.geteuid() == 0 and cgroup is None:
        log.warning("tenshu runs as root and no pids cgroup can be made: sandboxed commands' "
                    "process limit holds only at their timeout (run tenshu as an ordinary user)")
    return Bubblewrap(path, prlimit, cgroup)


def _trial(cmd: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    said = (done.stderr or done.stdout).decode(errors="replace").strip()
    return done.returncode == 0, said or f"exit status {done.returncode}"


# ---------------------------------------------------------------------------------------------
# What the exec tools call
# ---------------------------------------------------------------------------------------------

async def run_shell(sandbox: Sandbox, command: str, **kw) -> ExecResult:
    """`command` run by bash inside the sandbox (keywords as for Sandbox.run)."""
    return await sandbox.run(["bash", "-c", command], **kw)


async def run_python(sandbox: Sandbox, code: str, **kw) -> ExecResult:
    """`code` run by the system's python3 inside the sandbox (the workspace is its cwd, so the
    modules an agent wrote there import)."""
    return await sandbox.run(["python3", "-c", code], **kw)
