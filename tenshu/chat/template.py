"""Chat templating: core Messages -> the model's own chat template -> prompt token ids.

The template comes from the checkpoint's tokenizer config, so every model is prompted the way it
was trained. Messages are first lowered to the dicts Hugging Face templates expect (string
content, `tool_calls` on assistant turns, `role: tool` for results). A template that knows no
tools gets them in tenshu's generic format instead (see tools.py): described in the system
message, calls and results written into the turns as text.
"""

from __future__ import annotations

import hashlib
import re

from tenshu.chat.tools import (
    GENERIC,
    MISTRAL,
    ToolFormat,
    call_text,
    describe_tools,
    detect_format,
    result_text,
)
from tenshu.core.errors import InvalidRequestError
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)

# Claude Code starts its system prompt with a per-request line such as
# "x-anthropic-billing-header: cc_version=...; cch=...;". It changes on every request, so left in
# place no two requests would share a cached prefix; it means nothing to a local model.
_BILLING_LINE = re.compile(r"^x-anthropic-billing-header:[^\n]*\n?", re.MULTILINE)


def strip_client_noise(text: str) -> str:
    return _BILLING_LINE.sub("", text)


def _text(role: str, block: TextBlock) -> str:
    # strip per block: Claude Code sends the billing line as a block of its own
    return strip_client_noise(block.text) if role == "system" else block.text


def _result(block: ToolResultBlock) -> str:
    return block.text if not block.is_error else f"Error: {block.text}"


def _arguments(block: ToolUseBlock) -> dict | str:
    """A past call's arguments for the template: the object, or the text a client sent back that
    is not one (HF templates write a string as is, or as a JSON string with `tojson`)."""
    return block.input if block.unparsed is None else block.unparsed


def _text_only() -> InvalidRequestError:
    return InvalidRequestError("this model reads text only; remove the image content",
                               field="messages")


def to_hf_messages(messages: list[Message]) -> list[dict]:
    """Lower core messages to Hugging Face chat-template dicts."""
    out: list[dict] = []
    for message in messages:
        texts: list[str] = []
        calls: list[dict] = []
        for block in message.content:
            if isinstance(block, TextBlock):
                texts.append(_text(message.role, block))
            elif isinstance(block, ToolUseBlock):
                calls.append({
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": _arguments(block)},
                })
            elif isinstance(block, ToolResultBlock):
                out.append({
                    "role": "tool",
                    "tool_call_id": block.tool_use_id,
                    "content": _result(block),
                })
            elif isinstance(block, ImageBlock):
                raise _text_only()
            elif isinstance(block, ThinkingBlock):
                pass  # earlier reasoning is not replayed to the model (as Anthropic does)
        text = "".join(texts)
        if texts or calls or not message.content:
            entry: dict = {"role": message.role, "content": text}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
    return out


def to_hf_tools(tools: list[ToolSpec]) -> list[dict] | None:
    if not tools:
        return None
    return [
        {"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


def to_generic_messages(messages: list[Message], tools: list[ToolSpec]) -> list[dict]:
    """Lower core messages for a template that knows no tools: the tools are described in the
    system message, calls and results become text in the generic syntax. A template without
    tools knows no tool role either, so results go back in the user turn that carries them."""
    out: list[dict] = []
    for message in messages:
        parts: list[str] = []
        text: list[str] = []
        calls: list[tuple[str, dict | str]] = []
        for block in message.content:
            if isinstance(block, TextBlock):
                text.append(_text(message.role, block))
            elif isinstance(block, ToolUseBlock):
                calls.append((block.name, _arguments(block)))
            elif isinstance(block, ToolResultBlock):
                if text:
                    parts.append("".join(text))
                    text = []
                parts.append(result_text(_result(block)))
            elif isinstance(block, ImageBlock):
                raise _text_only()
        if text:
            parts.append("".join(text))
        if calls:
            parts.append(call_text(GENERIC, calls))
        if parts or not message.content:
            out.append({"role": message.role, "content": "\n".join(parts)})
    if tools:
        described = describe_tools(tools)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{described}"
        else:
            out.insert(0, {"role": "system", "content": described})
    return out


def _mistral_ids(hf: list[dict]) -> list[dict]:
    """Mistral's templates accept only 9-character alphanumeric call ids; each id is replaced by
    a hash of it, so a conversation renders the same on every request (prefix caching)."""

    def short(call_id: str) -> str:
        return hashlib.sha256(call_id.encode()).hexdigest()[:9]

    for entry in hf:
        for call in entry.get("tool_calls", ()):
            call["id"] = short(call["id"])
        if "tool_call_id" in entry:
            entry["tool_call_id"] = short(entry["tool_call_id"])
    return hf


def template_text(tokenizer) -> str:
    """The chat template's source; a tokenizer may carry several named templates."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "\n".join(template.values()) if isinstance(template, dict) else template


def tool_format(tokenizer) -> ToolFormat:
    """The call syntax the tokenizer's chat template teaches (read once per model)."""
    return detect_format(template_text(tokenizer))


def render_prompt(tokenizer, messages: list[Message], tools: list[ToolSpec] = (),
                  fmt: ToolFormat | None = None) -> list[int]:
    """The prompt's token ids: `prompt_text`, tokenized."""
    return tokenizer.encode(prompt_text(tokenizer, messages, tools, fmt),
                            add_special_tokens=False)


def prompt_text(tokenizer, messages: list[Message], tools: list[ToolSpec] = (),
                fmt: ToolFormat | None = None) -> str:
    """The prompt as the model's chat template writes it (its special tokens as text). A final
    assistant message is continued, not closed (Anthropic's prefill); otherwise the template
    adds the assistant's opening. `tools` are rendered whatever the tool_choice: the history may
    hold calls, and the caller decides whether to pass them. `fmt` is the template's tool
    format (`tool_format`); a server passes the one it keeps."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise InvalidRequestError(
            "this model has no chat template; use the completions endpoint instead",
            field="messages",
        )
    if not messages:
        raise InvalidRequestError("messages must not be empty", field="messages")
    tools = list(tools)
    fmt = fmt or tool_format(tokenizer)
    if fmt.in_template:
        hf = to_hf_messages(messages)
        if fmt is MISTRAL:
            hf = _mistral_ids(hf)
        hf_tools = to_hf_tools(tools)
    else:
        hf, hf_tools = to_generic_messages(messages, tools), None
    prefill = bool(hf) and hf[-1]["role"] == "assistant" and not any(
        isinstance(b, ToolUseBlock) for b in messages[-1].content)
    try:
        text = tokenizer.apply_chat_template(
            hf,
            tools=hf_tools,
            tokenize=False,
            add_generation_prompt=not prefill,
            continue_final_message=prefill,
        )
    except Exception as exc:  # a template's own raise_exception(), e.g. roles out of order
        raise InvalidRequestError(f"the model's chat template rejected the messages: {exc}",
                                  field="messages") from exc
    return text
