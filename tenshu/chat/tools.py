"""Tool calling: each model family's call syntax and the grammar that forces a call (the
streaming parser that reads calls back out is in tool_parser.py).

`detect_format` reads the chat template once per model. For a request with tools, `render_prompt`
(template.py) shows them to the model; when tool_choice demands a call, `tool_call_grammar` gives
the llguidance grammar that constrains decoding; `ToolCallParser` reads the output as it streams.

Syntaxes (what the model writes; NAME is a tool's name, ARGS a JSON object):

    qwen     <tool_call>\\n{"name": NAME, "arguments": ARGS}\\n</tool_call>, calls joined by "\\n"
             (Qwen2.5, Qwen3, Hermes)
    llama3   {"name": NAME, "parameters": ARGS}, calls joined by "; ", optionally after
             <|python_tag|> (Llama 3.1-3.3 JSON tool calling)
    mistral  [TOOL_CALLS][{"name": NAME, "arguments": ARGS}, ...]
    generic  as qwen.

The generic format is tenshu's own, for models whose chat template knows nothing of tools (the
template never mentions `tools`). Tenshu then describes the tools itself, in a system text
(`describe_tools`): one JSON object per tool (name, description, parameters) inside
<tools></tools>, and the instruction to call a tool by writing

    <tool_call>
    {"name": "NAME", "arguments": {...}}
    </tool_call>

one block per call. Past calls are written back in that syntax in the assistant's turns, and each
tool result goes back in a user turn as <tool_response>\\nRESULT\\n</tool_response>. A template
that does render tools but in a syntax tenshu does not know keeps rendering them itself; its
output is then read (and forced) in the generic syntax.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import llguidance

from tenshu.chat.structured import closed_objects
from tenshu.core.errors import InvalidRequestError
from tenshu.core.messages import ToolSpec
from tenshu.core.request import ToolChoice


@dataclass(frozen=True)
class ToolFormat:
    """One call syntax. `in_template`: the chat template renders tools and calls itself."""

    name: str
    args_key: str  # the key of the arguments object in a call
    marker: str  # opens a call (qwen, generic) or a list of calls (llama3, mistral)
    end: str = ""  # closes one call (qwen, generic)
    in_template: bool = True

    @property
    def markers(self) -> tuple[str, ...]:
        """The texts that may be single special tokens of a tokenizer."""
        return (self.marker, self.end) if self.end else (self.marker,)


QWEN = ToolFormat("qwen", "arguments", "<tool_call>", "</tool_call>")
LLAMA3 = ToolFormat("llama3", "parameters", "<|python_tag|>")
MISTRAL = ToolFormat("mistral", "arguments", "[TOOL_CALLS]")
GENERIC = ToolFormat("generic", "arguments", "<tool_call>", "</tool_call>", in_template=False)
# a template that renders tools in a syntax tenshu does not know: it renders, we read generic
GENERIC_IN_TEMPLATE = ToolFormat("generic", "arguments", "<tool_call>", "</tool_call>")

_LLAMA3_SIGNS = ("<|python_tag|>", "Environment: ipython")


def detect_format(chat_template: str | None) -> ToolFormat:
    """The call syntax a chat template teaches its model."""
    text = chat_template or ""
    if "<tool_call>" in text:
        return QWEN
    if "[TOOL_CALLS]" in text:
        return MISTRAL
    if any(sign in text for sign in _LLAMA3_SIGNS):
        return LLAMA3
    if re.search(r"\btools\b", text):
        return GENERIC_IN_TEMPLATE
    return GENERIC


_ANY_OBJECT: dict[str, Any] = {"type": "object"}  # the parameters of a tool that gives none


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def call_text(fmt: ToolFormat, calls: Iterable[tuple[str, dict | str]]) -> str:
    """(name, input) calls written as the model writes them in `fmt`. An input given as text
    (arguments a client sent back that are not a JSON object) is written as that text."""
    objs = [_dumps({"name": name, fmt.args_key: args}) if isinstance(args, dict)
            else f'{{"name": {_dumps(name)}, "{fmt.args_key}": {args}}}' for name, args in calls]
    if fmt.name == "llama3":
        return "; ".join(objs)
    if fmt.name == "mistral":
        return fmt.marker + "[" + ", ".join(objs) + "]"
    return "\n".join(f"{fmt.marker}\n{o}\n{fmt.end}" for o in objs)


def result_text(text: str) -> str:
    """A tool result in the generic format."""
    return f"<tool_response>\n{text}\n</tool_response>"


def describe_tools(tools: Iterable[ToolSpec]) -> str:
    """The system text that teaches a model without tool support the generic format."""
    listed = "\n".join(
        _dumps({"name": t.name, "description": t.description,
                "parameters": t.parameters or _ANY_OBJECT})
        for t in tools
    )
    return (
        "# Tools\n\n"
        "You may call one or more of the functions below to help with the request. Each is "
        "described by a JSON object: its name, what it does, and a JSON Schema of its "
        "arguments.\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "To call a function, write a JSON object with its name and its arguments inside "
        "<tool_call></tool_call> tags:\n"
        '<tool_call>\n{"name": "<function name>", "arguments": <arguments as a JSON object>}\n'
        "</tool_call>\n"
        "For several calls, write one such block per call, one after another, and nothing "
        "after the last. Each result comes back to you inside <tool_response></tool_response> "
        "tags."
    )


# ---- grammar --------------------------------------------------------------------------------

# lenient: keywords llguidance does not implement (uniqueItems, not, if/then, ...) are ignored,
# so no client's tool list fails a request. Whitespace is bounded (an unbounded run of spaces is
# a classic way for a constrained model to loop) but both `{"a":1}` and `{"a": 1}` pass, so the
# model writes JSON as its template showed it (`tojson` puts one space after ',' and ':').
_JSON_OPTIONS = {
    "lenient": True,
    "whitespace_flexible": False,
    "item_separator": ", ?",
    "key_separator": ": ?",
}


def _rebase_refs(schema: Any, prefix: str) -> Any:
    """Local `$ref`s re-pointed at the schema's new place inside the call object."""
    if isinstance(schema, dict):
        return {
            k: (prefix + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else _rebase_refs(v, prefix))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase_refs(v, prefix) for v in schema]
    return schema


