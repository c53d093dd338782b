"""Reply: a choice's streamed text cut into the content blocks every protocol encodes."""

from __future__ import annotations

import json

from tenshu.chat.reply import Reply
from tenshu.chat.tool_parser import ToolCallParser
from tenshu.chat.tools import QWEN
from tenshu.core.events import BlockDelta, BlockStart, BlockStop
from tenshu.core.messages import TextBlock, ToolSpec, ToolUseBlock

TOOLS = [ToolSpec("f", "", {"type": "object"}), ToolSpec("g", "", {"type": "object"})]
CALL_F = '<tool_call>\n{"name": "f", "arguments": {"a": [1, "}"]}}\n</tool_call>'
CALL_G = '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'


def blocks(events) -> list:
    """(kind, text or arguments) per block, in index order, checking the event grammar."""
    out, open_index = [], None
    for e in events:
        if isinstance(e, BlockStart):
            assert open_index is None and e.index == len(out)
            open_index = e.index
            kind = "text" if isinstance(e.block, TextBlock) else e.block.name
            assert isinstance(e.block, TextBlock | ToolUseBlock)
            out.append([kind, ""])
        elif isinstance(e, BlockDelta):
            assert e.index == open_index
            out[-1][1] += e.text or e.partial_json
        elif isinstance(e, BlockStop):
            assert e.index == open_index
            open_index = None
    assert open_index is None
    return [tuple(b) for b in out]


def run(reply: Reply, text: str, step: int) -> list:
    events = []
    for i in range(0, len(text), step):
        events += reply.add(text[i:i + step])
    return events + reply.close()


def test_text_then_parallel_calls_become_one_block_each():
    text = f"Let me check.\n{CALL_F}\n{CALL_G}\n"
    for step in (1, 3, 7, len(text)):
        reply = Reply(0, ToolCallParser(QWEN, TOOLS))
        got = blocks(run(reply, text, step))
        assert [k for k, _ in got] == ["text", "f", "g"]
        assert got[0][1] == "Let me check."
        assert json.loads(got[1][1]) == {"a": [1, "}"]} and json.loads(got[2][1]) == {}
        assert reply.calls == 2


def test_a_reply_with_only_whitespace_around_a_call_has_no_text_block():
    reply = Reply(0, ToolCallParser(QWEN, TOOLS))
    assert [k for k, _ in blocks(run(reply, f"\n\n{CALL_G}\n", 2))] == ["g"]


def test_an_empty_reply_still_has_its_text_block():
    for parser in (None, ToolCallParser(QWEN, TOOLS)):
        assert blocks(Reply(0, parser).close()) == [("text", "")]


def test_a_call_cut_short_is_sent_as_text_and_not_counted():
    """max_tokens ends the reply inside the second call: the first is a call, the rest text."""
    text = f"{CALL_F}\n{CALL_G[:30]}"
    for step in (1, 5, len(text)):
        reply = Reply(0, ToolCallParser(QWEN, TOOLS))
        events = run(reply, text, step)
        assert blocks(events) == [("f", '{"a": [1, "}"]}'), ("text", CALL_G[:30])]
        assert reply.calls == 1
        (stop,) = [e for e in events if isinstance(e, BlockStop) and e.input is not None]
        assert stop.input == {"a": [1, "}"]}


def test_without_tools_text_is_passed_through_untouched():
    reply = Reply(2, None)
    events = run(reply, "  spaced  <tool_call> out ", 4)
    assert blocks(events) == [("text", "  spaced  <tool_call> out ")]
    assert all(e.choice == 2 for e in events)
