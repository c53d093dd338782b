"""OpenAI's Responses API (/v1/responses) through the official `openai` SDK, as Codex uses it
against an Ollama of 0.13.4 or later (`codex --oss`): stateless, function tools, streamed
events, the conversation sent back as input items."""

from __future__ import annotations

import json
import shutil

import httpx
import openai
import pytest

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
    assert whole.status == "completed" and whole.output_text and whole.store is False
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


def test_stored_state_is_refused_with_what_to_do(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="and then?", previous_response_id="resp_1")
    assert err.value.body["param"] == "previous_response_id"
    assert "send the whole conversation in `input`" in err.value.body["message"]


def test_codex_shaped_turns_call_a_tool_and_take_its_output_back(coder):
    """What Codex sends: instructions, a developer message, user items, function tools (and a
    hosted one, left out), reasoning settings, store false; then the call and its output back
    as items. The random model calls only when made to (tool_choice required)."""
    turn = {"model": "coder", "instructions": "You are a coding agent.", "store": False,
            "tools": [SHELL, {"type": "web_search"}], "parallel_tool_calls": False,
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
