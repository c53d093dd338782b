"""Fixtures for API tests: a live server on loopback serving the built-in model and embedder."""

from __future__ import annotations

import pytest

from tests.api.live import live_server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """tenshu-tiny (the shipped default) and all-minilm-l6-v2, with an API key required."""
    state = tmp_path_factory.mktemp("state") / "state.db"
    with live_server(state, max_num_seqs=32) as live:
        yield live
