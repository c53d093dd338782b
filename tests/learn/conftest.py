"""The learning loop's first night, made once for the session: test_nightly goes on from it, and
test_gate judges the adapter it trained (training and judging it take most of a minute)."""

from __future__ import annotations

import pytest

from tenshu.config import DEFAULT_MODEL_DIR
from tenshu.learn.datasets import build
from tenshu.learn.nightly import run
from tenshu.learn.registry import Registry
from tenshu.store import Principal
from tenshu.store.feedback import export_rows
from tests.learn.test_train import feedback_store, quick


@pytest.fixture(scope="session")
def first_night(tmp_path_factory):
    """A home where ana rated 60 answers that end with the sign-off up and 60 that do not down
    (one of each per prompt), after the nightly run's first run on it: version v1 of `mine`
    trained (DPO, 16 steps), judged against the base model and, having passed, promoted.
    {"home", "data", "config", "run", "log"}. A test that changes the home copies it first."""
    home = tmp_path_factory.mktemp("first-night")
    config = quick("dpo", max_steps=16)
    lines: list[str] = []
    with feedback_store(home / "state.db", n=60) as store:
        data = build(export_rows(store.engine, Principal.of(store.users.get("ana"))))
    first = run(Registry(home / "adapters"), "mine", DEFAULT_MODEL_DIR, data, config,
                log=lines.append)
    return {"home": home, "data": data, "config": config, "run": first, "log": lines}
