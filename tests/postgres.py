"""A real PostgreSQL server for the tests, started in a temporary directory and stopped after.

It uses the server binaries of Debian's `postgresql` package (`make install` installs it where
apt is there). PostgreSQL will not run as root: under root it runs as the `postgres` user the
package makes. Where no server can be had, `start` raises Unavailable with what to install, and
the tests that need it skip with that message.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.api.live import free_port

HOW = ("install PostgreSQL's server (Debian: `apt-get install postgresql`, which `make install` "
       "does where apt is there)")


class Unavailable(RuntimeError):
    pass


class Postgres:
    def __init__(self, bindir: Path, runner: list[str], root: Path, port: int):
        self.bindir, self.runner, self.root, self.port = bindir, runner, root, port

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def drop(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        subprocess.run([*self.runner, str(self.bindir / "pg_ctl"), "-D",
                        str(self.root / "data"), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        bindir = Path(out.stdout.strip())
        if (bindir / "postgres").exists():
            return bindir
    raise Unavailable(f"no PostgreSQL server here: {HOW}")


def start() -> Postgres:
    bindir = _bindir()
    runner: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="tenshu-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            raise Unavailable("PostgreSQL will not run as root, and there is no `postgres` "
                              f"user to run it as: {HOW}")
        runner = [runuser, "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = free_port()
    init = subprocess.run([*runner, str(bindir / "initdb"), "-D", str(root / "data"), "-A",
                           "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
                          capture_output=True, text=True, timeout=120)
    if init.returncode:
        raise Unavailable(f"initdb failed: {init.stderr[-500:]}")
    options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")
    started = subprocess.run([*runner, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-o",
                              options, "-l", str(root / "log"), "-w", "-t", "120", "start"],
                             capture_output=True, text=True, timeout=180)
    if started.returncode:
        log = (root / "log").read_text(errors="replace")[-1000:] if (root / "log").exists() \
            else started.stderr
        raise Unavailable(f"PostgreSQL did not start: {log}")
    return Postgres(bindir, runner, root, port)
