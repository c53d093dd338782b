"""Tool-call formats: detection from the chat template, grammars that force calls (checked with
llguidance and the test tokenizer, token by token), and the streaming parser under every way the
output can be cut into chunks."""

from __future__ import annotations

import json
import random
import re

import llguidance
import numpy as np
import pytest

from tenshu.chat.tool_parser import Call, TextPiece, ToolCallParser
from tenshu.chat.tools import (
    GENERIC,
    GENERIC_IN_TEMPLATE,
    LLAMA3,
    MISTRAL,
    QWEN,
    call_text,
    detect_format,
    special_marker_ids,
    tool_call_grammar,
)
from tenshu.core.errors import InvalidRequestError
from tenshu.core.messages import ToolSpec
from tenshu.core.request import ToolChoice
from tests.chat.conftest import OTHER_TEMPLATE, TEMPLATES

FORMATS = [QWEN, LLAMA3, MISTRAL, GENERIC]

WEATHER = ToolSpec("get_weather", "Current weather in a city.", {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
    "required": ["city"],
})
TIME = ToolSpec("get_time", "The time now.", {})
TOOLS = [WEATHER, TIME]

# What clients such as Claude Code send: draft-07 `$schema`, keywords llguidance does not
# implement, local `$ref`s, and one pattern it cannot compile at all.
CLIENT_TOOLS = [
    ToolSpec("Bash", "Run a shell command.", {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"command": {"type": "string"}, "timeout": {"type": "number"},
                       "run_in_background": {"type": "boolean"}},
        "required": ["command"],
        "additionalProperties": False,
    }),
    ToolSpec("TodoWrite", "Update the todo list.", {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"todos": {
            "type": "array",
            "uniqueItems": True,
            "items": {
                "type": "object",
                "properties": {
                    "content": {"type": "string", "minLength": 1},
                    "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                },
                "required": ["content", "status"],
                "additionalProperties": False,
            },
        }},
        "required": ["todos"],
    }),
    ToolSpec("WebFetch", "Fetch a page.", {
        "type": "object",
        "properties": {"url": {"type": "string", "format": "uri"}, "prompt": {"type": "string"}},
        "required": ["url"],
        "propertyNames": {"pattern": "^[a-z]+$"},
        "dependentRequired": {"prompt": ["url"]},
        "not": {"required": ["file"]},
        "if": {"required": ["url"]}, "then": {"required": ["prompt"]},
    }),
    ToolSpec("Convert", "Convert a temperature.", {
        "$defs": {"Unit": {"enum": ["C", "F"]}},
        "type": "object",
        "properties": {"to": {"$ref": "#/$defs/Unit"}},
        "required": ["to"],
    }),
    ToolSpec("Odd", "A schema llguidance cannot compile.", {
        "type": "object", "properties": {"x": {"type": "string", "pattern": "(?<=a)b"}},
    }),
]

PARIS = {"city": "Paris", "unit": "C"}


# ---- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_detects_each_family_from_its_template(name):
    assert detect_format(TEMPLATES[name]).name == name


def test_a_template_without_tools_gets_the_generic_format_described_by_tenshu():
    assert detect_format(TEMPLATES["generic"]) is GENERIC
    assert not GENERIC.in_template
    assert detect_format(None) is GENERIC


def test_a_template_with_tools_in_an_unknown_syntax_renders_them_itself():
    fmt = detect_format(OTHER_TEMPLATE)
    assert fmt is GENERIC_IN_TEMPLATE
    assert fmt.in_template and fmt.name == "generic"


# ---- grammars -------------------------------------------------------------------------------


def allowed_tokens(matcher) -> set[int]:
    words = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint32)
    return set(np.nonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))[0].tolist())


def compile_grammar(tokenizers, fmt, tools, choice, *, markers=False):
    tok, lltok = tokenizers[markers]
    special = special_marker_ids(fmt, tok, lltok) if markers else None
    grammar = tool_call_grammar(fmt, tools, choice, special)
    assert grammar is not None
    assert llguidance.LLMatcher.validate_grammar(grammar, lltok) == ""
    return grammar


def accepts(tokenizers, grammar, text, *, markers=False, last=False) -> bool:
    """Whether `text`, fed token by token, completes the grammar, which EOS then ends. `last`:
    the grammar allows nothing more, so EOS is the only token left."""
    tok, lltok = tokenizers[markers]
    matcher = llguidance.LLMatcher(lltok, grammar)
    for token in tok.encode(text, add_special_tokens=False):
        if not matcher.consume_token(token) or matcher.is_error():
            return False
    if not matcher.is_accepting():
        return False
    allowed = allowed_tokens(matcher)
    assert allowed == {tok.eos_token_id} if last else tok.eos_token_id in allowed
    assert matcher.consume_token(tok.eos_token_id)
    assert matcher.is_stopped()
    return True


