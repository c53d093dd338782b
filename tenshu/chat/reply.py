"""The shape of a reply: the grammar it must follow, and its text cut into content blocks.

`output_shape` decides from a request what is enforced: a forced tool call (tool_choice
required or a named tool) is a grammar over the model's own tool-call syntax; a response_format
is a JSON-schema grammar; tools with tool_choice auto are not enforced but parsed, so a call the
model makes is still recognised. `Reply` turns one choice's streamed text into the ChatEvent
blocks every protocol encodes: text blocks and tool_use blocks, by index.

A tool call is sent whole once it is complete, forced or not: its start, its arguments in one
delta, its stop. A call that max_tokens cuts short is sent as the text it was, so no answer,
streamed or not, carries a call whose arguments do not parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tenshu.chat.structured import Grammar, GrammarCompiler, check_finite
from tenshu.chat.tool_parser import Call, TextPiece, ToolCallParser
from tenshu.chat.tools import ToolFormat, marker_token_ids, special_marker_ids, tool_call_grammar
from tenshu.core.errors import InvalidRequestError
from tenshu.core.events import BlockDelta, BlockStart, BlockStop, ChatEvent, TokenLogprob
from tenshu.core.messages import TextBlock, ToolSpec, ToolUseBlock
from tenshu.core.request import ChatRequest, ToolChoice


@dataclass
class OutputShape:
    grammar: Grammar | None = None
    tools: list[ToolSpec] = field(default_factory=list)  # whose calls are read from the reply
    fmt: ToolFormat | None = None
    # the call markers' token ids: kept in the text, where every other special token is dropped
    markers: frozenset[int] = frozenset()

    def parser(self) -> ToolCallParser | None:
        if not self.tools or self.fmt is None:
            return None
        return ToolCallParser(self.fmt, self.tools)


def output_shape(request: ChatRequest, grammars: GrammarCompiler, fmt: ToolFormat) -> OutputShape:
    choice = request.tool_choice or ToolChoice("auto")
    tools = request.tools if choice.mode != "none" else []
    markers = grammars.memo(("marker ids", fmt), lambda: frozenset(marker_token_ids(
        fmt, grammars.hf_tokenizer).values())) if tools else frozenset()
    if tools and choice.mode in ("required", "tool"):
        for i, tool in enumerate(tools):  # a forced call must be able to end
            if choice.mode == "required" or tool.name == choice.name:
                check_finite(tool.parameters, f"tools.{i}")
        special = grammars.memo(("markers", fmt), lambda: special_marker_ids(
            fmt, grammars.hf_tokenizer, grammars.tokenizer))
        grammar = grammars.lark(tool_call_grammar(fmt, tools, choice, special), field="tools")
        return OutputShape(grammar, tools, fmt, markers)
    grammar = response_grammar(request.response_format, grammars)
    if grammar is not None:
        return OutputShape(grammar)  # the answer is the JSON document; no calls are read
    return OutputShape(None, tools, fmt, markers)


def response_grammar(response_format: dict | None, grammars: GrammarCompiler) -> Grammar | None:
    if not response_format or response_format.get("type") == "text":
        return None
    if response_format.get("type") == "json_object":
        return grammars.json_object()
    spec = response_format.get("json_schema") or {}
    if "schema" not in spec:
        raise InvalidRequestError("response_format json_schema needs a schema",
                                  field="response_format.json_schema.schema")
    return grammars.json_schema(spec["schema"], field="response_format.json_schema.schema")


class Reply:
    """One choice's content blocks, opened and closed as text and tool calls arrive.

    Whitespace around tool calls (the newline between two calls, say) is not made into text
    blocks of its own; it is kept only if more text follows it.
    """

    def __init__(self, choice: int, parser: ToolCallParser | None):
        self.choice = choice
        self.parser = parser
        self.index = -1
        self.open: str | None = None  # "text" or "tool"
        self.calls = 0
        self._space = ""

    def add(self, text: str, logprobs: list[TokenLogprob] | None = None) -> list[ChatEvent]:
        if self.parser is None:
            return self._text(text, logprobs, keep_space=True)
        events: list[ChatEvent] = []
        for piece in self.parser.feed(text):
            events += self._piece(piece)
        if logprobs:
            for event in events:
                if isinstance(event, BlockDelta) and not event.partial_json:
                    event.logprobs = logprobs
                    break
        return events

    def close(self) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        if self.parser is not None:
            for piece in self.parser.finish():
                events += self._piece(piece)
        if self.index < 0:  # an empty reply still has its (empty) text block
            events += self._open("text", TextBlock(""))
        if self.open is not None:
            events.append(BlockStop(self.index, choice=self.choice))
            self.open = None
        return events

    def _piece(self, piece) -> list[ChatEvent]:
        if isinstance(piece, TextPiece):
            return self._text(piece.text, None, keep_space=False)
        if isinstance(piece, Call):
            self._space = ""
            self.calls += 1
            events = self._open("tool", ToolUseBlock(piece.id, piece.name, {}))
            self.open = None
            return [*events,
                    BlockDelta(self.index, partial_json=piece.arguments, choice=self.choice),
                    BlockStop(self.index, choice=self.choice, input=piece.input)]
        raise TypeError(f"unknown piece {piece!r}")

    def _text(self, text: str, logprobs, *, keep_space: bool) -> list[ChatEvent]:
        if not keep_space and self.open != "text":
            text = self._space + text
            if not text.strip():
                self._space = text
                return []
            self._space = ""
        events = [] if self.open == "text" else self._open("text", TextBlock(""))
        if text or logprobs:
            events.append(BlockDelta(self.index, text=text, logprobs=logprobs, choice=self.choice))
        return events

    def _open(self, kind: str, block) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        if self.open is not None:
            events.append(BlockStop(self.index, choice=self.choice))
        self.index += 1
        self.open = kind
        events.append(BlockStart(self.index, block, choice=self.choice))
        return events
