"""Chat templating: core Messages -> the model's own chat template -> prompt token ids.

The template comes from the checkpoint's tokenizer config, so every model is prompted the way it
was trained. Messages are first lowered to the dicts Hugging Face templates expect (string
content, `tool_calls` on assistant turns, `role: tool` for results).
"""

from __future__ import annotations

import re

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


def to_hf_messages(messages: list[Message]) -> list[dict]:
    """Lower core messages to Hugging Face chat-template dicts."""
    out: list[dict] = []
    for message in messages:
        texts: list[str] = []
        calls: list[dict] = []
        for block in message.content:
            if isinstance(block, TextBlock):
                # strip per block: Claude Code sends the billing line as a block of its own
                texts.append(strip_client_noise(block.text) if message.role == "system"
                             else block.text)
            elif isinstance(block, ToolUseBlock):
                calls.append({
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": block.input},
                })
            elif isinstance(block, ToolResultBlock):
                out.append({
                    "role": "tool",
                    "tool_call_id": block.tool_use_id,
                    "content": block.text if not block.is_error else f"Error: {block.text}",
                })
            elif isinstance(block, ImageBlock):
                raise InvalidRequestError(
                    "this model reads text only; remove the image content", field="messages"
                )
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


def render_prompt(tokenizer, messages: list[Message], tools: list[ToolSpec] = ()) -> list[int]:
    """The prompt's token ids. A final assistant message is continued, not closed (Anthropic's
    prefill); otherwise the template adds the assistant's opening."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise InvalidRequestError(
            "this model has no chat template; use the completions endpoint instead",
            field="messages",
        )
    if not messages:
        raise InvalidRequestError("messages must not be empty", field="messages")
    hf = to_hf_messages(messages)
    prefill = hf and hf[-1]["role"] == "assistant" and not hf[-1].get("tool_calls")
    try:
        text = tokenizer.apply_chat_template(
            hf,
            tools=to_hf_tools(list(tools)),
            tokenize=False,
            add_generation_prompt=not prefill,
            continue_final_message=bool(prefill),
        )
    except Exception as exc:  # a template's own raise_exception(), e.g. roles out of order
        raise InvalidRequestError(f"the model's chat template rejected the messages: {exc}",
                                  field="messages") from exc
    return tokenizer.encode(text, add_special_tokens=False)

