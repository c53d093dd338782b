"""Grammar-constrained decoding in the engine, with grammars compiled by chat/structured.py, on a
random checkpoint: what a constraint guarantees, and what it must leave alone."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tenshu import LLM, SamplingParams
from tenshu.chat.structured import GrammarCompiler, check_finite
from tenshu.core.errors import InvalidRequestError

SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 10, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 2, "maxItems": 2},
    },
    "required": ["ok", "n", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm(checkpoint):
    return LLM(checkpoint("qwen3"), dtype="float32")


@pytest.fixture(scope="module")
def grammars(llm):
    engine = llm.engine
    return GrammarCompiler(engine.tokenizer, engine.vocab_size, sorted(engine.eos_token_ids))


def test_every_sample_validates_and_ends_when_the_document_does(llm, grammars):
    grammar = grammars.json_schema(SCHEMA)
    params = [SamplingParams(temperature=1.0, seed=s, max_tokens=100, constraint=grammar)
              for s in range(32)]
    outs = llm.generate(["tell me"] * 32, params)
    for out in outs:
        c = out.outputs[0]
        assert c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.text), SCHEMA)
    assert len({o.outputs[0].text for o in outs}) > 8


def test_n_sequences_each_follow_the_grammar_on_their_own(llm, grammars):
    grammar = grammars.json_schema(SCHEMA)
    (out,) = llm.generate(["x"], SamplingParams(n=4, temperature=1.0, seed=3, max_tokens=100,
                                                constraint=grammar))
    for c in out.outputs:
        jsonschema.validate(json.loads(c.text), SCHEMA)


def test_unconstrained_neighbours_are_unchanged(llm, grammars):
    """Constrained and plain requests share batches; the plain ones get exactly what they get
    alone (greedy and seeded sampling)."""
    prompts = ["a b c", "hello there", "one two", "the quick"]
    plain = [SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
             SamplingParams(temperature=1.0, seed=9, max_tokens=24, ignore_eos=True)] * 2
    alone = llm.generate(prompts, plain)
    grammar = grammars.json_schema(SCHEMA)
    mixed_params = []
    for p in plain:
        mixed_params += [p, SamplingParams(temperature=1.0, seed=1, max_tokens=60,
                                           constraint=grammar)]
    mixed = llm.generate([p for p in prompts for _ in (0, 1)], mixed_params)
    assert [o.outputs[0].token_ids for o in mixed[::2]] == [o.outputs[0].token_ids for o in alone]


def test_a_grammar_that_cannot_finish_in_max_tokens_ends_with_length(llm, grammars):
    grammar = grammars.json_schema({"type": "array", "items": {"type": "integer"},
                                    "minItems": 100})
    (out,) = llm.generate(["x"], SamplingParams(temperature=1.0, seed=0, max_tokens=15,
                                                constraint=grammar))
    c = out.outputs[0]
    assert c.finish_reason == "length" and len(c.token_ids) == 15
    with pytest.raises(ValueError):
        json.loads(c.text)


def test_stop_strings_do_not_cut_a_constrained_answer(llm, grammars):
    grammar = grammars.json_schema(SCHEMA)
    (out,) = llm.generate(["x"], SamplingParams(temperature=1.0, seed=2, max_tokens=100,
                                                stop=['"', ","], constraint=grammar))
    jsonschema.validate(json.loads(out.outputs[0].text), SCHEMA)


def test_greedy_constrained_output_is_the_best_allowed_token_each_step(llm, grammars):
    """At temperature 0 the grammar only removes tokens: each step takes the model's most
    likely token among those allowed, so the constrained text is the grammar's greedy walk."""
    grammar = grammars.json_schema({"enum": ["alpha", "beta", "gamma"]})
    (out,) = llm.generate(["pick"], SamplingParams(temperature=0, max_tokens=20,
                                                   constraint=grammar, logprobs=5))
    c = out.outputs[0]
    assert json.loads(c.text) in ("alpha", "beta", "gamma")
    walk = grammar.new()
    assert all(walk.accept(t) for t in c.token_ids) and walk.finished()


