"""LoRA adapters served by a real server: loaded and unloaded at run time through vLLM's
endpoints (admins only), listed as models with their parent, chosen by name in all three
protocols, answering as the engine does offline with the same adapter; hot-swapped under
streaming load with no error and every answer from exactly one version; unloading waits for the
requests on it; the registry's promotions and rollbacks reach the server (rollback gives the
earlier greedy answers back exactly); each recorded turn names the version that answered; and
adapters that cannot be used are refused with nothing loaded."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time

import httpx
import openai
import pytest

from tenshu import LLM, LoRARequest, SamplingParams
from tenshu.config import ModelSpec
from tenshu.learn.registry import Registry
from tests.api.live import live_server
from tests.engine.test_lora import make_adapter

PROMPTS = [f"Tell me about thing number {i}." for i in range(6)]
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def setup(checkpoint, tmp_path_factory):
    base = checkpoint("qwen3")
    root = tmp_path_factory.mktemp("adapters")
    a = make_adapter(base, root / "a", seed=1)
    b = make_adapter(base, root / "b", seed=2)
    other = make_adapter(checkpoint("llama", hidden_size=96), root / "other", seed=3)
    registry = Registry(root / "registry")
    for source in (a, b):  # "mine" v1 is a, v2 is b; neither in service yet
        shutil.copytree(source, registry.next_version("mine") / "adapter")
    with live_server(root / "state.db", key_name=None, adapters_root=registry.root,
                     models=(ModelSpec("base", str(base)),)) as live:
        store = live.server.store
        store.users.add("ben")
        live.keys = {"admin": store.keys.create("admin-key")[1],
                     "ben": store.keys.create("ben-key", user="ben")[1]}
        yield {"live": live, "base": base, "a": a, "b": b, "other": other,
               "registry": registry}


def http(setup, who: str = "admin") -> httpx.Client:
    return httpx.Client(base_url=setup["live"].base_url, timeout=120,
                        headers={"Authorization": f"Bearer {setup['live'].keys[who]}"})


def client(setup) -> openai.OpenAI:
    return openai.OpenAI(base_url=setup["live"].base_url + "/v1",
                         api_key=setup["live"].keys["admin"], max_retries=0)


@pytest.fixture(scope="module")
def offline(setup):
    """What the engine answers offline, greedy, for each prompt: {None | "a" | "b": texts}."""
    llm = LLM(str(setup["base"]), enable_lora=True, max_loras=2)
    tokenizer = llm.get_tokenizer()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True) for p in PROMPTS]
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    out = {}
    for i, name in enumerate((None, "a", "b")):
        lora = LoRARequest(name, i, str(setup[name])) if name else None
        out[name] = [o.outputs[0].text for o in llm.generate(prompts, params, lora_request=lora)]
    return out


def load(setup, name: str, path=None, who: str = "admin", **extra) -> httpx.Response:
    body = {"lora_name": name, **({"lora_path": str(path)} if path else {}), **extra}
    with http(setup, who) as h:
        return h.post("/v1/load_lora_adapter", json=body)


def unload(setup, name: str, who: str = "admin") -> httpx.Response:
    with http(setup, who) as h:
        return h.post("/v1/unload_lora_adapter", json={"lora_name": name})


def ask(setup, model: str, prompt: str) -> tuple[str, str | None]:
    raw = client(setup).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=MAX_TOKENS)
    return raw.parse().choices[0].message.content, raw.headers.get("x-tenshu-adapter")


def test_an_adapter_loaded_at_run_time_is_a_model_in_every_protocol(setup, offline):
    r = load(setup, "alpha", setup["a"])
    assert r.status_code == 200, r.text
    assert r.text == "Success: LoRA adapter 'alpha' added successfully."
    try:
        listed = {m.id: m for m in client(setup).models.list().data}
        assert listed["alpha"].model_extra["parent"] == "base"
        assert listed["base"].model_extra["parent"] is None
        answers = [ask(setup, "alpha", p) for p in PROMPTS]
        assert [text for text, _ in answers] == offline["a"]  # as the engine answers offline
        assert offline["a"] != offline[None]
        assert {label for _, label in answers} == {f"alpha@{_digest(setup['a'])}"}
        assert [ask(setup, "base", p)[0] for p in PROMPTS] == offline[None]

        with http(setup) as h:
            anthropic = h.post("/v1/messages", json={
                "model": "alpha", "max_tokens": MAX_TOKENS, "temperature": 0,
                "messages": [{"role": "user", "content": PROMPTS[0]}]})
            ollama = h.post("/api/chat", json={
                "model": "alpha", "stream": False, "options": {
                    "temperature": 0, "num_predict": MAX_TOKENS},
                "messages": [{"role": "user", "content": PROMPTS[0]}]})
            tags = h.get("/api/tags").json()["models"]
        assert anthropic.status_code == 200, anthropic.text
        assert anthropic.json()["content"][0]["text"] == offline["a"][0]
        assert anthropic.json()["model"] == "alpha"
        assert ollama.status_code == 200, ollama.text
        assert ollama.json()["message"]["content"] == offline["a"][0]
        parents = {t["name"].removesuffix(":latest"): t["details"]["parent_model"] for t in tags}
        assert parents["alpha"] == "base"
    finally:
        assert unload(setup, "alpha").status_code == 200
    assert "alpha" not in {m.id for m in client(setup).models.list().data}
    with pytest.raises(openai.NotFoundError):
        ask(setup, "alpha", PROMPTS[0])


def test_an_adapter_outlives_its_base_models_unload_and_reload(setup, offline):
    """keep_alive 0 releases the base engine, adapters included; the next request builds a
    new engine, which gets the adapters in service again and answers as before."""
    assert load(setup, "delta", setup["a"]).status_code == 200
    try:
        assert ask(setup, "delta", PROMPTS[1])[0] == offline["a"][1]
        base = setup["live"].gateway.backends["base"]
        loads = base.loader.loads
        with http(setup) as h:
            unloaded = h.post("/api/generate", json={"model": "base", "keep_alive": 0})
            assert unloaded.json()["done_reason"] == "unload"
            assert h.get("/api/ps").json()["models"] == []
        assert base.llm is None
        assert ask(setup, "delta", PROMPTS[1])[0] == offline["a"][1]  # on a new engine
        assert base.loader.loads == loads + 1
        assert ask(setup, "base", PROMPTS[1])[0] == offline[None][1]
    finally:
        assert unload(setup, "delta").status_code == 200


def test_only_admins_load_and_unload_and_bad_adapters_are_refused(setup):
    refused = load(setup, "beta", setup["a"], who="ben")
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error" or \
        "admin" in refused.json()["error"]["message"]
    cases = [
        (load(setup, "beta", setup["a"].parent / "nowhere"), 400, "is not a folder"),
        (load(setup, "beta", setup["other"]), 400, "another base model"),
        (load(setup, "base", setup["a"]), 409, "name of a model"),
        (load(setup, "bad/name", setup["a"]), 400, "lora_name"),
        (load(setup, "beta", setup["a"], surprise=1), 400, "surprise"),
        (unload(setup, "never-loaded"), 404, "cannot be found"),
        (load(setup, "nothing-promoted"), 404, "no version in service"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"], response.text
    assert load(setup, "beta", setup["a"]).status_code == 200
    try:
        again = load(setup, "beta", setup["b"])
        assert again.status_code == 400 and "already been loaded" in again.text
        assert unload(setup, "beta", who="ben").status_code == 403
    finally:
        assert unload(setup, "beta").status_code == 200
    names = {m.id for m in client(setup).models.list().data}
    assert not names & {"beta", "bad/name", "nothing-promoted"}


def test_a_hot_swap_under_streaming_load_fails_nothing_and_mixes_no_versions(setup, offline):
    assert load(setup, "gamma", setup["a"]).status_code == 200
    labels = {f"gamma@{_digest(setup['a'])}": offline["a"],
              f"gamma@{_digest(setup['b'])}": offline["b"]}
    results: list[tuple[int, int, str | None, str]] = []

    async def stream(i: int, h: httpx.AsyncClient) -> None:
        prompt = i % len(PROMPTS)
        async with h.stream("POST", "/v1/chat/completions", json={
                "model": "gamma", "stream": True, "temperature": 0, "max_tokens": MAX_TOKENS,
                "messages": [{"role": "user", "content": PROMPTS[prompt]}]}) as r:
            text = ""
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    assert "error" not in chunk, chunk
                    if chunk["choices"]:
                        text += chunk["choices"][0]["delta"].get("content") or ""
            results.append((r.status_code, prompt, r.headers.get("x-tenshu-adapter"), text))

    async def load_while_streaming() -> None:
        headers = {"Authorization": f"Bearer {setup['live'].keys['admin']}"}
        async with httpx.AsyncClient(base_url=setup["live"].base_url, timeout=120,
                                     headers=headers) as h:
            first = [asyncio.create_task(stream(i, h)) for i in range(12)]
            await on_adapter(setup, "gamma")  # the first wave is running on a
            swapped = await h.post("/v1/load_lora_adapter", json={
                "lora_name": "gamma", "lora_path": str(setup["b"]), "load_inplace": True})
            assert swapped.status_code == 200, swapped.text
            second = [asyncio.create_task(stream(i, h)) for i in range(12, 24)]
            await asyncio.gather(*first, *second)

    asyncio.run(load_while_streaming())
    assert len(results) == 24
    for status, prompt, label, text in results:
        assert status == 200
        assert label in labels, label
        assert text == labels[label][prompt]  # whole, from the version its header names
    assert {label for _, _, label, _ in results} == set(labels)  # both versions answered
    assert ask(setup, "gamma", PROMPTS[0]) == (offline["b"][0], f"gamma@{_digest(setup['b'])}")
    assert unload(setup, "gamma").status_code == 200


def test_unloading_waits_for_the_requests_on_the_adapter(setup):
    """The unload answers only once the request on the adapter has finished, whole: at that
    moment the server runs nothing on it and the engine holds nothing of it. (Which of the two
    responses the client reads first is the client's scheduling, not the server's order.)"""
    assert load(setup, "delta", setup["a"]).status_code == 200
    served = setup["live"].server.app.state.adapters.served["delta"]
    engine = served.backend.base.engine.engine
    seen: dict = {}

    async def long_answer(h: httpx.AsyncClient) -> list[str]:
        async with h.stream("POST", "/v1/chat/completions", json={
                "model": "delta", "stream": True, "temperature": 0, "max_tokens": 64,
                "ignore_eos": True, "messages": [{"role": "user", "content": "go on"}]}) as r:
            assert r.status_code == 200
            return [line async for line in r.aiter_lines() if line]

    async def main() -> list[str]:
        headers = {"Authorization": f"Bearer {setup['live'].keys['admin']}"}
        async with httpx.AsyncClient(base_url=setup["live"].base_url, timeout=120,
                                     headers=headers) as h:
            answer = asyncio.create_task(long_answer(h))
            await on_adapter(setup, "delta")
            gone = await h.post("/v1/unload_lora_adapter", json={"lora_name": "delta"})
            seen.update(status=gone.status_code, running=served.backend.running(
                served.backend.lora), held=served.backend.lora.lora_int_id in
                engine.list_loras())
            return await answer

    lines = asyncio.run(main())
    assert seen == {"status": 200, "running": 0, "held": False}
    assert lines[-1] == "data: [DONE]" and '"finish_reason":"length"' in lines[-2]


def test_an_adapter_a_client_walked_away_from_unloads_cleanly(setup):
    assert load(setup, "epsilon", setup["a"]).status_code == 200

    async def walk_away() -> None:
        headers = {"Authorization": f"Bearer {setup['live'].keys['admin']}"}
        async with httpx.AsyncClient(base_url=setup["live"].base_url, timeout=120,
                                     headers=headers) as h:
            async with h.stream("POST", "/v1/chat/completions", json={
                    "model": "epsilon", "stream": True, "max_tokens": 200, "ignore_eos": True,
                    "messages": [{"role": "user", "content": "go on"}]}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        break  # the first token: leave
            gone = await h.post("/v1/unload_lora_adapter", json={"lora_name": "epsilon"})
            assert gone.status_code == 200, gone.text

    asyncio.run(walk_away())
    engine = setup["live"].server.app.state.adapters.bases()["base"].engine.engine
    assert load(setup, "epsilon", setup["b"]).status_code == 200  # the name is free again
    assert unload(setup, "epsilon").status_code == 200
    assert engine.list_loras() == set()  # nothing of either is held


def test_promotion_and_rollback_reach_the_server_and_the_turns_name_the_version(
        setup, offline):
    registry = setup["registry"]
    with http(setup) as h:
        promoted = h.post("/tenshu/v1/adapters/mine/promote", json={"version": "v1"})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["serving"] is True
        assert [ask(setup, "mine", p) for p in PROMPTS] == [(t, "mine@v1") for t in offline["a"]]

        registry.promote("mine", "v2")  # as `tenshu adapters promote mine v2` does
        deadline = time.monotonic() + 120
        while ask(setup, "mine", PROMPTS[0])[1] != "mine@v2":  # the watch notices
            assert time.monotonic() < deadline, "the promotion never reached the server"
            time.sleep(0.2)
        assert [ask(setup, "mine", p)[0] for p in PROMPTS] == offline["b"]

        recorded = h.post("/v1/chat/completions", headers={"x-tenshu-conversation": "new"},
                          json={"model": "mine", "max_tokens": MAX_TOKENS, "temperature": 0,
                                "messages": [{"role": "user", "content": PROMPTS[1]}]})
        conversation = recorded.headers["x-tenshu-conversation"]
        turns = h.get(f"/tenshu/v1/conversations/{conversation}").json()["messages"]
        assert [t["adapter"] for t in turns] == ["mine@v2"]

        back = h.post("/tenshu/v1/adapters/mine/rollback")
        assert back.status_code == 200 and back.json()["serving"] == "v1"
        assert [ask(setup, "mine", p) for p in PROMPTS] == [(t, "mine@v1") for t in offline["a"]]
        listed = h.get("/tenshu/v1/adapters").json()
        assert [(s["id"], s["version"], s["parent"]) for s in listed["served"]] == [
            ("mine", "v1", "base")]
        assert h.post("/tenshu/v1/adapters/nobody/promote", json={}).status_code == 404
        with http(setup, "ben") as member:
            assert member.post("/tenshu/v1/adapters/mine/rollback").status_code == 403
            assert member.get("/tenshu/v1/adapters").status_code == 403


async def on_adapter(setup, name: str) -> None:
    """Return once a request is running on the adapter's version in service."""
    backend = setup["live"].server.app.state.adapters.served[name].backend
    deadline = time.monotonic() + 120
    while not backend.running(backend.lora):
        assert time.monotonic() < deadline, "no request reached the adapter"
        await asyncio.sleep(0.01)


def _digest(folder) -> str:
    return hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()[:12]
