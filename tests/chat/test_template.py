"""Prompts with tools: through each family's own template, and in tenshu's generic format for a
template that knows no tools."""

from __future__ import annotations

import json

import pytest

from tenshu.chat.template import render_prompt
from tenshu.core.errors import InvalidRequestError
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tests.chat.conftest import OTHER_TEMPLATE, TEMPLATES, make_tokenizer

TOOLS = [
    ToolSpec("get_weather", "Current weather in a city.", {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    ToolSpec("get_time", "The time now."),
]

HISTORY = [
    Message.of("system", "You are terse."),
    Message.of("user", "Weather in Paris?"),
    Message("assistant", [
        TextBlock("Let me check."),
        ToolUseBlock("toolu_01A", "get_weather", {"city": "Paris"}),
        ToolUseBlock("toolu_01B", "get_time", {}),
    ]),
    Message("user", [
        ToolResultBlock("toolu_01A", [TextBlock("18°C, sunny")]),
        ToolResultBlock("toolu_01B", [TextBlock("clock stopped")], is_error=True),
        TextBlock("And in Oslo?"),
    ]),
]


def prompt(template: str, messages=HISTORY, tools=TOOLS) -> str:
    tokenizer = make_tokenizer(template)
    return tokenizer.decode(render_prompt(tokenizer, messages, tools))


def test_generic_format_describes_the_tools_in_the_system_turn():
    text = prompt(TEMPLATES["generic"])
    system = text[: text.index("<|im_end|>")]
    assert system.startswith("<|im_start|>system\nYou are terse.\n\n# Tools")
    for tool in TOOLS:
        listed = {"name": tool.name, "description": tool.description,
                  "parameters": tool.parameters}
        assert json.dumps(listed, ensure_ascii=False) in system
    assert '<tool_call>\n{"name": "<function name>", "arguments": ' in system  # the syntax
    assert text.endswith("<|im_start|>assistant\n")


def test_generic_format_writes_the_history_calls_and_results_as_text():
    text = prompt(TEMPLATES["generic"])
    assert (
        "<|im_start|>assistant\nLet me check.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><|im_end|>'
    ) in text
    assert (
        "<|im_start|>user\n<tool_response>\n18°C, sunny\n</tool_response>\n"
        "<tool_response>\nError: clock stopped\n</tool_response>\nAnd in Oslo?<|im_end|>"
    ) in text
    assert "<|im_start|>tool" not in text  # such templates know no tool role


def test_generic_format_adds_a_system_turn_and_needs_tools_only_to_describe_them():
    text = prompt(TEMPLATES["generic"], HISTORY[1:])
    assert text.startswith("<|im_start|>system\n# Tools\n")
    without = prompt(TEMPLATES["generic"], tools=[])
    assert "# Tools" not in without and "<tool_response>\n18°C" in without


def test_qwen_template_gets_tools_and_calls_with_arguments_as_json():
    text = prompt(TEMPLATES["qwen"])
    assert "<tools>" in text and '"name": "get_weather"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n' in text
    assert "<tool_response>\n18°C, sunny\n</tool_response>" in text
    assert "# Tools\n\n<tools>" in text  # the template's own words, not tenshu's


def test_llama3_template_gets_parameters_joined_by_semicolons():
    text = prompt(TEMPLATES["llama3"])
    assert "Environment: ipython" in text
    assert ('{"name": "get_weather", "parameters": {"city": "Paris"}}; '
            '{"name": "get_time", "parameters": {}}<|eom_id|>') in text
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n18°C, sunny" in text


def test_mistral_template_gets_stable_nine_character_call_ids():
    text = prompt(TEMPLATES["mistral"], HISTORY[1:])
    calls = json.loads(text[text.index("[TOOL_CALLS]") + 12 : text.index("<|eos|>")])
    ids = [c["id"] for c in calls]
    assert all(len(i) == 9 and i.isalnum() for i in ids)
    results = text.split("[TOOL_RESULTS]")[1:]
    assert [json.loads(r[: r.index("[/TOOL_RESULTS]")])["call_id"] for r in results] == ids
    assert prompt(TEMPLATES["mistral"], HISTORY[1:]) == text  # same ids on every request


def test_a_template_with_its_own_tool_syntax_renders_the_tools_itself():
    text = prompt(OTHER_TEMPLATE)
    assert "Functions: get_weather get_time" in text
    assert "# Tools" not in text


def test_a_final_assistant_turn_is_continued():
    messages = [Message.of("user", "Hi"), Message.of("assistant", "Hello, I")]
    text = prompt(TEMPLATES["generic"], messages)
    assert text.endswith("<|im_start|>assistant\nHello, I")


def test_images_are_refused_in_the_generic_format_too():
    messages = [Message("user", [ImageBlock(media_type="image/png", data="AAAA")])]
    with pytest.raises(InvalidRequestError):
        prompt(TEMPLATES["generic"], messages)


# a call whose arguments a client sent back as text that is not a JSON object (cut short)
CUT = '{"city": "Par'
BROKEN = [Message.of("user", "Weather in Paris?"),
          Message("assistant", [ToolUseBlock.from_arguments("call_1", "get_weather", CUT)]),
          Message("user", [ToolResultBlock("call_1", [TextBlock("no city 'Par'")])])]


def test_unparsed_arguments_in_the_history_reach_the_model_as_written():
    (call,) = BROKEN[1].content
    assert (call.input, call.unparsed) == ({}, CUT)
    generic = prompt(TEMPLATES["generic"], BROKEN)
    assert f'<tool_call>\n{{"name": "get_weather", "arguments": {CUT}}}\n</tool_call>' in generic
    # a template that writes arguments with `tojson` gets a string, and writes a JSON string
    qwen = prompt(TEMPLATES["qwen"], BROKEN)
    assert f'"arguments": {json.dumps(CUT)}' in qwen


def test_arguments_text_is_parsed_when_it_is_a_json_object():
    assert ToolUseBlock.from_arguments("c", "f", ' {"a": 1} ') == ToolUseBlock("c", "f", {"a": 1})
    assert ToolUseBlock.from_arguments("c", "f", "") == ToolUseBlock("c", "f", {})
    for text in ("[1, 2]", "null", "{oops"):
        assert ToolUseBlock.from_arguments("c", "f", text).unparsed == text
