"""OpenAI's Responses API (/v1/responses) through the official `openai` SDK, as Codex uses it
against an Ollama of 0.13.4 or later (`codex --oss`) and as a model provider (function and
namespace tools, OpenAI's hosted web_search offered beside them, streamed events, the
conversation sent back as input items, store false), and as OpenAI's own state keeps it:
stored responses, retrieved, listed, continued by previous_response_id and deleted, each only
by its owner; and the OpenAI Agents SDK's default model over it."""

from __future__ import annotations

import json
import secrets
import shutil

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tenshu.config import ModelSpec
from tests.api.live import live_server
from tests.chat.conftest import TEMPLATES

MODEL = "tenshu-tiny"
SHELL = {"type": "function", "name": "shell", "description": "Runs a shell command.",
         "strict": False, "parameters": {
             "type": "object", "properties": {"command": {
                 "type": "array", "items": {"type": "string", "maxLength": 8},
                 "minItems": 1, "maxItems": 3}},
             "required": ["command"], "additionalProperties": False}}
WEB_SEARCH = {"type": "web_search", "external_web_access": False}  # as Codex offers it


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.key, max_retries=0)


@pytest.fixture(scope="module")
def coder(tmp_path_factory, checkpoint):
    """A random Qwen3-shaped checkpoint with Qwen's tool template and a 4k window."""
    path = tmp_path_factory.mktemp("responses-coder")
    shutil.copytree(checkpoint("qwen3", max_position_embeddings=4096), path, dirs_exist_ok=True)
    (path / "chat_template.jinja").write_text(TEMPLATES["qwen"])
    state = tmp_path_factory.mktemp("responses-state") / "state.db"
    with live_server(state, models=(ModelSpec("coder", str(path)),), embedder=False) as live:
        yield openai.OpenAI(base_url=live.base_url + "/v1", api_key=live.key, max_retries=0)


def test_the_ollama_version_is_one_codex_talks_responses_to(server):
    version = httpx.get(f"{server.base_url}/api/version").json()["version"]
    assert tuple(int(p) for p in version.split(".")) >= (0, 13, 4)


def test_a_whole_response_and_a_streamed_one_agree(client):
    whole = client.responses.create(model=MODEL, input="hi, who are you?", temperature=0,
                                    max_output_tokens=40, instructions="Answer briefly.")
    assert whole.id.startswith("resp_") and whole.object == "response"
    assert whole.status == "completed" and whole.output_text and whole.store is True
    assert whole.usage.input_tokens > 0 and 0 < whole.usage.output_tokens <= 40
    with client.responses.stream(model=MODEL, input="hi, who are you?", temperature=0,
                                 max_output_tokens=40, instructions="Answer briefly.") as s:
        kinds = [event.type for event in s]
        streamed = s.get_final_response()
    assert streamed.output_text == whole.output_text
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds


