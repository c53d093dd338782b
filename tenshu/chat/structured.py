"""Structured output: JSON schemas and grammars compiled for one model, for constrained decoding.

The work is done by llguidance, chosen over xgrammar by measurement (docs/benchmarks.md). On a
152k-token vocabulary on CPU, llguidance compiles a schema in about a millisecond where xgrammar
takes 36 ms to over a second. Its masks cost 27-54 us per row against 220-290 us. And it is an
8 MB wheel with no dependencies, where xgrammar brings triton (1 GB).

A `Grammar` is compiled once per distinct grammar text (an LRU cache) and hands each sequence
its own matcher through `new()`, which is what the engine's sampler asks for
(`tenshu.engine.sampling.ConstraintFactory`).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch
import torch

from tenshu.core.errors import InvalidRequestError

# Compact JSON: a small model given free whitespace can spend its whole budget on newlines.
JSON_OPTIONS = {"whitespace_flexible": False}
# Tool schemas come from clients (Claude Code sends ~20): keywords llguidance cannot enforce
# (uniqueItems, propertyNames, not, if/then, ...) are relaxed rather than failing the request.
LENIENT_JSON_OPTIONS = JSON_OPTIONS | {"lenient": True}

_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[([^\]]*)\]")
_CACHE_SIZE = 256


class Matcher:
    """One sequence's position in a grammar (the engine's Constraint)."""

    __slots__ = ("_m",)

    def __init__(self, matcher: llguidance.LLMatcher):
        self._m = matcher

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        llguidance.torch.fill_next_token_bitmask(self._m, bitmask, row)

    def accept(self, token: int) -> bool:
        return self._m.consume_token(token)

    def finished(self) -> bool:
        return self._m.is_stopped() and not self._m.is_error()


class Grammar:
    """A compiled grammar (the engine's ConstraintFactory); `new()` starts a sequence on it."""

    def __init__(self, prototype: llguidance.LLMatcher, text: str):
        self._prototype = prototype
        self.text = text

    def new(self) -> Matcher:
        return Matcher(self._prototype.deep_copy())


class GrammarCompiler:
    """Grammars for one tokenizer. Building llguidance's view of a large vocabulary takes about
    a second, so it happens on first use, not at model load."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: list[int]):
        self.hf_tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = list(eos_token_ids)
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._cache: OrderedDict[str, Grammar] = OrderedDict()
        self._memo: dict[Any, Any] = {}
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.hf.from_tokenizer(
                    self.hf_tokenizer, n_vocab=self._vocab_size, eos_token=self._eos
                )
            return self._tokenizer

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """A value derived from this tokenizer, made once (e.g. a format's special token ids)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def json_schema(self, schema: Any, *, field: str = "response_format") -> Grammar:
        """A grammar for JSON documents valid under `schema`, objects closed as `closed_objects`
        says. A schema using a keyword that cannot be enforced is refused (400) with the keyword
        and where it is."""
        if not isinstance(schema, dict | bool):
            raise InvalidRequestError("the JSON schema must be an object", field=field)
        try:
            text = llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(closed_objects(schema)), defaults=JSON_OPTIONS
            )
        except ValueError as exc:
            raise InvalidRequestError(f"the JSON schema is not valid: {exc}", field=field) from exc
        return self._compile(text, field, schema)

    def json_object(self) -> Grammar:
        """Any JSON object (OpenAI's json_object mode, Ollama's format "json")."""
        return self.json_schema({"type": "object"})

    def lark(self, grammar: str, *, field: str = "grammar") -> Grammar:
        """A grammar in llguidance's Lark dialect (which can embed `%json{...}` schemas)."""
        return self._compile(llguidance.LLMatcher.grammar_from_lark(grammar), field, None)

    def _compile(self, text: str, field: str, schema: Any) -> Grammar:
        with self._lock:
            grammar = self._cache.get(text)
            if grammar is not None:
                self._cache.move_to_end(text)
                return grammar
        matcher = llguidance.LLMatcher(self.tokenizer, text, log_level=0)
        if matcher.is_error():
            raise InvalidRequestError(_explain(matcher.get_error(), schema), field=field)
        grammar = Grammar(matcher, text)
        with self._lock:
            self._cache[text] = grammar
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return grammar


_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
_OPEN_KEYS = ("additionalProperties", "patternProperties", "unevaluatedProperties")


def closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object schema that lists its
    properties and says nothing about others (a copy; the client's schema is not changed).

    JSON Schema allows unlisted keys by default, and a model allowed them will write them: a
    chatty small model forced to call `nap(minutes)` went on past the minutes with an invented
    key until max_tokens. Generated JSON keeps to the keys the schema names, as xgrammar's and
    OpenAI's strict modes do; a schema that wants more says so with additionalProperties.
    """
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed_objects(s) for name, s in out[key].items()}
    for key in (*_SUBSCHEMA_LISTS, *_SUBSCHEMAS):
        if isinstance(out.get(key), dict | list):
            out[key] = closed_objects(out[key])
    if "properties" in out and not any(k in out for k in _OPEN_KEYS):
        out["additionalProperties"] = False
    return out


def _explain(error: str, schema: Any) -> str:
    found = _UNIMPLEMENTED.search(error)
    if not found or schema is None:
        return f"the grammar cannot be used: {error}"
    keys = [k.strip().strip('"') for k in found.group(1).split(",") if k.strip()]
    where = [f"{k!r} (at {_pointer(schema, k) or '/'})" for k in keys]
    return (
        f"the JSON schema uses {', '.join(where)}, which structured output does not support; "
        "remove the keyword or express the rule with supported ones (type, properties, "
        "required, additionalProperties, items, minItems/maxItems, enum, const, anyOf, "
        "$defs/$ref, minimum/maximum, minLength/maxLength, pattern, format)"
    )


_NAMED = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


def _pointer(node: Any, key: str, path: str = "", named: bool = False) -> str | None:
    """The JSON pointer of the first schema in `node` that uses keyword `key` (the names of
    properties and definitions are not keywords)."""
    if isinstance(node, dict):
        if key in node and not named:
            return path
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return None
    for k, child in items:
        found = _pointer(child, key, f"{path}/{k}", k in _NAMED and not named)
        if found is not None:
            return found
    return None
