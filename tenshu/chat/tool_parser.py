"""The streaming tool-call parser: model output, as it arrives, split into text and calls.

`ToolCallParser` reads one reply in a ToolFormat's syntax (see tools.py). Text comes out as soon as
it cannot be the start of a call marker; a call is held until it is complete and checked, then
comes out whole as a Call (its arguments as the model wrote them, and parsed). Whatever is not a
good call, a call cut short by max_tokens included, is given back as the text it was. This holds
for grammar-forced output too: a forced call is well formed only once it is finished, and a
call's arguments once sent cannot be taken back, so no client is ever handed a call that does not
parse (docs/structured-output.md).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tenshu.chat.tools import ToolFormat
from tenshu.core.messages import ToolSpec, loads_arguments


@dataclass(frozen=True)
class TextPiece:
    text: str


@dataclass(frozen=True)
class Call:
    """A complete call of an offered tool: `arguments` is its JSON object as the model wrote it,
    `input` that object parsed."""

    id: str
    name: str
    arguments: str
    input: dict[str, Any]


Piece = TextPiece | Call

_ID_CHARS = string.ascii_letters + string.digits
_WS = " \t\r\n"
# outside strings, JSON has only these characters; any other ends a malformed call at once
_JSON_CHARS = frozenset('{}[]:,"-+.0123456789eEtrufalsn')


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(24))


class _ObjectScanner:
    """Follows one JSON object as it arrives: nesting, strings, and where each top-level value
    lies (`spans[key] = [start, end or None]`, offsets into `text`). It checks the structure only
    as far as needed to find the object's end, or to stop at once on what cannot be JSON;
    json.loads judges the rest."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: dict[str, list[int | None]] = {}
        self.done = False
        self.bad = False
        self._stack: list[str] = []
        self._in_string = False
        self._escape = False
        self._phase = "key"  # at depth 1: key -> colon -> value -> in_value -> next -> key ...
        self._start = -1  # where the current string began
        self._key = ""
        self._scalar = False  # a depth-1 number or literal is being read

    def feed(self, chunk: str) -> int:
        """Reads `chunk` up to the object's end (or up to a character that cannot be JSON);
        returns how many characters it took."""
        base = len(self.text)
        self.text += chunk
        for j, c in enumerate(chunk):
            self._step(base + j, c)
            if self.bad:
                self.text = self.text[: base + j]
                return j
            if self.done:
                self.text = self.text[: base + j + 1]
                return j + 1
        return len(chunk)

    def _end_value(self, end: int) -> None:
        self.spans[self._key][1] = end
        self._phase, self._scalar = "next", False

    def _step(self, i: int, c: str) -> None:
        depth = len(self._stack)
        if self._in_string:
            if self._escape:
                self._escape = False
            elif c == "\\":
                self._escape = True
            elif c == '"':
                self._in_string = False
                if depth == 1 and self._phase == "key":
                    key = _loads(self.text[self._start : i + 1])
                    self.bad = not isinstance(key, str)
                    self._key, self._phase = key, "colon"
                elif depth == 1:
                    self._end_value(i + 1)
            return
        if c in _WS:
            if self._scalar:
                self._end_value(i)
            return
        if c not in _JSON_CHARS:
            self.bad = True
            return
        if self._scalar and c in ",}]":
            self._end_value(i)
        if depth == 1:
            phase = self._phase
            if phase == "colon" and c == ":":
                self._phase, self.spans[self._key] = "value", [None, None]
                return
            if phase == "value" and c not in ",:}]":
                self.spans[self._key][0], self._phase = i, "in_value"
                self._scalar = c not in '{["'
            elif phase == "next" and c == ",":
                self._phase = "key"
                return
            elif not ((phase == "key" and c in '"}') or (phase == "next" and c == "}")
                      or phase == "in_value"):
                self.bad = True
                return
        if c == '"':
            self._in_string, self._start = True, i
        elif c in "{[":
            self._stack.append(c)
        elif c in "}]":
            if not self._stack or "{[".index(self._stack.pop()) != "}]".index(c):
                self.bad = True
            elif len(self._stack) == 1:
                self._end_value(i + 1)
            elif not self._stack:
                self.done = True

    def value(self, key: str) -> str | None:
        """The text of a top-level value (of a finished object); None if there is none."""
        span = self.spans.get(key)
        if not span or span[0] is None or span[1] is None:
            return None
        return self.text[span[0] : span[1]]


