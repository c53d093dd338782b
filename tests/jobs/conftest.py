"""The jobs tests' state database (SQLite, then PostgreSQL) and the folder runs log to."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenshu.store import open_store


@pytest.fixture
def store(database):
    with open_store(database) as store:
        yield store


@pytest.fixture
def logs(tmp_path) -> Path:
    return tmp_path / "logs" / "jobs"
