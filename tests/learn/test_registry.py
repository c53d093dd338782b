"""The adapter registry over real adapter folders: versions in order, the alias moved by promote
and rollback, removal that spares the version in service, and names that cannot escape the
adapters folder."""

from __future__ import annotations

import json

import pytest

from tenshu.learn.registry import Registry


@pytest.fixture
def registry(tmp_path):
    """Versions v1..v3 of `mine` and v1 of `other`; v3 of `mine` has no adapter files."""
    made = Registry(tmp_path / "adapters")
    for name, count in (("mine", 3), ("other", 1)):
        for i in range(count):
            folder = made.next_version(name)
            (folder / "adapter").mkdir(parents=True)
            if not (name == "mine" and i == 2):
                (folder / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
                (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"\0")
            (folder / "manifest.json").write_text(json.dumps(
                {"method": "dpo", "metrics": {"loss": 0.5 - i / 10}, "verdict": None}))
    return made


def test_versions_promote_and_rollback(registry):
    assert registry.names() == ["mine", "other"]
    assert [v.version for v in registry.versions("mine")] == ["v1", "v2", "v3"]
    assert registry.next_version("mine").name == "v4"
    assert registry.serving("mine") is None
    registry.promote("mine", "v1")
    registry.promote("mine", "v2")
    assert registry.get("mine").version == "v2"
    assert [v.serving for v in registry.versions("mine")] == [False, True, False]
    assert registry.rollback("mine") == "v1"
    assert registry.rollback("mine") is None
    with pytest.raises(ValueError, match="no version in service to roll back"):
        registry.rollback("mine")


def test_a_version_without_an_adapter_cannot_be_promoted(registry):
    with pytest.raises(ValueError, match="has no PEFT adapter"):
        registry.promote("mine", "v3")
    with pytest.raises(ValueError, match="no version 'v7'"):
        registry.promote("mine", "v7")
    assert registry.serving("mine") is None


def test_remove_spares_the_version_in_service(registry):
    registry.promote("mine", "v2")
    with pytest.raises(ValueError, match="is in service"):
        registry.remove("mine", "v2")
    registry.remove("mine", "v1")
    registry.remove("mine", "v3")
    assert [v.version for v in registry.versions("mine")] == ["v2"]
    assert registry.next_version("mine").name == "v4"  # a removed number is never used again
    assert registry.get("mine").version == "v2"  # and the alias kept its place


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65])
def test_names_cannot_leave_the_adapters_folder(registry, name):
    with pytest.raises(ValueError, match="an adapter's name"):
        registry.next_version(name)
