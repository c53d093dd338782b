"""Content matchers: what in a request must not leave the machine.

The router asks `private_reason` before it lets a request go to a cloud tier. Each matcher is
one precompiled regex (one pass over each text), plus a cheap check on what it found where the
pattern alone would flag too much: a placeholder is not a password, and a long number is a card
only if the Luhn check says so. The reason names what was found and where, never the value, as
it ends up in traces, headers and the audit log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, fields, is_dataclass

from tenshu.core.messages import (
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest

MATCHERS: tuple[str, ...] = ("secrets", "private_keys", "emails", "cards")
# Emails are opt-in: Claude Code's own system prompt carries an email address, so with them on
# every Claude Code request would stay local.
DEFAULT_MATCHERS: tuple[str, ...] = ("secrets", "private_keys", "cards")

# (what the reason calls it, pattern). Each opens with a literal, which Python's regex engine
# finds with a fast scan; one pass per pattern over 200 KB then costs well under a millisecond,
# where a single alternation of them all tries every position. The boundary before a key
# (`xsk-...` is not one) is checked on the match for the same reason.
_TOKENS = [(what, re.compile(pattern)) for what, pattern in [
    ("an Anthropic API key", r"sk-ant-[A-Za-z0-9_\-]{20,}"),
    ("a Stripe live key", r"[sr]k_live_[A-Za-z0-9]{16,}"),
    ("an OpenAI API key",
     r"sk-(?:proj-|svcacct-|admin-)?(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,}"),
    ("an AWS access key", r"A[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ("a GitHub token", r"gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"),
    ("a Slack token", r"xox[abprs]-[A-Za-z0-9\-]{10,}"),
    ("a Google API key", r"AIza[0-9A-Za-z_\-]{35}"),
    ("a JSON Web Token", r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
]]

# password = "...", "api_key": "...", DB_PASSWORD=..., quotes JSON-escaped or not. Matched on
# the lowercased text: an IGNORECASE pattern is several times slower in Python's regex engine.
_ASSIGNMENT_RE = re.compile(
    r"(?:pass(?:wd|word|phrase)|secret|api[_-]?key|access[_-]?(?:key|token)|auth[_-]?token"
    r"|refresh[_-]?token|private[_-]?key)\\?[\"']?\s*[:=]\s*\\?[\"']?([^\s\"'`,;\\]{8,})")

# A PEM header followed by a key body (so code that merely looks for the header line is not
# flagged). JSON-escaped newlines (tool inputs) are crossed like real ones.
_PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]{0,300}?[A-Za-z0-9+/=]{40}")

# From the @ on (the scan for it is fast): a local part just before it, a dotted domain after.
_EMAIL_RE = re.compile(
    r"@(?<=[A-Za-z0-9._%+\-]@)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9\-])")

# A card number: 13-19 digits, written whole or in groups of 3-6 split by spaces or dashes
# (4-4-4-4, Amex's 4-6-5), not inside a longer number. Issuers' numbers start with 2-6
# (Mastercard, Amex, Visa, Discover, ...), which keeps out millisecond timestamps and most ids
# (the Luhn check alone lets 1 in 10 of them through); opening on that digit, with the
# lookbehinds after it, lets the regex engine skip ahead to candidates.
_CARD_RE = re.compile(
    r"[2-6](?<!\d[2-6])(?<!\d[ \-][2-6])(?:\d{12,18}|\d{2,5}(?:[ \-]\d{3,6}){2,5})(?!\d)")

_PLACEHOLDER_RE = re.compile(r"your|example|placeholder|changeme|redacted|dummy|xxxx|\*\*\*")
_CODE_CHARS = set("()[]{}<>$%")


def _plausible(value: str) -> bool:
    """A credential's value worth protecting: long, varied, not a placeholder, a template
    variable or an expression (`password = settings.password` is code, not a secret)."""
    if len(set(value)) < 5 or _CODE_CHARS.intersection(value):
        return False
    if _PLACEHOLDER_RE.search(value):
        return False
    # a digit or a symbol: plain words and dotted names are references, not secrets
    return any(c.isdigit() or not (c.isalnum() or c in "_.-") for c in value)


def _word_start(text: str, i: int) -> bool:
    """Nothing alphanumeric just before `i` (an underscore or a dash may be: DB_PASSWORD)."""
    return i == 0 or not text[i - 1].isalnum()


def _find_secret(text: str) -> str | None:
    for what, regex in _TOKENS:
        if any(_word_start(text, m.start()) for m in regex.finditer(text)):
            return what
    lowered = text.lower()
    for m in _ASSIGNMENT_RE.finditer(lowered):
        # DB_PASSWORD= counts, mypassword= does not
        if _word_start(lowered, m.start()) and _plausible(m.group(1)):
            return "a hard-coded credential"
    return None


def _find_private_key(text: str) -> str | None:
    return "a private key" if _PRIVATE_KEY_RE.search(text) else None


def _find_email(text: str) -> str | None:
    return "an email address" if _EMAIL_RE.search(text) else None


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _find_card(text: str) -> str | None:
    for m in _CARD_RE.finditer(text):
        digits = ""
        # a card may be followed by another group (an expiry, a CVC): try each whole-group prefix
        for group in re.split(r"[ \-]", m.group()):
            digits += group
            if 13 <= len(digits) <= 19 and _luhn_ok(digits):
                return "a payment card number"
    return None


_FINDERS: dict[str, Callable[[str], str | None]] = {
    "secrets": _find_secret,
    "private_keys": _find_private_key,
    "emails": _find_email,
    "cards": _find_card,
}


def validate_matchers(matchers: Iterable[str]) -> tuple[str, ...]:
    """The matcher names, checked; ValueError names the unknown ones and lists the valid."""
    names = (matchers,) if isinstance(matchers, str) else tuple(matchers)
    unknown = [n for n in names if n not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown sovereignty matcher {', '.join(map(repr, unknown))}; "
                         f"the matchers are {', '.join(MATCHERS)}")
    return names


def _texts(request: ChatRequest) -> Iterator[tuple[str, str]]:
    """(where, text) for everything in the request that could be sent upstream: the prompt, every
    block of every message (ids, names and signatures too), the tools' names, descriptions and
    schemas, and every other field (stop sequences, user, metadata, response format, ...). Any
    field a protocol adds to ChatRequest is scanned without a change here; only the model name
    is not, since an upstream is sent its own name for the model."""
    if isinstance(request.prompt, str):
        yield "the prompt", request.prompt
    for n, message in enumerate(request.messages, 1):
        for block in message.content:
            yield from _block_texts(block, f"message {n}", message.role)
    for i, tool in enumerate(request.tools, 1):
        yield f"tool {i} ({tool.name[:40]})", _json(tool)
    for f in fields(request):
        if f.name not in ("model", "prompt", "messages", "tools"):
            value = getattr(request, f.name)
            if isinstance(value, str):
                yield f"the {f.name} field", value
            elif isinstance(value, dict | list) and value or is_dataclass(value):
                yield f"the {f.name} field", _json(value)


def _block_texts(block, where: str, role: str) -> Iterator[tuple[str, str]]:
    if isinstance(block, TextBlock):
        yield f"{where} ({role})", block.text
    elif isinstance(block, ToolResultBlock):
        yield f"{where} (a tool result)", block.tool_use_id
        for part in block.content:
            yield from _block_texts(part, where, "a tool result")
    elif isinstance(block, ToolUseBlock):
        yield f"{where} (a tool call)", _json({"id": block.id, "name": block.name,
                                                "input": block.input})
    elif isinstance(block, ThinkingBlock):
        yield f"{where} (thinking)", block.thinking
        if block.signature:
            yield f"{where} (thinking)", block.signature
    elif isinstance(block, ImageBlock):
        yield f"{where} (an image)", " ".join(filter(None, (block.url, block.media_type)))
    else:  # a block type added later: every field but binary data
        yield f"{where} ({role})", _json({k: v for k, v in asdict(block).items() if k != "data"})


def _json(value) -> str:
    return json.dumps(asdict(value) if is_dataclass(value) else value, ensure_ascii=False,
                      default=lambda o: asdict(o) if is_dataclass(o) else str(o))


def private_reason(request: ChatRequest, matchers: Iterable[str]) -> str | None:
    """Why this request must stay on the machine ("an AWS access key in message 3 (user)"),
    or None when none of the matchers finds anything."""
    finders = [_FINDERS[name] for name in validate_matchers(matchers)]
    if not finders:
        return None
    for where, text in _texts(request):
        for find in finders:
            if what := find(text):
                return f"{what} in {where}"
    return None
