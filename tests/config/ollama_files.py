"""A fake Ollama model store for tests, laid out as `ollama pull` leaves it: a manifest per
name and tag under manifests/<host>/<namespace>/<model>/, content-addressed blobs/sha256-<hex>
(the GGUF weights, a template and a params layer, as Ollama's library models have)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tenshu.config.ollama_store import MODEL_MEDIA_TYPE, parse_name


def _blob(store: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = store / "blobs" / f"sha256-{digest}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def add_model(store: Path, name: str, gguf: Path) -> Path:
    """Put the GGUF file `gguf` in the store as `name` (e.g. qwen2.5:7b); returns its blob."""
    parsed = parse_name(name)
    weights = _blob(store, gguf.read_bytes())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   **_blob(store, b'{"model_format":"gguf","model_family":"qwen3"}')},
        "layers": [
            {"mediaType": MODEL_MEDIA_TYPE, **weights},
            {"mediaType": "application/vnd.ollama.image.template",
             **_blob(store, b"{{ .Prompt }}")},
            {"mediaType": "application/vnd.ollama.image.params",
             **_blob(store, b'{"stop":["<|im_end|>"]}')},
        ],
    }
    path = parsed.manifest(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return store / "blobs" / f"sha256-{weights['digest'].split(':')[1]}"


@pytest.fixture(scope="session")
def tiny_gguf(checkpoint, tmp_path_factory) -> Path:
    """A tiny qwen3 model as a Q8_0 GGUF file with its tokenizer and chat template (import the
    fixture into a test module to use it)."""
    from tests.engine.gguf_files import make_gguf

    return make_gguf(checkpoint("qwen3"), tmp_path_factory.mktemp("ollama-gguf"))[0]
