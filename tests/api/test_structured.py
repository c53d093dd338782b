"""Structured output through the official clients: a random model, which cannot follow any
instruction, still answers with JSON that validates, at temperature 1 across many seeds.

Schemas cover nested objects, arrays with bounds, enums, integers with ranges and required
fields. Strings are bounded so every document fits in max_tokens; an answer cut short by
max_tokens must say so (finish_reason "length"), never pass as complete.
"""

from __future__ import annotations

import asyncio
import json

import anthropic
import jsonschema
import ollama
import openai
import pytest

from tenshu.config import ModelSpec
from tests.api.live import live_server

SEEDS = range(24)
NAME = {"type": "string", "maxLength": 12}
SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": NAME,
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.com$"},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "order": {
        "type": "object",
        "properties": {
            "status": {"enum": ["pending", "shipped", "delivered"]},
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": NAME,
                        "quantity": {"type": "integer", "minimum": 1, "maximum": 9},
                        "price": {"type": "number", "minimum": 0, "maximum": 1000},
                    },
                    "required": ["sku", "quantity"],
                    "additionalProperties": False,
                },
            },
            "gift": {"type": "boolean"},
        },
        "required": ["status", "items"],
        "additionalProperties": False,
    },
    "tree": {
        "$defs": {
            "leaf": {"type": "object", "properties": {"label": NAME, "weight": {
                "type": "integer", "minimum": -5, "maximum": 5}},
                "required": ["label", "weight"], "additionalProperties": False},
        },
        "type": "object",
        "properties": {
            "root": {"$ref": "#/$defs/leaf"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/leaf"}, "maxItems": 2},
            "kind": {"anyOf": [{"const": "binary"}, {"type": "integer", "minimum": 2,
                                                      "maximum": 4}]},
        },
        "required": ["root", "children", "kind"],
        "additionalProperties": False,
    },
    "verdict": {  # the router's sentinel asks for this shape
        "type": "object",
        "properties": {
            "label": {"enum": ["simple", "complex"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["label", "score"],
        "additionalProperties": False,
    },
}
ASK = [{"role": "user", "content": "classify: hello"}]


@pytest.fixture(scope="module")
def random_server(tmp_path_factory, checkpoint):
    """A random Qwen3-shaped checkpoint (its ChatML template knows nothing of tools)."""
    path = checkpoint("qwen3")
    state = tmp_path_factory.mktemp("structured-state") / "state.db"
    with live_server(state, models=(ModelSpec("random", str(path)),), embedder=False,
                     max_num_seqs=32) as live:
        yield live


@pytest.fixture
def openai_client(random_server):
    """A fresh async client per test: each test runs its own event loop."""
    return openai.AsyncOpenAI(base_url=f"{random_server.base_url}/v1", api_key=random_server.key)


def validate(text: str, schema: dict) -> None:
    jsonschema.validate(json.loads(text), schema)


async def _openai_answers(client, schema: dict) -> list:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                   "strict": True}}
    return await asyncio.gather(*(
        client.chat.completions.create(model="random", messages=ASK, response_format=fmt,
                                       temperature=1.0, seed=seed, max_tokens=200)
        for seed in SEEDS))


@pytest.mark.parametrize("name", SCHEMAS)
def test_openai_json_schema_answers_validate_across_seeds(openai_client, name):
    schema = SCHEMAS[name]
    answers = asyncio.run(_openai_answers(openai_client, schema))
    texts = set()
    for answer in answers:
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        validate(choice.message.content, schema)
        texts.add(choice.message.content)
    assert len(texts) > len(SEEDS) // 2  # the seeds really sampled different documents


def test_openai_streamed_json_schema_answer_validates(random_server):
    client = openai.OpenAI(base_url=f"{random_server.base_url}/v1", api_key=random_server.key)
    schema = SCHEMAS["order"]
    with client.chat.completions.stream(
        model="random", messages=ASK, temperature=1.0, seed=7, max_tokens=200,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "order", "schema": schema, "strict": True}},
    ) as stream:
        final = stream.get_final_completion()
    validate(final.choices[0].message.content, schema)
    assert final.choices[0].finish_reason == "stop"


def test_openai_json_object_mode_gives_an_object(openai_client):
    async def run():
        return await asyncio.gather(*(
            openai_client.chat.completions.create(
                model="random", messages=ASK, response_format={"type": "json_object"},
                temperature=1.0, seed=seed, max_tokens=300)
            for seed in range(8)))

    for answer in asyncio.run(run()):
        choice = answer.choices[0]
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
        else:  # free-form JSON can outgrow the budget: then it is reported as cut short
            assert choice.finish_reason == "length"


def test_a_document_that_cannot_fit_max_tokens_ends_with_length(openai_client):
    schema = {"type": "object", "properties": {"xs": {"type": "array", "items": NAME,
                                                      "minItems": 50}},
              "required": ["xs"]}
    answer = asyncio.run(openai_client.chat.completions.create(
        model="random", messages=ASK, max_tokens=20, temperature=1.0, seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert answer.choices[0].finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(answer.choices[0].message.content)


def test_an_unsupported_keyword_is_a_400_that_names_it(openai_client):
    schema = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    with pytest.raises(openai.BadRequestError) as err:
        asyncio.run(openai_client.chat.completions.create(
            model="random", messages=ASK, response_format={
                "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert "uniqueItems" in err.value.message and "/properties/tags" in err.value.message
    assert err.value.body["param"].startswith("response_format")


def test_ollama_format_schema_and_json(random_server):
    client = ollama.Client(host=random_server.base_url, headers=random_server.headers())
    schema = SCHEMAS["person"]
    for seed in range(12):
        reply = client.chat("random", messages=ASK, format=schema,
                            options={"temperature": 1.0, "seed": seed, "num_predict": 200})
        assert reply.done_reason == "stop"
        validate(reply.message.content, schema)
    chunks = list(client.chat("random", messages=ASK, format=SCHEMAS["verdict"], stream=True,
                              options={"temperature": 1.0, "seed": 3, "num_predict": 200}))
    validate("".join(c.message.content for c in chunks), SCHEMAS["verdict"])
    reply = client.generate("random", "hello", format="json",
                            options={"temperature": 1.0, "seed": 5, "num_predict": 300})
    if reply.done_reason == "stop":
        assert isinstance(json.loads(reply.response), dict)


def test_anthropic_output_format_validates(random_server):
    client = anthropic.Anthropic(base_url=random_server.base_url, api_key=random_server.key)
    schema = SCHEMAS["tree"]
    for _ in range(6):
        message = client.messages.create(
            model="random", max_tokens=200, messages=ASK,
            output_config={"format": {"type": "json_schema", "schema": schema}},
        )
        assert message.stop_reason == "end_turn"
        validate(message.content[0].text, schema)
