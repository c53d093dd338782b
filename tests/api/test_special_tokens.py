"""No special token reaches a reply's text. With tools offered the detokenizer keeps the tokens
the tool-call parser must see (a marker can be a special token: [TOOL_CALLS], <|python_tag|>),
but only those: a random model that writes <|im_start|> or <|pad|> still gives clean text, through
each official client, streamed or not.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import anthropic
import ollama
import openai
import pytest

from tenshu.config import ModelSpec
from tests.api.live import live_server
from tests.chat.conftest import MARKERS, TEMPLATES
from tests.checkpoints import SPECIAL_TOKENS

WEATHER = {"name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
OPENAI_TOOLS = [{"type": "function", "function": WEATHER}]
ANTHROPIC_TOOLS = [{"name": WEATHER["name"], "description": WEATHER["description"],
                    "input_schema": WEATHER["parameters"]}]
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
SEEDS = range(8)
# every model here has the test tokenizer's special tokens; "mistral" also has the markers as
# added tokens ([TOOL_CALLS] and <|python_tag|> special, <tool_call> not), as real tokenizers do
MODELS = ("qwen", "generic", "mistral")


@pytest.fixture(scope="module")
def special_server(tmp_path_factory, checkpoint):
    # room in the vocabulary for the markers added below
    base = checkpoint("qwen3", max_position_embeddings=4096, vocab_size=520)
    models = []
    for family in MODELS:
        path = tmp_path_factory.mktemp(f"special-{family}")
        shutil.copytree(base, path, dirs_exist_ok=True)
        (path / "chat_template.jinja").write_text(TEMPLATES[family])
        if family == "mistral":
            config = json.loads((path / "tokenizer.json").read_text())
            next_id = max(t["id"] for t in config["added_tokens"]) + 1
            for i, (marker, special) in enumerate(MARKERS.items()):
                config["added_tokens"].append({
                    "id": next_id + i, "content": marker, "single_word": False,
                    "lstrip": False, "rstrip": False, "normalized": False, "special": special})
            (path / "tokenizer.json").write_text(json.dumps(config))
        models.append(ModelSpec(family, str(path)))
    state = tmp_path_factory.mktemp("special-state") / "state.db"
    with live_server(state, models=tuple(models), embedder=False, max_num_seqs=32) as live:
        yield live


def leaks(text: str | None) -> list[str]:
    return [token for token in SPECIAL_TOKENS if token in (text or "")]


@pytest.mark.parametrize("model", MODELS)
def test_openai_auto_tool_replies_carry_no_special_tokens(special_server, model):
    client = openai.AsyncOpenAI(base_url=f"{special_server.base_url}/v1",
                                api_key=special_server.key)

    async def run():
        return await asyncio.gather(*(
            client.chat.completions.create(
                model=model, messages=ASK, tools=OPENAI_TOOLS, tool_choice="auto",
                temperature=1.0, seed=seed, max_tokens=60)
            for seed in SEEDS))

    texts = [answer.choices[0].message.content for answer in asyncio.run(run())]
    assert any(texts)  # the replies do have text (a random model rarely calls)
    assert [leaks(t) for t in texts] == [[] for _ in texts], texts


@pytest.mark.parametrize("model", MODELS)
def test_streamed_auto_tool_replies_carry_no_special_tokens(special_server, model):
    client = openai.OpenAI(base_url=f"{special_server.base_url}/v1", api_key=special_server.key)
    for seed in SEEDS:
        stream = client.chat.completions.create(
            model=model, messages=ASK, tools=OPENAI_TOOLS, temperature=1.0, seed=seed,
            max_tokens=60, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert leaks(text) == [], (seed, text)


def test_anthropic_and_ollama_auto_tool_replies_carry_no_special_tokens(special_server):
    claude = anthropic.Anthropic(base_url=special_server.base_url, api_key=special_server.key)
    local = ollama.Client(host=special_server.base_url, headers=special_server.headers())
    for seed in SEEDS:
        message = claude.messages.create(
            model="generic", max_tokens=60, messages=ASK, tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "auto"},
            extra_body={"temperature": 1.0, "seed": seed})
        texts = [b.text for b in message.content if b.type == "text"]
        with claude.messages.stream(model="qwen", max_tokens=60, messages=ASK,
                                    tools=ANTHROPIC_TOOLS,
                                    extra_body={"temperature": 1.0, "seed": seed}) as stream:
            texts.append("".join(stream.text_stream))
        reply = local.chat("mistral", messages=ASK, tools=OPENAI_TOOLS,
                           options={"temperature": 1.0, "seed": seed, "num_predict": 60})
        texts.append(reply.message.content)
        texts.append("".join(chunk.message.content or "" for chunk in local.chat(
            "generic", messages=ASK, tools=OPENAI_TOOLS, stream=True,
            options={"temperature": 1.0, "seed": seed, "num_predict": 60})))
        assert [leaks(t) for t in texts] == [[] for _ in texts], (seed, texts)


def test_markers_that_are_special_tokens_still_reach_the_parser(special_server):
    """[TOOL_CALLS] is a special token of the "mistral" model: a forced call, written with it,
    is still read as a call."""
    client = openai.OpenAI(base_url=f"{special_server.base_url}/v1", api_key=special_server.key)
    answer = client.chat.completions.create(
        model="mistral", messages=ASK, tools=OPENAI_TOOLS, max_tokens=300, seed=1,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert answer.choices[0].finish_reason == "tool_calls", answer.choices[0].message
    (call,) = answer.choices[0].message.tool_calls
    assert "city" in json.loads(call.function.arguments)