def test_the_compiler_caches_and_names_what_it_cannot_enforce(grammars):
    assert grammars.json_schema(SCHEMA) is grammars.json_schema(json.loads(json.dumps(SCHEMA)))
    schema = {"type": "object", "properties": {
        "not": {"type": "string"},  # a property called "not" is not the keyword
        "items": {"$ref": "#/$defs/list"}},
        "$defs": {"list": {"type": "array", "uniqueItems": True}}}
    with pytest.raises(InvalidRequestError) as err:
        grammars.json_schema(schema, field="format")
    assert "'uniqueItems' (at /$defs/list)" in str(err.value)
    assert err.value.field == "format"
    with pytest.raises(InvalidRequestError, match="must be an object"):
        grammars.json_schema(["not", "a", "schema"])


def test_objects_keep_to_the_keys_their_schema_names(llm, grammars):
    """JSON Schema would allow unlisted keys; a model allowed them writes them (a chatty one
    until max_tokens). Objects that list properties and say nothing of others are closed."""
    schema = {"type": "object", "properties": {
        "minutes": {"type": "integer", "minimum": 1, "maximum": 60},
        "where": {"type": "object", "properties": {"room": {"enum": ["den", "attic"]}}}},
        "required": ["minutes"]}
    grammar = grammars.json_schema(schema)
    outs = llm.generate(["nap"] * 16, [SamplingParams(temperature=1.0, seed=s, max_tokens=60,
                                                      constraint=grammar) for s in range(16)])
    for out in outs:
        doc = json.loads(out.outputs[0].text)
        assert set(doc) <= {"minutes", "where"} and set(doc.get("where", {})) <= {"room"}
    assert "additionalProperties" not in schema  # the client's schema is left as it was
    opened = grammars.json_schema({**schema, "additionalProperties": {"type": "integer"}})
    assert opened is not grammar


FINITE = [
    {"type": "object", "properties": {"next": {"$ref": "#"}}},  # recursion that may stop
    {"type": "array", "items": {"$ref": "#"}},  # [] ends it
    {"$defs": {"node": {"anyOf": [{"type": "null"}, {"type": "array", "minItems": 1,
                                                     "items": {"$ref": "#/$defs/node"}}]}},
     "$ref": "#/$defs/node"},
    {"type": ["object", "null"], "properties": {"a": {"$ref": "#"}}, "required": ["a"]},
    {"$ref": "#/definitions/missing"},  # not this check's to judge: the compiler says
    {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/c"}, {"$ref": "#/$defs/a"}]},
               "c": {"type": "string"}}, "$ref": "#/$defs/a"},  # c is met late, and ends it
]
NOT_FINITE = [
    {"$ref": "#"},
    False,
    {"anyOf": []},
    {"type": "array", "minItems": 2, "items": {"$ref": "#"}},
    {"type": "array", "prefixItems": [{"$ref": "#"}], "minItems": 1},
    {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]},
    {"type": "object", "required": ["a"], "additionalProperties": {"$ref": "#"}},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
     "$ref": "#/$defs/a"},
    {"type": "object", "properties": {"a": {"anyOf": [False, {"$ref": "#"}]}},
     "required": ["a"]},
]


@pytest.mark.parametrize("schema", FINITE, ids=range(len(FINITE)))
def test_schemas_with_a_finite_document_pass(schema):
    check_finite(schema, "response_format")


@pytest.mark.parametrize("schema", NOT_FINITE, ids=range(len(NOT_FINITE)))
def test_schemas_no_finite_document_satisfies_are_refused(schema):
    with pytest.raises(InvalidRequestError, match="no finite JSON document") as refused:
        check_finite(schema, "response_format.json_schema.schema")
    assert refused.value.field == "response_format.json_schema.schema"
