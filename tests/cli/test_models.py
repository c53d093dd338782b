"""`tenshu models` lists what is on disk, in Ollama's store and on the server, with each one's
format and size; and `tenshu serve --model ollama:NAME` serves a model of Ollama's store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from gguf import GGUFWriter, LlamaFileType

from tests.api.live import free_port
from tests.config.ollama_files import add_model, tiny_gguf  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def homes(tmp_path_factory, checkpoint, tiny_gguf):  # noqa: F811
    """A tenshu home with a checkpoint, a .gguf file and a pulled folder of GGUF, and an Ollama
    store with two names of one blob."""
    root = tmp_path_factory.mktemp("models")
    models = root / "home" / "models"
    shutil.copytree(checkpoint("qwen3"), models / "tiny-ckpt")
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    (models / "labelled").mkdir()
    writer = GGUFWriter(models / "labelled" / "labelled-Q4_K_M.gguf", "llama")
    writer.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)  # what llama.cpp's quantizer records
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    store = root / "ollama"
    add_model(store, "qwen2.5:7b", tiny_gguf)
    add_model(store, "ana/helper:v2", tiny_gguf)
    return root / "home", store


def environment(homes) -> dict:
    home, store = homes
    return {**os.environ, "TENSHU_HOME": str(home), "OLLAMA_MODELS": str(store)}


def tenshu(homes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tenshu", *args], env=environment(homes),
                          capture_output=True, text=True, timeout=120)


def table(stdout: str) -> dict[tuple[str, str], list[str]]:
    """{(NAME, SOURCE): the rest of its row, split at spaces}."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "FORMAT", "SIZE", "PATH"]
    return {tuple(line.split()[:2]): line.split()[2:] for line in lines[1:]}


def test_models_lists_disk_and_ollama_with_format_and_size(homes, tiny_gguf):  # noqa: F811
    url = f"http://127.0.0.1:{free_port()}"
    result = tenshu(homes, "models", "--url", url)
    assert result.returncode == 0, result.stderr
    assert f"no server at {url}" in result.stderr
    rows = table(result.stdout)
    home, store = homes
    size = [f"{tiny_gguf.stat().st_size / 1000:.1f}", "KB"]  # a tiny model: ~150 KB
    checkpoint = home / "models" / "tiny-ckpt"
    on_disk = sum(f.stat().st_size for f in checkpoint.iterdir())
    assert rows["tiny-ckpt", "disk"] == ["safetensors", "F32", f"{on_disk / 1000:.1f}", "KB",
                                         str(checkpoint)]
    assert rows["tiny", "disk"] == ["GGUF", "Q8_0", *size, str(home / "models" / "tiny.gguf")]
    assert rows["labelled", "disk"][:2] == ["GGUF", "Q4_K_M"]  # from general.file_type
    for name in ("qwen2.5:7b", "ana/helper:v2"):
        assert rows[name, "ollama"][:4] == ["GGUF", "Q8_0", *size]
        assert rows[name, "ollama"][-1].startswith(str(store / "blobs" / "sha256-"))


@pytest.fixture(scope="module")
def served(homes):
    """`tenshu serve --model ollama:qwen2.5:7b`, as a person runs it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tenshu", "serve", "--port", str(port), "--model",
         "ollama:qwen2.5:7b", "--kv-cache-gib", "0.25"],
        env=environment(homes), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"tenshu serve exited: {proc.stderr.read()}")
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "tenshu serve did not become ready"
                time.sleep(0.2)
        yield url
    finally:
        proc.kill()
        proc.wait()


def test_serve_serves_a_model_of_ollamas_store(served):
    from openai import OpenAI

    client = OpenAI(base_url=served + "/v1", api_key="none")
    assert "qwen2.5:7b" in [m.id for m in client.models.list()]
    completion = client.completions.create(model="qwen2.5:7b", prompt="hello", max_tokens=5,
                                           temperature=0, extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 5
    chat = client.chat.completions.create(
        model="qwen2.5:7b", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert chat.usage.completion_tokens >= 1  # the GGUF's own chat template


def test_ollamas_clients_see_the_gguf_as_ollama_shows_it(served, tiny_gguf):  # noqa: F811
    import ollama

    (model,) = [m for m in ollama.Client(host=served).list().models if m.model == "qwen2.5:7b"]
    assert model.details.quantization_level == "Q8_0"  # the file's weights, as Ollama says
    assert model.size == tiny_gguf.stat().st_size


def test_models_shows_what_the_server_serves(homes, served):
    result = tenshu(homes, "models", "--url", served)
    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert rows["qwen2.5:7b", "served"] == ["-", "-", served]
    assert ("qwen2.5:7b", "ollama") in rows and ("tiny", "disk") in rows
