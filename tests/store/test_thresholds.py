"""The sentinel's calibrated thresholds: one per route, replaced by each calibration."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tenshu.store import open_store


@pytest.fixture
def store(database):
    with open_store(database) as store:
        yield store


def test_set_get_all(store):
    assert store.thresholds.get("code") is None
    assert store.thresholds.all() == {}
    store.thresholds.set("code", 0.42, "share 0.30", 250)
    store.thresholds.set("chat", 0.6, "labels (n=120, balanced accuracy 0.87)", 120)
    assert store.thresholds.get("code") == pytest.approx(0.42)
    assert store.thresholds.all() == {"code": pytest.approx(0.42), "chat": pytest.approx(0.6)}


def test_a_new_calibration_replaces_the_old_one(store):
    store.thresholds.set("code", 0.42, "share 0.30", 250)
    store.thresholds.set("code", 0.35, "share 0.40", 300)
    assert store.thresholds.all() == {"code": pytest.approx(0.35)}
    with store.engine.connect() as conn:  # how it was found is kept with it
        rows = conn.execute(text("SELECT method, samples FROM sentinel_thresholds")).all()
    assert [tuple(r) for r in rows] == [("share 0.40", 300)]


def test_a_threshold_needs_a_route(store):
    with pytest.raises(ValueError, match="route"):
        store.thresholds.set(" ", 0.5, "share 0.50", 100)
