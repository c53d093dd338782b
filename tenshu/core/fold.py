"""A reply's ChatEvents folded back into its content: one list of blocks per choice.

What a non-streaming response body is made of (protocols/anthropic_encode.py) and what a
recorded conversation turn keeps (tenshu/conversations.py). Text and thinking deltas are
joined; a tool call's arguments are its BlockStop's `input` when the backend parsed them, else
its streamed JSON, parsed here.
"""

from __future__ import annotations

from dataclasses import replace

from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatEvent,
    MessageFinish,
    MessageStart,
)
from tenshu.core.messages import (
    Block,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    loads_arguments,
)


class Fold:
    def __init__(self) -> None:
        self.start: MessageStart | None = None
        self.blocks: dict[int, dict[int, Block]] = {}  # choice -> block index -> block
        self.finish: dict[int, MessageFinish] = {}  # choice -> its finish
        # (choice, index) of tool calls whose arguments are not a JSON object: their text
        self.bad_arguments: dict[tuple[int, int], str] = {}
        self._json: dict[tuple[int, int], str] = {}

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, BlockDelta):  # the most frequent, first
            block = self.blocks[event.choice][event.index]
            if isinstance(block, TextBlock):
                block.text += event.text
            elif isinstance(block, ThinkingBlock):
                block.thinking += event.text
            elif event.partial_json:
                where = (event.choice, event.index)
                self._json[where] = self._json.get(where, "") + event.partial_json
        elif isinstance(event, BlockStart):
            block = replace(event.block)  # the event's block only names it: a fresh one
            if isinstance(block, ToolUseBlock):
                block.input = dict(block.input)
            self.blocks.setdefault(event.choice, {})[event.index] = block
        elif isinstance(event, BlockStop):
            block = self.blocks[event.choice][event.index]
            where = (event.choice, event.index)
            if isinstance(block, ToolUseBlock) and event.input is not None:
                block.input = event.input
            elif isinstance(block, ToolUseBlock) and self._json.get(where):
                try:
                    value = loads_arguments(self._json[where])
                except ValueError:
                    value = None
                if isinstance(value, dict):
                    block.input = value
                else:
                    self.bad_arguments[where] = self._json[where]
        elif isinstance(event, MessageStart):
            self.start = event
        elif isinstance(event, MessageFinish):
            self.finish[event.choice] = event

    def content(self, choice: int = 0) -> list[Block]:
        blocks = self.blocks.get(choice, {})
        return [blocks[i] for i in sorted(blocks)]

    def messages(self) -> list[Message]:
        """The assistant's message for each choice, in choice order."""
        choices = sorted(set(self.blocks) | set(self.finish))
        return [Message("assistant", self.content(c)) for c in choices]
