"""A forced tool call that max_tokens cuts short, through the official clients.

A call cut short is never reported as a call: the answer ends with length (OpenAI's
finish_reason "length", Anthropic's stop_reason "max_tokens", Ollama's done_reason "length"),
and every call it does carry, streamed or not, has arguments that parse and validate. A client
that echoes a call with unparseable arguments back in its history (one from another server, or an
older tenshu's) is answered, not refused: the arguments reach the model as the text they are.
"""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import jsonschema
import ollama
import openai
import pytest

from tests.api.test_tools import (
    ANTHROPIC_TOOLS,
    ASK,
    OPENAI_TOOLS,
    SCHEMAS,
    tool_server,  # noqa: F401 (the fixture)
)

# the qwen-syntax call's opening and name take 46 tokens; its arguments 20 to 90 more
BUDGETS = range(40, 136, 8)
NAMED = {"type": "function", "function": {"name": "search_files"}}
CUT = '{"pattern": "*.p'  # a call's arguments, cut short


def check(name: str, arguments: dict | str) -> None:
    """A reported call's arguments: a JSON object that validates against its tool's schema."""
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    jsonschema.validate(args, SCHEMAS[name])


@pytest.fixture
def aclient(tool_server):  # noqa: F811
    return openai.AsyncOpenAI(base_url=f"{tool_server.base_url}/v1", api_key=tool_server.key)


@pytest.mark.parametrize("family", ["qwen", "generic"])
def test_openai_a_cut_call_is_not_reported_as_a_call(aclient, family):
    async def run():
        return await asyncio.gather(*(
            aclient.chat.completions.create(
                model=family, messages=ASK, tools=OPENAI_TOOLS, tool_choice=NAMED,
                temperature=1.0, seed=budget, max_tokens=budget)
            for budget in BUDGETS))

    finishes = []
    for answer in asyncio.run(run()):
        choice = answer.choices[0]
        finishes.append(choice.finish_reason)
        for call in choice.message.tool_calls or []:
            check(call.function.name, call.function.arguments)
        if choice.finish_reason == "tool_calls":
            assert choice.message.tool_calls
    assert "length" in finishes and "tool_calls" in finishes  # both cases were seen


def test_openai_a_cut_call_is_never_streamed(aclient):
    async def one(budget: int):
        stream = await aclient.chat.completions.create(
            model="qwen", messages=ASK, tools=OPENAI_TOOLS, tool_choice=NAMED,
            temperature=1.0, seed=budget, max_tokens=budget, stream=True)
        calls: dict[int, list] = {}
        finish = None
        async for chunk in stream:
            for delta in chunk.choices[0].delta.tool_calls or []:
                call = calls.setdefault(delta.index, ["", ""])
                call[0] += delta.function.name or ""
                call[1] += delta.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        return finish, calls

    async def run():
        return await asyncio.gather(*(one(budget) for budget in BUDGETS))

    finishes = []
    for finish, calls in asyncio.run(run()):
        finishes.append(finish)
        for name, arguments in calls.values():
            check(name, arguments)
        assert (finish == "tool_calls") == bool(calls) or finish == "length"
    assert "length" in finishes and "tool_calls" in finishes


def test_anthropic_a_cut_tool_use_is_not_reported(tool_server):  # noqa: F811
    claude = anthropic.Anthropic(base_url=tool_server.base_url, api_key=tool_server.key)
    stops = []
    for budget in BUDGETS[::2]:
        kwargs = dict(model="qwen", max_tokens=budget, messages=ASK, tools=ANTHROPIC_TOOLS,
                      tool_choice={"type": "tool", "name": "search_files"},
                      extra_body={"temperature": 1.0, "seed": budget})
        message = claude.messages.create(**kwargs)
        with claude.messages.stream(**kwargs) as stream:
            streamed = stream.get_final_message()
        for m in (message, streamed):
            stops.append(m.stop_reason)
            uses = [b for b in m.content if b.type == "tool_use"]
            for use in uses:
                check(use.name, use.input)
            assert (m.stop_reason == "tool_use") == bool(uses) or m.stop_reason == "max_tokens"
    assert "max_tokens" in stops and "tool_use" in stops


def test_ollama_a_cut_call_is_not_reported(tool_server):  # noqa: F811
    forced = ollama.Client(host=tool_server.base_url,
                           headers={**tool_server.headers(), "x-tenshu-tool-choice": "required"})
    done = []
    # the ollama client drops the schemas' length bounds, so a whole call may take hundreds
    for budget in [*BUDGETS[::2], 1000]:
        options = {"temperature": 1.0, "seed": budget, "num_predict": budget}
        reply = forced.chat("qwen", messages=ASK, tools=OPENAI_TOOLS, options=options)
        chunks = list(forced.chat("qwen", messages=ASK, tools=OPENAI_TOOLS, options=options,
                                  stream=True))
        for calls, reason in ((reply.message.tool_calls, reply.done_reason),
                              ([c for chunk in chunks for c in chunk.message.tool_calls or []],
                               chunks[-1].done_reason)):
            done.append(reason)
            for call in calls or []:
                # the ollama client keeps only part of each schema; the required keys are there
                assert set(SCHEMAS[call.function.name]["required"]) <= set(
                    call.function.arguments)
    assert "length" in done and "stop" in done


# -- a broken call in the history --------------------------------------------------------------


def echoed(arguments: str) -> list[dict]:
    """A conversation whose assistant turn holds a call with `arguments`, and its result."""
    return [*ASK,
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "search_files", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "no such files"}]


@pytest.mark.parametrize("arguments", [CUT, "[1, 2]", "not json at all"])
def test_openai_history_with_unparseable_arguments_is_answered(tool_server, arguments):  # noqa: F811
    client = openai.OpenAI(base_url=f"{tool_server.base_url}/v1", api_key=tool_server.key)
    for family in ("qwen", "generic"):
        answer = client.chat.completions.create(model=family, messages=echoed(arguments),
                                                tools=OPENAI_TOOLS, max_tokens=5)
        assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
        # the arguments reached the model as written: the prompt holds their tokens
        clean = client.chat.completions.create(model=family, messages=echoed("{}"),
                                               tools=OPENAI_TOOLS, max_tokens=5)
        assert answer.usage.prompt_tokens > clean.usage.prompt_tokens


def test_ollama_history_with_unparseable_arguments_is_answered(tool_server):  # noqa: F811
    # the ollama client sends only objects; OpenAI-style clients of /api/chat send strings
    body = {"model": "qwen", "stream": False, "options": {"num_predict": 5},
            "messages": [*ASK,
                         {"role": "assistant", "content": "", "tool_calls": [{
                             "function": {"name": "search_files", "arguments": CUT}}]},
                         {"role": "tool", "tool_name": "search_files", "content": "none"}]}
    answer = httpx.post(f"{tool_server.base_url}/api/chat", json=body,
                        headers=tool_server.headers(), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["done"]
