"""Fixtures for CLI tests: a temporary tenshu home, and audit records written into it."""

from __future__ import annotations

import asyncio

import pytest

from tenshu.store import open_store


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSHU_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def log(home):
    """log(*records): write audit records through the real writer, into the home's database."""

    async def write(store, records):
        writer = store.writer(interval=60)
        await writer.start()
        for fields in records:
            writer.record(**fields)
        await writer.close()

    def log_records(*records: dict) -> None:
        with open_store(home / "state.db") as store:
            asyncio.run(write(store, records))

    return log_records