def test_a_reply_cut_by_max_output_tokens_is_incomplete(client):
    cut = client.responses.create(model=MODEL, input="tell me a long story", temperature=0,
                                  max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


class Cat(BaseModel):
    name: str = Field(max_length=12)
    lives: int = Field(ge=1, le=9)


def test_structured_output_through_the_sdks_parse_and_json_object(client):
    """text.format json_schema (strict) as responses.parse sends it, streamed too, and
    json_object: the grammar holds a tiny model to the shape."""
    parsed = client.responses.parse(model=MODEL, input="describe a cat", text_format=Cat,
                                    temperature=0, max_output_tokens=60)
    assert parsed.status == "completed" and isinstance(parsed.output_parsed, Cat)
    with client.responses.stream(model=MODEL, input="describe a cat", text_format=Cat,
                                 temperature=0, max_output_tokens=60) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == parsed.output_parsed
    loose = client.responses.create(model=MODEL, input="describe a cat as JSON", temperature=0,
                                    max_output_tokens=40, text={"format": {"type": "json_object"}})
    if loose.status == "completed":  # 40 tokens may cut it short: then it is incomplete
        assert isinstance(json.loads(loose.output_text), dict)
    else:
        assert loose.incomplete_details.reason == "max_output_tokens"


def test_a_stored_response_is_retrieved_listed_continued_and_deleted(client):
    first = client.responses.create(model=MODEL, input="my name is Ana", temperature=0,
                                    max_output_tokens=8, instructions="Answer briefly.")
    assert first.store is True and first.previous_response_id is None
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text
    assert again.instructions == "Answer briefly." and again.usage == first.usage
    (asked,) = client.responses.input_items.list(first.id).data
    assert asked.type == "message" and asked.role == "user" and asked.id
    assert asked.content[0].text == "my name is Ana"

    second = client.responses.create(model=MODEL, input="what is my name?", temperature=0,
                                     max_output_tokens=8, previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.instructions is None
    # the model saw the first turn: its question and answer came before the new one
    assert second.usage.input_tokens > first.usage.input_tokens
    seen = client.responses.input_items.list(second.id, order="asc", limit=100)
    assert [item.id for item in seen.data] == [
        asked.id, *(item.id for item in first.output), seen.data[-1].id]
    assert seen.data[-1].content[0].text == "what is my name?"
    assert seen.first_id == asked.id and seen.has_more is False
    newest = client.responses.input_items.list(second.id, limit=1)  # desc, as OpenAI's default
    assert [i.id for i in newest.data] == [seen.data[-1].id] and newest.has_more is True
    # not carried over, as OpenAI documents: the instructions were the first request's only
    assert all(getattr(item, "role", None) not in ("system", "developer") for item in seen.data)

    deleted = client.responses.delete(first.id)
    assert deleted is None or deleted.deleted  # the SDK returns nothing for a 200
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.retrieve(first.id)
    assert err.value.body["message"] == f"Response with id '{first.id}' not found."
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model=MODEL, input="and?", previous_response_id=first.id)
    assert err.value.body["param"] == "previous_response_id"
    assert client.responses.retrieve(second.id).previous_response_id == first.id


def test_the_deletion_object_is_openais(server):
    made = httpx.post(f"{server.base_url}/v1/responses", headers=server.headers(), timeout=60,
                      json={"model": MODEL, "input": "hi", "max_output_tokens": 2}).json()
    gone = httpx.delete(f"{server.base_url}/v1/responses/{made['id']}",
                        headers=server.headers())
    assert gone.json() == {"id": made["id"], "object": "response.deleted", "deleted": True}
    again = httpx.delete(f"{server.base_url}/v1/responses/{made['id']}",
                         headers=server.headers())
    assert again.status_code == 404 and again.json()["error"]["type"] == "invalid_request_error"


def test_a_streamed_response_is_stored_and_store_false_is_not(client):
    with client.responses.stream(model=MODEL, input="hi, who are you?", temperature=0,
                                 max_output_tokens=40, instructions="Answer briefly.") as s:
        kinds = [event.type for event in s]  # (the helper wants a completed reply)
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.store is True and final.output
    assert client.responses.retrieve(final.id).output_text == final.output_text
    unkept = client.responses.create(model=MODEL, input="hello", max_output_tokens=2,
                                     store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="and?", previous_response_id=unkept.id)


def test_another_users_response_answers_as_a_missing_one(server, client):
    store = server.server.store
    keys = {}
    for who in ("ana", "ben"):
        name = f"{who}-{secrets.token_hex(3)}"
        store.users.add(name, role="member")
        keys[who] = openai.OpenAI(base_url=server.base_url + "/v1", max_retries=0,
                                  api_key=store.keys.create(f"{name}-key", user=name)[1])
    ana, ben = keys["ana"], keys["ben"]
    hers = ana.responses.create(model=MODEL, input="ana's diary: the moat key",
                                max_output_tokens=4)
    for who, what in ((ben, hers.id), (client, hers.id), (ben, "resp_" + "0" * 24)):
        failures = []
        for call in (who.responses.retrieve, who.responses.delete,
                     who.responses.input_items.list):
            with pytest.raises(openai.NotFoundError) as err:
                call(what)
            failures.append(err.value.body["message"].replace(what, "ID"))
        with pytest.raises(openai.NotFoundError) as err:
            who.responses.create(model=MODEL, input="and?", max_output_tokens=2,
                                 previous_response_id=what)
        failures.append(err.value.body["message"].replace(what, "ID"))
        assert failures == ["Response with id 'ID' not found."] * 3 + [
            "Previous response with id 'ID' not found."]
    assert ana.responses.retrieve(hers.id).output_text == hers.output_text  # still there


def test_what_codex_sends_beside_the_conversation_leaves_the_answer_alone(coder):
    """Codex 0.171 offers OpenAI's hosted web_search on every turn, and sends fields for
    OpenAI's own service (include, prompt_cache_key, service_tier, client_metadata,
    text.verbosity, reasoning.summary): none of them changes the answer, and web_search is left
    out of what the model is offered (the prompt is as long as without it)."""
    asked = {"model": "coder", "input": "hi, who are you?", "temperature": 0,
             "max_output_tokens": 12}
    plain = coder.responses.create(tools=[SHELL], **asked)
    codex = coder.responses.create(
        tools=[SHELL, WEB_SEARCH], store=False, include=["reasoning.encrypted_content"],
        prompt_cache_key="thread-1", service_tier="flex", text={"verbosity": "low"},
        reasoning={"summary": "auto"}, extra_body={"client_metadata": {"thread_id": "t-1"}},
        **asked)
    assert codex.output_text == plain.output_text
    assert codex.usage.input_tokens == plain.usage.input_tokens
    assert [tool.type for tool in codex.tools] == ["function", "web_search"]  # as it was asked


def test_a_hosted_tool_is_refused_where_the_request_requires_it(client):
    for choice, said in (({"type": "web_search"}, "tool_choice of type 'web_search' is not "
                                                  "supported here: this server runs no hosted"),
                         ("required", "tool_choice 'required' needs function tools")):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model=MODEL, input="search it", tools=[WEB_SEARCH],
                                    tool_choice=choice)
        assert err.value.body["param"] == "tool_choice"
        assert err.value.body["message"].startswith(said)


