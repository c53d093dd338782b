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
        _fill_bitmask()(self._m, bitmask, row)

    def accept(self, token: int) -> bool:
        return self._m.consume_token(token)

    def finished(self) -> bool:
        return self._m.is_stopped() and not self._m.is_error()


def _fill_bitmask():
    """llguidance.torch's mask filler, imported on first use: the module compiles a kernel with
    torch.compile as it is imported, which brings in dynamo and inductor (about 2 s of a
    server's start) for a function tenshu does not call."""
    import llguidance.torch

    return llguidance.torch.fill_next_token_bitmask


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
        check_finite(schema, field)
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
        _check_can_start(matcher, field)
        grammar = Grammar(matcher, text)
        with self._lock:
            self._cache[text] = grammar
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return grammar


def _check_can_start(matcher: llguidance.LLMatcher, field: str) -> None:
    """Refuse a grammar that allows no first token (it would answer with nothing at all, as
    `{"$ref": "#"}` did): llguidance finds out when it computes the first mask."""
    probe = matcher.deep_copy()
    probe.compute_bitmask()
    if probe.is_error() or (probe.is_stopped() and not probe.is_accepting()):
        why = probe.get_error() if probe.is_error() else "it allows no output"
        raise InvalidRequestError(f"the grammar cannot be satisfied: {why}", field=field)


def check_finite(schema: Any, field: str) -> None:
    """Refuse a JSON schema that no finite document satisfies: one that requires itself with no
    way out (`{"type": "array", "items": {"$ref": "#"}, "minItems": 1}` is `[[[[...` forever).
    The model would write until max_tokens and the reply would not be JSON."""
    if not _finite_schema(schema):
        raise InvalidRequestError(
            "the JSON schema is satisfied by no finite JSON document: it requires what no "
            "document has (false, an empty anyOf), or requires itself through $ref with no way "
            "out; make the recursive part optional (not required, minItems 0, or an "
            "alternative in anyOf)", field=field)


_FINITE_BUDGET = 100_000


class _TooLarge(Exception):
    """The schema is too large (or too tangled) to judge within the budget."""


def _finite_schema(root: Any) -> bool:
    """Whether some finite JSON document can satisfy `root`, as far as its structure tells: a
    least fixpoint over its $ref targets, each unproductive until shown otherwise. Keywords
    that do not force more structure (string formats, bounds) are taken as satisfiable; the
    grammar compiler refuses the contradictions among those itself."""
    productive: dict[str, bool] = {}  # $ref -> shown to have a finite instance
    budget = [_FINITE_BUDGET]  # subschemas left to look at: a huge schema is not judged here

    def target(ref: str) -> Any:
        node = root
        for part in ref.removeprefix("#").split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return True  # not resolvable here: the compiler says what is wrong with it
        return node

    def finite(s: Any) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLarge
        if s is False:
            return False
        if not isinstance(s, dict):
            return True
        ref = s.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            productive.setdefault(ref, False)
            if not productive[ref]:
                return False
        for key in ("anyOf", "oneOf"):
            if isinstance(s.get(key), list) and not any(finite(x) for x in s[key]):
                return False
        if isinstance(s.get("allOf"), list) and not all(finite(x) for x in s["allOf"]):
            return False
        kinds = s.get("type")
        kinds = set(kinds) if isinstance(kinds, list) else {kinds}
        if kinds == {"array"}:
            prefix = s.get("prefixItems") if isinstance(s.get("prefixItems"), list) else []
            least = s.get("minItems", 0) if isinstance(s.get("minItems"), int) else 0
            if not all(finite(x) for x in prefix[:least]):
                return False
            if least > len(prefix) and not finite(s.get("items", True)):
                return False
        if kinds == {"object"} and isinstance(s.get("required"), list):
            properties = s.get("properties") if isinstance(s.get("properties"), dict) else {}
            other = s.get("additionalProperties", True)
            if not all(finite(properties.get(name, other)) for name in s["required"]):
                return False
        return True

    try:
        return _least_fixpoint(root, productive, finite, target)
    except (_TooLarge, RecursionError):
        return True  # the grammar compiler's own limits apply


def _least_fixpoint(root, productive: dict, finite, target) -> bool:
    while True:
        answer = finite(root)
        seen = len(productive)
        # a snapshot: looking at a target may meet $refs not seen before, looked at next round
        grown = [ref for ref, known in list(productive.items())
                 if not known and finite(target(ref))]
        if not grown and len(productive) == seen:
            return answer
        productive.update(dict.fromkeys(grown, True))


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