def test_auto_and_none_are_not_constrained():
    for mode in ("auto", "none"):
        assert tool_call_grammar(QWEN, TOOLS, ToolChoice(mode)) is None


def test_a_choice_the_tools_cannot_meet_is_the_clients_error():
    with pytest.raises(InvalidRequestError) as err:
        tool_call_grammar(QWEN, TOOLS, ToolChoice("tool", name="get_news"))
    assert err.value.field == "tool_choice" and "get_news" in str(err.value)
    with pytest.raises(InvalidRequestError):
        tool_call_grammar(QWEN, [], ToolChoice("required"))


@pytest.mark.parametrize("markers", [False, True], ids=["text-markers", "token-markers"])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_required_accepts_one_or_more_valid_calls_then_eos(tokenizers, fmt, markers):
    grammar = compile_grammar(tokenizers, fmt, TOOLS, ToolChoice("required"), markers=markers)
    one = call_text(fmt, [("get_weather", PARIS)])
    two = call_text(fmt, [("get_weather", {"city": "Oslo"}), ("get_time", {})])
    assert accepts(tokenizers, grammar, one, markers=markers)
    assert accepts(tokenizers, grammar, two, markers=markers)
    compact = one.replace(", ", ",").replace(": ", ":")  # the model may also write JSON tight
    assert accepts(tokenizers, grammar, compact, markers=markers)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_grammar_rejects_what_is_not_a_valid_call(tokenizers, fmt):
    grammar = compile_grammar(tokenizers, fmt, TOOLS, ToolChoice("required"))
    good = call_text(fmt, [("get_weather", PARIS)])
    for bad in [
        call_text(fmt, [("get_news", {})]),  # no such tool
        call_text(fmt, [("get_weather", {"city": 7})]),  # city must be a string
        call_text(fmt, [("get_weather", {"unit": "C"})]),  # city is required
        call_text(fmt, [("get_weather", {"city": "Paris", "unit": "K"})]),  # not in the enum
        "Sure! " + good,  # text before the call
        good + " Done.",  # text after it
        good.replace(", ", ",   "),  # unbounded whitespace
    ]:
        assert not accepts(tokenizers, grammar, bad), bad


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_a_single_call_when_parallel_calls_are_off_or_one_tool_is_named(tokenizers, fmt):
    two = call_text(fmt, [("get_weather", PARIS), ("get_time", {})])
    serial = compile_grammar(tokenizers, fmt, TOOLS, ToolChoice("required", parallel=False))
    assert accepts(tokenizers, serial, call_text(fmt, [("get_time", {})]), last=True)
    assert not accepts(tokenizers, serial, two)
    named = compile_grammar(tokenizers, fmt, TOOLS, ToolChoice("tool", name="get_time"))
    assert accepts(tokenizers, named, call_text(fmt, [("get_time", {})]), last=True)
    assert not accepts(tokenizers, named, call_text(fmt, [("get_weather", PARIS)]))


def test_client_tool_schemas_compile_leniently(tokenizers):
    grammar = compile_grammar(tokenizers, QWEN, CLIENT_TOOLS, ToolChoice("required"))

    def call(name, args):
        return accepts(tokenizers, grammar, call_text(QWEN, [(name, args)]))

    assert call("Bash", {"command": "ls -la", "timeout": 1000})
    assert not call("Bash", {"command": "ls", "cwd": "/"})  # additionalProperties: false
    todo = {"content": "write tests", "status": "pending"}
    assert call("TodoWrite", {"todos": [todo, todo]})  # uniqueItems is ignored, not fatal
    assert not call("TodoWrite", {"todos": [{"content": "x", "status": "done"}]})
    assert call("WebFetch", {"url": "https://example.com/a", "prompt": "summarise"})
    assert call("Convert", {"to": "F"})  # the $ref still resolves inside the call object
    assert not call("Convert", {"to": "K"})
    assert call("Odd", {"y": [1]})  # an uncompilable schema falls back to any object