def test_a_namespaced_tool_is_called_by_its_name_and_namespace(coder):
    """Codex sends each MCP server's tools, and its sub-agent tools, as a `namespace` of function
    tools, and finds the tool a call is for by its name and namespace together: a call says
    both, apart, even where a top-level tool has the same name; and it is read back so."""
    box = {"type": "namespace", "name": "mcp__box", "description": "A sandbox's tools.",
           "tools": [{**SHELL, "description": "Runs a command in the sandbox."}]}
    turn = {"model": "coder", "tools": [SHELL, box], "store": False, "temperature": 0,
            "max_output_tokens": 200}
    asked = [{"role": "user", "content": "list the files in the sandbox"}]
    with coder.responses.stream(input=asked, **turn, tool_choice={
            "type": "function", "name": "shell", "namespace": "mcp__box"}) as s:
        added = [event.item for event in s if event.type == "response.output_item.added"]
        first = s.get_final_response()
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, call.namespace) == ("shell", "mcp__box")
    assert added[-1].namespace == "mcp__box"  # said from the call's first event
    plain = coder.responses.create(input=asked, tool_choice={"type": "function", "name": "shell"},
                                   **turn)
    (other,) = [item for item in plain.output if item.type == "function_call"]
    assert (other.name, other.namespace) == ("shell", None)

    history = [*asked, *(item.model_dump(exclude_none=True) for item in first.output),
               {"type": "function_call_output", "call_id": call.call_id, "output": "README.md"}]
    again = coder.responses.create(input=history, **turn)
    assert again.status in ("completed", "incomplete") and again.output


def test_a_namespace_holds_only_function_tools(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="hi", tools=[
            SHELL, {"type": "namespace", "name": "web", "description": "", "tools": [
                SHELL, WEB_SEARCH]}])
    assert err.value.body["param"] == "tools.1.tools.1.type"


def test_codex_shaped_turns_call_a_tool_and_take_its_output_back(coder):
    """What Codex sends: instructions, a developer message, user items, function tools (and
    web_search, which no call can be for here), reasoning settings, store false; then the call
    and its output back as items. The random model calls only when made to (tool_choice
    required)."""
    turn = {"model": "coder", "instructions": "You are a coding agent.", "store": False,
            "tools": [SHELL, WEB_SEARCH], "parallel_tool_calls": False,
            "reasoning": {"effort": "medium", "summary": "auto"},
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "thread-1"}
    history = [{"type": "message", "role": "developer",
                "content": [{"type": "input_text", "text": "<permissions>none</permissions>"}]},
               {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "list the files"}]}]
    with coder.responses.stream(input=history, tool_choice="required", temperature=0,
                                max_output_tokens=200, **turn) as s:
        kinds = [event.type for event in s]
        first = s.get_final_response()
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "shell" and call.call_id
    assert isinstance(json.loads(call.arguments)["command"], list)
    assert "response.function_call_arguments.delta" in kinds
    assert kinds.count("response.output_item.done") == len(first.output)
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id,
                    "output": "README.md\nsetup.py"})
    second = coder.responses.create(input=history, temperature=0, max_output_tokens=20, **turn)
    assert second.status in ("completed", "incomplete") and second.output


def test_input_items_the_server_cannot_read_are_named(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=[
            {"role": "user", "content": "hi"}, {"type": "item_reference", "id": "x"}])
    assert err.value.body["param"] == "input.1.type"


def test_an_openai_agents_sdk_agent_calls_its_function_tool(server):
    """The OpenAI Agents SDK's default model (OpenAIResponsesModel) against this server, with
    tracing off (nothing leaves the machine). The random model calls a tool only when made to:
    tool_choice names it, and stop_on_first_tool ends the run with the tool's output."""
    agents = pytest.importorskip("agents")
    import asyncio

    rung = []

    @agents.function_tool
    def ring_bell() -> str:
        """Rings the castle bell."""
        rung.append(True)
        return "the bell rang"

    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(openai.AsyncOpenAI(
        base_url=server.base_url + "/v1", api_key=server.key, max_retries=0),
        use_for_tracing=False)
    agent = agents.Agent(name="keeper", instructions="Ring the bell.", model=MODEL,
                         tools=[ring_bell], tool_use_behavior="stop_on_first_tool",
                         model_settings=agents.ModelSettings(
                             tool_choice="ring_bell", temperature=0, max_tokens=200))
    result = asyncio.run(agents.Runner.run(agent, "ring it", max_turns=2))
    assert rung == [True] and result.final_output == "the bell rang"
    (response,) = result.raw_responses
    assert response.response_id.startswith("resp_")
