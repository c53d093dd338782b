"""Between the engine and the gateway: chat templates (and, later, tool-call formats and
grammar-constrained decoding)."""

from tenshu.chat.template import render_prompt, to_hf_messages

__all__ = ["render_prompt", "to_hf_messages"]