def test_markers_that_are_special_tokens_are_named_by_id(tokenizers):
    tok, lltok = tokenizers[True]
    ids = special_marker_ids(QWEN, tok, lltok)
    assert ids == {m: tok.convert_tokens_to_ids(m) for m in ("<tool_call>", "</tool_call>")}
    assert special_marker_ids(MISTRAL, tok, lltok) == {
        "[TOOL_CALLS]": tok.convert_tokens_to_ids("[TOOL_CALLS]")}
    assert special_marker_ids(QWEN, *tokenizers[False]) == {}  # plain text in this tokenizer
    grammar = tool_call_grammar(QWEN, TOOLS, ToolChoice("required"), ids)
    assert f"<[{ids['<tool_call>']}]>" in grammar
    # written as text instead, the marker could never match its own token
    as_text = tool_call_grammar(QWEN, TOOLS, ToolChoice("required"))
    text = call_text(QWEN, [("get_time", {})])
    assert accepts(tokenizers, grammar, text, markers=True)
    assert not accepts(tokenizers, as_text, text, markers=True)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_whatever_the_grammar_lets_a_model_write_parses_into_valid_calls(tokenizers, fmt):
    tools = [
        ToolSpec("get_weather", "", {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Oslo", 'say "hi" } </tool_call>']},
                           "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city"],
            "additionalProperties": False,
        }),
        # {"type": "object"} would let a random walk nest JSON without end
        ToolSpec("get_time", "", {"type": "object", "additionalProperties": False}),
    ]
    tok, lltok = tokenizers[False]
    grammar = compile_grammar(tokenizers, fmt, tools, ToolChoice("required"))
    rng = random.Random(0)
    for _ in range(20):  # random walks through the grammar, as a sampling model would take
        matcher = llguidance.LLMatcher(lltok, grammar)
        ids: list[int] = []
        while not matcher.is_stopped():
            token = rng.choice(sorted(allowed_tokens(matcher)))
            assert matcher.consume_token(token)
            ids.append(token)
            assert len(ids) < 2000
        if ids[-1] == tok.eos_token_id:  # else the grammar ended on its own, as after "]"
            ids.pop()
        text = tok.decode(ids)
        assert text.endswith(("}", "]", "</tool_call>"))
        calls = collect(parse(fmt, [text], tools=tools))
        assert calls and all(kind == "call" for kind, *_ in calls)
        for _, name, args, value in calls:
            assert json.loads(args) == value
            assert name == "get_time" or value["city"] in tools[0].parameters["properties"][
                "city"]["enum"]


# ---- the streaming parser -------------------------------------------------------------------


def parse(fmt, chunks, *, tools=TOOLS):
    parser = ToolCallParser(fmt, tools)
    pieces = []
    for chunk in chunks:
        pieces += parser.feed(chunk)
    return pieces + parser.finish()


def collect(pieces):
    """Pieces as [("text", text) | ("call", name, arguments text, input)], text joined."""
    out: list[tuple] = []
    for piece in pieces:
        if isinstance(piece, TextPiece):
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + piece.text)
            else:
                out.append(("text", piece.text))
        else:
            assert isinstance(piece, Call)
            assert re.fullmatch(r"call_[A-Za-z0-9]{24}", piece.id)
            out.append(("call", piece.name, piece.arguments, piece.input))
    return out


