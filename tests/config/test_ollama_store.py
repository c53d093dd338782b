"""Models from Ollama's store: names resolve to the GGUF blob the manifest names, as Ollama
lays them out; a missing name says where it looked and what is there; the blob is loaded where
it is, read-only, by `LLM` and by `--model`."""

from __future__ import annotations

import os
import stat

import pytest

from tenshu import LLM, SamplingParams
from tenshu.config import model_source, parse_model_arg
from tenshu.config.ollama_store import (
    OllamaModelNotFound,
    OllamaName,
    list_models,
    parse_name,
    resolve,
)
from tests.config.ollama_files import add_model, tiny_gguf  # noqa: F401 (a fixture)


@pytest.fixture
def store(tmp_path, tiny_gguf, monkeypatch):  # noqa: F811
    root = tmp_path / "ollama"
    for name in ("qwen2.5:7b", "llama3.2", "ana/helper:v2", "example.com:5000/team/coder:1b"):
        add_model(root, name, tiny_gguf)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


@pytest.mark.parametrize(("text", "name"), [
    ("llama3.2", OllamaName("registry.ollama.ai", "library", "llama3.2", "latest")),
    ("qwen2.5:7b", OllamaName("registry.ollama.ai", "library", "qwen2.5", "7b")),
    ("ollama:qwen2.5:7b", OllamaName("registry.ollama.ai", "library", "qwen2.5", "7b")),
    ("ana/helper:v2", OllamaName("registry.ollama.ai", "ana", "helper", "v2")),
    ("example.com:5000/team/coder", OllamaName("example.com:5000", "team", "coder", "latest")),
])
def test_names_parse_as_ollama_reads_them(text, name):
    assert parse_name(text) == name


@pytest.mark.parametrize("text", ["a/b/c/d", "qwen:", "bad name", "x:tag/with/slash", ""])
def test_what_is_not_a_name_is_not_parsed(text):
    assert parse_name(text) is None


def test_names_resolve_to_the_blob_their_manifest_names(store, tiny_gguf):  # noqa: F811
    blob = resolve(store, "qwen2.5:7b").blob
    assert blob.parent == store / "blobs" and blob.name.startswith("sha256-")
    assert blob.read_bytes() == tiny_gguf.read_bytes()
    assert resolve(store, "llama3.2:latest").blob == blob  # same content, one blob
    assert resolve(store, "ana/helper:v2").size == tiny_gguf.stat().st_size
    assert resolve(store, "example.com:5000/team/coder:1b").blob == blob
    assert resolve(store, "Qwen2.5:7B").blob == blob  # Ollama's names ignore case
    assert [str(m.name) for m in list_models(store)] == [
        "example.com:5000/team/coder:1b", "ana/helper:v2", "llama3.2:latest", "qwen2.5:7b"]


def test_model_arguments_find_the_store_through_OLLAMA_MODELS(store):
    blob = str(resolve(store, "qwen2.5:7b").blob)
    assert model_source("ollama:qwen2.5:7b") == ("qwen2.5:7b", blob)
    assert model_source("qwen2.5:7b") == ("qwen2.5:7b", blob)
    assert parse_model_arg("llama3.2").name == "llama3.2"
    assert parse_model_arg("mine=ana/helper:v2").path == blob


def test_a_name_not_in_the_store_says_where_it_looked_and_how_to_get_it(store):
    with pytest.raises(OllamaModelNotFound) as caught:
        resolve(store, "mistral:7b")
    message = str(caught.value)
    assert str(store) in message and "mistral:7b" in message
    assert "qwen2.5:7b" in message and "llama3.2:latest" in message  # what is there
    assert "ollama pull mistral:7b" in message and "tenshu pull" in message
    with pytest.raises(ValueError, match="no such file or directory"):
        parse_model_arg("mistral:7b")  # not a path either


def test_a_missing_blob_is_a_clear_error(store):
    resolve(store, "llama3.2").blob.unlink()
    with pytest.raises(OllamaModelNotFound, match="weights .* are missing"):
        resolve(store, "llama3.2")


def test_the_blob_is_loaded_in_place_read_only(store):
    blob = resolve(store, "qwen2.5:7b").blob
    before = blob.read_bytes()
    for path in blob.parent.iterdir():
        path.chmod(0o444)
    blob.parent.chmod(0o555)
    try:
        llm = LLM(model=parse_model_arg("ollama:qwen2.5:7b").path, dtype="float32")
        out = llm.generate(["hello"], SamplingParams(temperature=0, max_tokens=4))
        assert len(out[0].outputs[0].token_ids) == 4
        assert llm.get_tokenizer().chat_template  # the GGUF's own template
    finally:
        blob.parent.chmod(0o755)
    assert blob.read_bytes() == before
    assert not stat.S_IMODE(os.stat(blob).st_mode) & 0o222  # nothing made it writable
    assert sorted(p.name for p in blob.parent.iterdir()) == sorted(
        p.name for p in blob.parent.iterdir() if p.name.startswith("sha256-"))


def test_gguf_files_and_pulled_folders_are_model_sources(tmp_path, tiny_gguf, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TENSHU_HOME", str(tmp_path))
    file = tmp_path / "qwen.gguf"
    file.write_bytes(tiny_gguf.read_bytes())
    assert model_source(str(file)) == ("qwen", str(file))  # named after the file's stem
    folder = tmp_path / "models" / "Qwen3-GGUF"
    folder.mkdir(parents=True)
    (folder / "qwen3-q8_0.gguf").write_bytes(b"GGUF")
    assert model_source("Qwen3-GGUF") == ("Qwen3-GGUF", str(folder / "qwen3-q8_0.gguf"))
    assert parse_model_arg("q=Qwen3-GGUF").name == "q"
    (folder / "qwen3-f16.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="2 GGUF files .* name the one"):
        model_source("Qwen3-GGUF")