@functools.lru_cache(maxsize=1024)
def _compiles(schema_json: str) -> bool:
    # clients send the same tools with every request, so each schema is checked once
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_json)
    return not llguidance.LLMatcher.validate_grammar(grammar)


def _call_schema(fmt: ToolFormat, tool: ToolSpec) -> str:
    """The JSON Schema of one call of `tool`: its name first, so the name streams first."""
    params = closed_objects(tool.parameters or _ANY_OBJECT)
    path = f"#/properties/{fmt.args_key}"

    def schema(args: dict) -> str:
        return _dumps({
            "x-guidance": _JSON_OPTIONS,
            "type": "object",
            "properties": {"name": {"const": tool.name}, fmt.args_key: args},
            "required": ["name", fmt.args_key],
            "additionalProperties": False,
        })

    full = schema(_rebase_refs(params, path))
    # a schema llguidance cannot compile even leniently (a bad regex, a remote $ref) still gets
    # a well-formed call with some object of arguments, rather than failing the request
    return full if _compiles(full) else schema(_ANY_OBJECT)


def tool_call_grammar(
    fmt: ToolFormat,
    tools: list[ToolSpec],
    choice: ToolChoice,
    special_ids: Mapping[str, int] | None = None,
) -> str | None:
    """The llguidance Lark grammar that makes the output tool calls and nothing else, then EOS.

    "required": calls of any of `tools`, one or more if `choice.parallel` else exactly one;
    "tool": one call of `choice.name`. None for "auto" and "none", which are not constrained.
    `special_ids` maps the format's markers that are special tokens of the tokenizer to their
    ids (see `special_marker_ids`); the others are matched as text.
    """
    if choice.mode not in ("required", "tool"):
        return None
    if choice.mode == "tool":
        chosen = [t for t in tools if t.name == choice.name]
        if not chosen:
            raise InvalidRequestError(
                f"tool_choice names the tool {choice.name!r}, which is not among the request's "
                "tools; add it to tools or name one of them", field="tool_choice")
        many = False
    else:
        if not tools:
            raise InvalidRequestError(
                "tool_choice requires a tool call but the request has no tools; add tools or "
                "set tool_choice to auto", field="tool_choice")
        chosen, many = tools, choice.parallel
    ids = special_ids or {}

    def lit(text: str) -> str:
        return f"<[{ids[text]}]>" if text in ids else _dumps(text)

    if fmt.name == "llama3":
        rules = [f"start: {lit(fmt.marker)}? call" + (' ("; " call)*' if many else "")]
    elif fmt.name == "mistral":
        rules = [f'start: {lit(fmt.marker)} "[" call' + (' (", " call)*' if many else "") + ' "]"']
    else:
        rules = [
            "start: block" + (' ("\\n" block)*' if many else ""),
            f'block: {lit(fmt.marker)} "\\n" call "\\n" {lit(fmt.end)}',
        ]
    rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(chosen))))
    rules += [f"call_{i}: %json {_call_schema(fmt, t)}" for i, t in enumerate(chosen)]
    return "\n".join(rules) + "\n"


def marker_token_ids(fmt: ToolFormat, tokenizer) -> dict[str, int]:
    """The format's markers that are one token of `tokenizer`, with their ids. The detokenizer
    keeps these in the text even where they are special tokens, for the parser to see."""
    found: dict[str, int] = {}
    for marker in fmt.markers:
        ids = tokenizer.encode(marker, add_special_tokens=False)
        if len(ids) == 1:
            found[marker] = ids[0]
    return found


def special_marker_ids(fmt: ToolFormat, tokenizer, lltokenizer) -> dict[str, int]:
    """The format's markers that are one special token for llguidance, with their ids.

    llguidance treats a tokenizer's added tokens as special when they are marked special or look
    like `<...>` (Qwen's `<tool_call>` is not marked special, yet is), and a special token never
    matches grammar text: the grammar must name it by id, `<[151657]>`. (Names in angle brackets
    also work, `<|python_tag|>`, but `<[TOOL_CALLS]>` would read as an id list.)
    """
    return {marker: i for marker, i in marker_token_ids(fmt, tokenizer).items()
            if lltokenizer.is_special_token(i)}