def chunkings(text: str, seed: int = 0):
    """Every split in two, one character at a time, the whole, and random cuts."""
    yield [text]
    yield list(text)
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
    rng = random.Random(seed)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(2, 12))))
        yield [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


TRICKY = {"city": 'Paris {"the" city} </tool_call> [TOOL_CALLS] ; \\', "unit": "C"}
TRICKY_JSON = json.dumps(TRICKY)

OUTPUTS = {
    "qwen": (
        f'Let me check.\n\n<tool_call>\n{{"name": "get_weather", "arguments": {TRICKY_JSON}}}\n'
        '</tool_call>\nand the time:\n<tool_call>\n{"name":"get_time","arguments":{}}\n'
        "</tool_call>\nDone <tool!"
    ),
    "llama3": (
        f'<|python_tag|>{{"name": "get_weather", "parameters": {TRICKY_JSON}}}; '
        '{"name": "get_time", "parameters": {}}'
    ),
    "mistral": (
        f'Sure.[TOOL_CALLS][{{"name": "get_weather", "arguments": {TRICKY_JSON}}}, '
        '{"name": "get_time", "arguments": {}}] ok'
    ),
}
EXPECTED = {
    "qwen": [("text", "Let me check."), ("call", "get_weather", TRICKY_JSON, TRICKY),
             ("text", "and the time:"), ("call", "get_time", "{}", {}),
             ("text", "Done <tool!")],
    "llama3": [("call", "get_weather", TRICKY_JSON, TRICKY), ("call", "get_time", "{}", {})],
    "mistral": [("text", "Sure."), ("call", "get_weather", TRICKY_JSON, TRICKY),
                ("call", "get_time", "{}", {}), ("text", "ok")],
}


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_every_chunking_gives_the_same_text_and_calls(name):
    fmt = {"qwen": QWEN, "llama3": LLAMA3, "mistral": MISTRAL}[name]
    for chunks in chunkings(OUTPUTS[name]):
        assert collect(parse(fmt, chunks)) == EXPECTED[name], chunks


def test_generic_reads_like_qwen():
    assert collect(parse(GENERIC, [OUTPUTS["qwen"]])) == EXPECTED["qwen"]


def test_llama3_calls_need_no_python_tag_but_only_open_the_output():
    text = '  {"name": "get_time", "parameters": {}}'
    for chunks in chunkings(text):
        assert collect(parse(LLAMA3, chunks)) == [("call", "get_time", "{}", {})]
    data = 'Here: {"name": "get_time", "parameters": {}}'  # JSON inside prose is prose
    assert collect(parse(LLAMA3, [data])) == [("text", data)]


def test_a_call_comes_out_whole_once_its_object_is_complete():
    parser = ToolCallParser(QWEN, TOOLS)
    assert parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa') == []
    (call,) = parser.feed('ris"}}\n</tool_call>')
    # the arguments as the model wrote them: no outer brace, no tag
    assert (call.name, call.arguments, call.input) == (
        "get_weather", '{"city": "Paris"}', {"city": "Paris"})
    assert parser.finish() == []


def test_text_is_held_back_only_while_it_may_be_a_marker():
    parser = ToolCallParser(QWEN, TOOLS)
    assert parser.feed("Hello <tool") == [TextPiece("Hello")]
    assert parser.feed("box> and") == [TextPiece(" <toolbox> and")]
    assert parser.finish() == []


@pytest.mark.parametrize("fmt, text", [
    (QWEN, 'Hi <tool_call>\n{"name": "get_news", "arguments": {}}\n</tool_call> bye'),
    (QWEN, 'Hi <tool_call>\n{"name": "get_time", "arguments": "now"}\n</tool_call>'),
    (QWEN, 'Hi <tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}\n</tool_call>'),
    (QWEN, "Use <tool_call> tags to call tools."),
    (QWEN, '<tool_call>\n{"name": get_time}\n</tool_call>'),
    (LLAMA3, '{"answer": 42, "unit": "m"} is the result'),
    (LLAMA3, "<|python_tag|>brave_search.call(query='x')"),
    (MISTRAL, '[TOOL_CALLS]{"name": "get_time", "arguments": {}}'),
])
def test_malformed_calls_in_auto_mode_come_back_as_the_text_they_were(fmt, text):
    for chunks in chunkings(text):
        assert collect(parse(fmt, chunks)) == [("text", text)], chunks


def test_any_output_parses_the_same_in_chunks_and_loses_no_text():
    fragments = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "{", "}", "[",
                 "]", '"', "\\", ":", ",", ";", " ", "\n", '"name"', '"get_time"', '"arguments"',
                 '"parameters"', "{}", "x", "1", "true", '"\\u12', "<tool"]
    rng = random.Random(1)
    for _ in range(300):
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(1, 25)))
        for fmt in (QWEN, LLAMA3, MISTRAL):
            whole = collect(parse(fmt, [text]))
            assert collect(parse(fmt, list(text))) == whole
            if all(kind == "text" for kind, *_ in whole):
                assert "".join(t for _, t in whole) == text


@pytest.mark.parametrize("fmt", [QWEN, LLAMA3, MISTRAL], ids=lambda f: f.name)
def test_a_call_cut_off_by_the_end_is_never_a_call(fmt):
    """max_tokens may end the output anywhere in a call, forced or not: a call whose object is
    complete is a call, and whatever else has arrived comes back as text, never as a call whose
    arguments do not parse."""
    calls = [("get_time", {}), ("get_weather", TRICKY)]
    whole = call_text(fmt, calls)
    objects = [json.dumps({"name": name, fmt.args_key: args}) for name, args in calls]
    ends = [whole.index(o) + len(o) for o in objects]  # where each call's object ends
    for end in range(1, len(whole)):
        text = whole[:end]
        for chunks in (list(text), [text]):
            got = collect(parse(fmt, chunks))
            made = [c for c in got if c[0] == "call"]
            assert [name for _, name, _, _ in made] == [
                name for (name, _), e in zip(calls, ends, strict=True) if end >= e], text
            for _, _, arguments, value in made:
                assert json.loads(arguments) == value
            assert all(c[1] in text for c in got if c[0] == "text")


def test_call_ids_are_unique():
    text = call_text(QWEN, [("get_time", {})] * 50)
    ids = [p.id for p in parse(QWEN, [text]) if isinstance(p, Call)]
    assert len(ids) == len(set(ids)) == 50
