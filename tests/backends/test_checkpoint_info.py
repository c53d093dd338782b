"""A model's ModelInfo before its engine is loaded (read from its files: what /v1/models,
/api/tags and the router see while it loads) is what the loaded engine reports, for a
checkpoint directory and for a GGUF file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenshu.backends.checkpoint_info import checkpoint_info, loaded_info
from tenshu.config import DEFAULT_MODEL_DIR
from tenshu.engine import EngineConfig, LLMEngine
from tests.engine.gguf_files import make_gguf

FIELDS = ("context_window", "family", "parameters", "dtype", "size_bytes", "path",
          "chat_template")


def infos(path: Path) -> tuple[dict, dict]:
    config = EngineConfig(model=str(path), num_kv_blocks=8)
    before = checkpoint_info("m", config)
    after = loaded_info(before, config, LLMEngine(config))
    return ({f: getattr(before, f) for f in FIELDS}, {f: getattr(after, f) for f in FIELDS})


def test_the_built_in_models_info_is_known_before_it_loads():
    before, after = infos(DEFAULT_MODEL_DIR)
    assert before == after and before["chat_template"] and before["parameters"] > 0


@pytest.fixture(scope="module")
def gguf(checkpoint, tmp_path_factory) -> Path:
    return make_gguf(checkpoint("qwen3"), tmp_path_factory.mktemp("info-gguf"))[0]


def test_a_gguf_files_info_is_read_from_its_metadata(gguf):
    before, after = infos(gguf)
    assert before == after
    assert before["dtype"] == "Q8_0" and before["family"] == "qwen3"
    assert before["size_bytes"] == gguf.stat().st_size and before["chat_template"]