class ToolCallParser:
    """Splits streamed model output into text and tool calls in `fmt`'s syntax.

    Each call is held until its object is complete, then checked (JSON, a name among `tools`,
    an object of arguments): a good call comes out as one Call; a bad one, or one the output
    ends in the middle of, comes out as the text it was, so nothing is lost.

    Text comes out as soon as it cannot be the start of a marker. Whitespace around calls is
    dropped, so text that ends in whitespace keeps that whitespace back until more text follows.
    """

    def __init__(self, fmt: ToolFormat, tools: Iterable[ToolSpec]):
        self.fmt = fmt
        self.names = {t.name for t in tools}
        self._buf = ""  # received, not yet consumed
        # text; open (after a marker); item (a call object comes next); object (inside one);
        # after (a call ended: its closing tag, a separator or text comes next)
        self._state = "text"
        self._raw = ""  # the current block's text so far, given back as text if it is bad
        self._skip_ws = False  # right after a call: whitespace is dropped
        self._at_start = fmt.name == "llama3"  # llama3: a "{" before any text opens a call
        self._obj: _ObjectScanner | None = None
        self._out: list[Piece] = []

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        while self._buf and self._step():
            pass
        return self._take()

    def finish(self) -> list[Piece]:
        """Ends the output. A call cut off by the end (max_tokens) comes back as text."""
        if self._state in ("open", "item", "object"):
            self._text(self._raw + (self._obj.text if self._obj else "") + self._buf)
        elif self._state == "text":
            self._text(self._buf)
        self._buf, self._state, self._obj = "", "text", None
        return self._take()

    # -- output

    def _emit(self, piece: Piece) -> None:
        if isinstance(piece, TextPiece):
            if not piece.text:
                return
            if self._out and isinstance(self._out[-1], TextPiece):
                self._out[-1] = TextPiece(self._out[-1].text + piece.text)
                return
        self._out.append(piece)

    def _text(self, text: str) -> None:
        self._emit(TextPiece(text))

    def _take(self) -> list[Piece]:
        out, self._out = self._out, []
        return out

    def _consume(self, n: int) -> None:
        """Takes `n` characters of the current block's syntax."""
        self._raw += self._buf[:n]
        self._buf = self._buf[n:]

    def _give_back(self) -> None:
        """The current block is not a call: its text so far becomes text."""
        self._text(self._raw)
        self._raw, self._state, self._obj = "", "text", None

    # -- states; each returns False when it needs more input

    def _step(self) -> bool:
        return getattr(self, f"_step_{self._state}")()

    def _step_text(self) -> bool:
        buf = self._buf
        if self._skip_ws or self._at_start:
            stripped = buf.lstrip(_WS)
            if not stripped:
                if self._skip_ws:
                    self._buf = ""
                return False
            if self._at_start and stripped[0] == "{":
                self._buf, self._state, self._raw = stripped, "item", buf[: -len(stripped)]
                self._at_start = False
                return True
            if self._skip_ws:
                buf = self._buf = stripped
            self._skip_ws = self._at_start = False
        at = buf.find(self.fmt.marker)
        if at >= 0:
            before = buf[:at]
            text = before.rstrip(_WS)
            self._text(text)
            # the whitespace before a call is dropped, unless the call turns out bad
            self._buf, self._state, self._raw = buf[at:], "open", before[len(text):]
            self._consume(len(self.fmt.marker))
            return True
        keep = next((n for n in range(min(len(self.fmt.marker) - 1, len(buf)), 0, -1)
                     if self.fmt.marker.startswith(buf[-n:])), 0)
        release = buf[: len(buf) - keep].rstrip(_WS)
        self._text(release)
        self._buf = buf[len(release):]
        return False

    def _step_open(self) -> bool:
        stripped = self._buf.lstrip(_WS)
        self._consume(len(self._buf) - len(stripped))
        if not stripped:
            return False
        if self.fmt.name != "mistral":
            self._state = "item"
        elif stripped[0] == "[":
            self._consume(1)
            self._state = "item"
        else:
            self._give_back()
        return True

    def _step_item(self) -> bool:
        stripped = self._buf.lstrip(_WS)
        self._consume(len(self._buf) - len(stripped))
        if not stripped:
            return False
        if stripped[0] == "{":
            self._obj, self._state = _ObjectScanner(), "object"
        else:
            self._give_back()
        return True

    def _step_object(self) -> bool:
        obj = self._obj
        assert obj is not None
        taken = obj.feed(self._buf)
        self._buf = self._buf[taken:]
        if not (obj.done or obj.bad):
            return False
        if obj.done:
            self._judge_call(obj)
        else:  # not JSON
            self._raw += obj.text
            self._give_back()
        return True

    def _judge_call(self, obj: _ObjectScanner) -> None:
        call = _loads(obj.text)
        key = next((k for k in (self.fmt.args_key, "arguments", "parameters")
                    if isinstance(call, dict) and k in call), None)
        args = call.get(key, {}) if isinstance(call, dict) else None
        name = call.get("name") if isinstance(call, dict) else None
        if not isinstance(args, dict) or not isinstance(name, str) or name not in self.names:
            self._raw += obj.text
            self._give_back()
            return
        self._emit(Call(new_call_id(), name, (obj.value(key) if key else None) or "{}", args))
        self._raw, self._obj, self._state = "", None, "after"

    def _step_after(self) -> bool:
        stripped = self._buf.lstrip(_WS)
        if not stripped:
            return False
        end = self.fmt.end
        if end:  # qwen, generic: the call's closing tag
            if len(stripped) < len(end) and end.startswith(stripped):
                return False
            if stripped.startswith(end):
                stripped = stripped[len(end):]
        elif stripped[0] == ("," if self.fmt.name == "mistral" else ";"):
            self._buf, self._state, self._raw = stripped[1:], "item", ""
            return True
        elif self.fmt.name == "mistral" and stripped[0] == "]":
            stripped = stripped[1:]
        self._buf, self._state, self._raw, self._skip_ws = stripped, "text", "", True
        return True


def _loads(text: str) -> Any:
    try:
        return loads_arguments(text)
    except ValueError:
        return None
