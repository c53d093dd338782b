"""Shared fixtures: tiny random checkpoints, made once per session with transformers."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from tests.checkpoints import make_checkpoint

# Tests never read or write the user's own tenshu home (keys, state.db, tenshu.toml).
os.environ["TENSHU_HOME"] = tempfile.mkdtemp(prefix="tenshu-test-home-")

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

FAMILIES = ["llama", "qwen2", "qwen3", "mistral"]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(family, **kwargs) -> path of a tiny random checkpoint, cached per arguments."""
    made: dict[tuple, object] = {}

    def make(family: str = "qwen3", **kwargs):
        key = (family, tuple(sorted(kwargs.items(), key=str)))
        if key not in made:
            out = tmp_path_factory.mktemp(f"{family}-ckpt")
            made[key] = make_checkpoint(out, family, **kwargs)
        return made[key]

    return make


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (tests/postgres.py); skips where none can be had."""
    from tests import postgres as pg

    try:
        server = pg.start()
    except pg.Unavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A new, empty state database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "state.db")
        return
    server = request.getfixturevalue("postgres")
    url = server.database()
    yield url
    server.drop(url)
