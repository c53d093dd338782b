"""Tool calling through the official clients, on random models that cannot call a tool of their
own accord: a forced call (tool_choice required or named; the x-tenshu-tool-choice header for
Ollama, which has no tool_choice) is always a call whose arguments validate against the tool's
schema, streamed or not, in each model family's own syntax; and the round trip (call, result,
next turn) works in each protocol.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import anthropic
import jsonschema
import ollama
import openai
import pytest

from tenshu.config import ModelSpec
from tenshu.core.messages import Message, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
from tenshu.core.request import ChatRequest, ToolChoice
from tenshu.gateway import force_tool_choice
from tests.api.live import live_server
from tests.chat.conftest import TEMPLATES

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
SEARCH = {
    "name": "search_files",
    "description": "Find files by glob pattern.",
    "parameters": {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "maxLength": 12},
            "paths": {"type": "array", "items": {"type": "string", "maxLength": 8},
                      "minItems": 1, "maxItems": 3},
            "options": {"type": "object", "properties": {
                "hidden": {"type": "boolean"}, "depth": {"type": "integer", "minimum": 0,
                                                         "maximum": 5}},
                "required": ["hidden"], "additionalProperties": False},
        },
        "required": ["pattern", "paths", "options"],
        "additionalProperties": False,
    },
}
SCHEMAS = {t["name"]: t["parameters"] for t in (WEATHER, SEARCH)}
OPENAI_TOOLS = [{"type": "function", "function": t} for t in (WEATHER, SEARCH)]
ANTHROPIC_TOOLS = [{"name": t["name"], "description": t["description"],
                    "input_schema": t["parameters"]} for t in (WEATHER, SEARCH)]
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
FAMILIES = ("qwen", "llama3", "mistral", "generic")


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory, checkpoint):
    """One random Qwen3-shaped checkpoint served under four chat templates, one per tool-call
    syntax (the generic one is the ChatML template that knows nothing of tools)."""
    base = checkpoint("qwen3", max_position_embeddings=4096)
    models = []
    for family in FAMILIES:
        path = tmp_path_factory.mktemp(f"tools-{family}")
        shutil.copytree(base, path, dirs_exist_ok=True)
        (path / "chat_template.jinja").write_text(TEMPLATES[family])
        models.append(ModelSpec(family, str(path)))
    state = tmp_path_factory.mktemp("tools-state") / "state.db"
    with live_server(state, models=tuple(models), embedder=False, max_num_seqs=32) as live:
        yield live


def valid_call(name: str, arguments: dict | str) -> dict:
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    jsonschema.validate(args, SCHEMAS[name])
    return args


# -- OpenAI ----------------------------------------------------------------------------------


@pytest.fixture
def aclient(tool_server):
    return openai.AsyncOpenAI(base_url=f"{tool_server.base_url}/v1", api_key=tool_server.key)


@pytest.mark.parametrize("family", FAMILIES)
def test_openai_named_tool_choice_always_gives_a_valid_call(aclient, family):
    async def run():
        return await asyncio.gather(*(
            aclient.chat.completions.create(
                model=family, messages=ASK, tools=OPENAI_TOOLS, temperature=1.0, seed=seed,
                max_tokens=300,
                tool_choice={"type": "function", "function": {"name": "search_files"}})
            for seed in range(16)))

    for answer in asyncio.run(run()):
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", choice.message
        assert choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "search_files"
        valid_call("search_files", call.function.arguments)


@pytest.mark.parametrize("family", ["qwen", "generic"])
def test_openai_required_calls_stream_and_reassemble(tool_server, family):
    client = openai.OpenAI(base_url=f"{tool_server.base_url}/v1", api_key=tool_server.key)
    names = set()
    for seed in range(8):
        with client.chat.completions.stream(
            model=family, messages=ASK, tools=OPENAI_TOOLS, tool_choice="required",
            temperature=1.0, seed=seed, max_tokens=300,
        ) as stream:
            chunks = [event.chunk for event in stream if event.type == "chunk"]
            final = stream.get_final_completion()
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls
        for call in choice.message.tool_calls:
            valid_call(call.function.name, call.function.arguments)
            names.add(call.function.name)
        # each call is sent once complete: id and name first, then its whole arguments
        deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
        assert len(deltas) == 2 * len(choice.message.tool_calls)
        for start, arguments in zip(deltas[::2], deltas[1::2], strict=True):
            assert start.id and start.function.name and start.function.arguments == ""
            assert arguments.index == start.index and arguments.function.arguments
    assert names <= set(SCHEMAS)


def test_openai_required_lets_the_model_choose_the_tool(aclient):
    async def run():
        return await asyncio.gather(*(
            aclient.chat.completions.create(
                model="qwen", messages=ASK, tools=OPENAI_TOOLS, tool_choice="required",
                temperature=1.0, seed=seed, max_tokens=300)
            for seed in range(24)))

    names = {call.function.name for answer in asyncio.run(run())
             for call in answer.choices[0].message.tool_calls}
    assert names == set(SCHEMAS)


def test_openai_parallel_off_gives_exactly_one_call(aclient):
    async def run():
        return await asyncio.gather(*(
            aclient.chat.completions.create(
                model="qwen", messages=ASK, tools=OPENAI_TOOLS, tool_choice="required",
                parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=300)
            for seed in range(8)))

    for answer in asyncio.run(run()):
        assert len(answer.choices[0].message.tool_calls) == 1


def test_openai_tool_round_trip(tool_server):
    client = openai.OpenAI(base_url=f"{tool_server.base_url}/v1", api_key=tool_server.key)
    first = client.chat.completions.create(
        model="qwen", messages=ASK, tools=OPENAI_TOOLS, temperature=1.0, seed=3, max_tokens=300,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = first.choices[0].message.tool_calls[0]
    args = valid_call("get_weather", call.function.arguments)
    messages = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id,
                 "content": f"{args['city']}: sunny, 22 degrees"}]
    second = client.chat.completions.create(model="qwen", messages=messages, tools=OPENAI_TOOLS,
                                            max_tokens=20)
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # the result reached the model: the prompt grew by the call and the result
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_openai_tool_choice_none_never_calls(aclient):
    answer = asyncio.run(aclient.chat.completions.create(
        model="qwen", messages=ASK, tools=OPENAI_TOOLS, tool_choice="none", max_tokens=30))
    assert answer.choices[0].message.tool_calls is None


# -- Anthropic -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def claude(tool_server):
    return anthropic.Anthropic(base_url=tool_server.base_url, api_key=tool_server.key)


@pytest.mark.parametrize("family", FAMILIES)
def test_anthropic_forced_tool_use_validates(claude, family):
    for _ in range(6):
        message = claude.messages.create(
            model=family, max_tokens=300, messages=ASK, tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "tool", "name": "get_weather"})
        assert message.stop_reason == "tool_use"
        (block,) = message.content
        assert block.type == "tool_use" and block.name == "get_weather"
        valid_call("get_weather", block.input)


def test_anthropic_streamed_tool_use_reassembles(claude):
    # one call: with parallel calls allowed, a random model may keep calling until max_tokens
    with claude.messages.stream(model="llama3", max_tokens=300, messages=ASK,
                                tools=ANTHROPIC_TOOLS,
                                tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                ) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert "input_json" in kinds  # the SDK's own event for input_json_delta
    assert message.stop_reason == "tool_use"
    for block in message.content:
        assert block.type == "tool_use"
        valid_call(block.name, block.input)


def test_anthropic_tool_round_trip(claude):
    first = claude.messages.create(model="mistral", max_tokens=300, messages=ASK,
                                   tools=ANTHROPIC_TOOLS,
                                   tool_choice={"type": "tool", "name": "search_files"})
    use = first.content[0]
    messages = [*ASK, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "is_error": True,
                     "content": [{"type": "text", "text": "permission denied"}]}]}]
    second = claude.messages.create(model="mistral", max_tokens=20, messages=messages,
                                    tools=ANTHROPIC_TOOLS)
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert second.usage.input_tokens > first.usage.input_tokens


def test_anthropic_tool_results_in_one_turn_and_an_orphan_result(claude):
    """Two results in one user turn (text and block content, one an error) are accepted; a
    result for a call that was never made is refused as Anthropic refuses it."""
    tools = [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "get_weather",
                    "input": {"city": "Lyon"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 22 C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "is_error": True,
                    "content": [{"type": "text", "text": "timed out"}],
                },
            ],
        },
    ]
    message = claude.messages.create(
        model="generic", max_tokens=20, tools=tools, tool_choice={"type": "auto"}, messages=messages
    )
    assert message.content[0].type == "text"
    # a result for a call that was never made is refused, in Anthropic's words
    messages[1]["content"].pop()
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="generic", max_tokens=20, tools=tools, messages=messages)
    assert "toolu_02" in err.value.message and "tool_result" in err.value.message


# -- Ollama ----------------------------------------------------------------------------------


def test_ollama_forced_tool_calls_and_round_trip(tool_server):
    # the ollama client sends each tool through its own model, which keeps only type,
    # properties, required, items, enum and descriptions: that is the schema tenshu enforces
    sent = {t["function"]["name"]: ollama.Tool.model_validate(t).model_dump(
        exclude_none=True)["function"]["parameters"] for t in OPENAI_TOOLS}
    forced = ollama.Client(host=tool_server.base_url,
                           headers={**tool_server.headers(), "x-tenshu-tool-choice": "required"})
    for seed in range(6):
        chunks = list(forced.chat("generic", messages=ASK, tools=OPENAI_TOOLS, stream=True,
                                  options={"temperature": 1.0, "seed": seed}))
        calls = [c for chunk in chunks for c in (chunk.message.tool_calls or [])]
        assert calls and chunks[-1].done_reason == "stop"
        for call in calls:
            jsonschema.validate(call.function.arguments, sent[call.function.name])
    reply = forced.chat("qwen", messages=ASK, tools=OPENAI_TOOLS,
                        options={"temperature": 1.0, "seed": 1})
    (call,) = reply.message.tool_calls[:1]
    jsonschema.validate(call.function.arguments, sent[call.function.name])
    # after the tool's result, the header no longer forces a call: the model answers
    messages = [*ASK, reply.message,
                {"role": "tool", "tool_name": call.function.name, "content": "sunny"}]
    answer = forced.chat("qwen", messages=messages, tools=OPENAI_TOOLS,
                         options={"num_predict": 20})
    assert answer.done


def test_a_forced_call_cut_by_max_tokens_says_so_in_every_protocol(tool_server, claude):
    """52 tokens hold the call's opening and name (46 tokens) but not its arguments: the answer
    is cut short, and holds no call (tests/api/test_cut_tool_calls.py has more)."""
    message = claude.messages.create(model="qwen", max_tokens=52, messages=ASK,
                                     tools=ANTHROPIC_TOOLS,
                                     tool_choice={"type": "tool", "name": "search_files"})
    assert message.stop_reason == "max_tokens"
    assert [b.type for b in message.content] == ["text"]
    client = openai.OpenAI(base_url=f"{tool_server.base_url}/v1", api_key=tool_server.key)
    answer = client.chat.completions.create(
        model="qwen", messages=ASK, tools=OPENAI_TOOLS, max_tokens=52,
        tool_choice={"type": "function", "function": {"name": "search_files"}})
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.tool_calls is None
    forced = ollama.Client(host=tool_server.base_url,
                           headers={**tool_server.headers(), "x-tenshu-tool-choice": "required"})
    reply = forced.chat("qwen", messages=ASK, tools=OPENAI_TOOLS, options={"num_predict": 52})
    assert reply.done_reason == "length"
    assert not reply.message.tool_calls


def test_the_tool_choice_header_forces_only_fresh_turns_that_allow_calls():
    tools = [ToolSpec("Read", "", {"type": "object"})]

    def forced(messages, header="Read", choice=None) -> ToolChoice | None:
        request = ChatRequest("m", messages, tools=tools, tool_choice=choice)
        force_tool_choice(request, header)
        return request.tool_choice

    ask = [Message.of("user", "read it")]
    assert forced(ask) == ToolChoice("tool", "Read")
    assert forced(ask, "required") == ToolChoice("required", parallel=False)
    assert forced(ask, "Write") is None  # not offered: left alone
    assert forced(ask, choice=ToolChoice("none")) == ToolChoice("none")
    answered = [*ask, Message("assistant", [ToolUseBlock("t1", "Read", {})]),
                Message("user", [ToolResultBlock("t1", [TextBlock("...")])])]
    assert forced(answered) is None  # after results the model answers freely
