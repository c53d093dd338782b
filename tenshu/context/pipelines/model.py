"""A pipeline's one model call: through the gateway as the owner, like any request of theirs
(routing, sovereignty, budgets and audit apply), with the material trimmed to the window.

    text = await ask(gateway, principal, route, model=..., system=..., prompt=...,
                     material=article, answer_tokens=1024)
    data = await ask_json(..., schema=ANALYSIS)     # grammar-constrained, then validated

The answer gets at most half the model's window; the prompt (the fixed text and then the
material) gets the rest, counted with the model's own tokenizer (gateway.count_tokens), and the
material is cut until it fits. A route's window is its smallest model's; an upstream's unknown
window counts as UNKNOWN_WINDOW.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING

import jsonschema

from tenshu.context.pipelines.base import PipelineError
from tenshu.core.errors import ContextLengthError, TenshuError
from tenshu.core.fold import Fold
from tenshu.core.messages import Message
from tenshu.core.request import ChatRequest
from tenshu.store.people import Principal

if TYPE_CHECKING:
    from tenshu.gateway import Gateway

UNKNOWN_WINDOW = 8192  # tokens, for a model that does not say
CHARS_PER_TOKEN = 6  # more than any tokenizer packs: material past room * this cannot fit
TEMPLATE_MARGIN = 16  # tokens the chat template may add after the count
TIMEOUT_S = 600.0  # the whole answer


async def ask(gateway: Gateway, principal: Principal, route: str, *, model: str, system: str,
              prompt: str, material: str = "", answer_tokens: int = 1024,
              response_format: dict | None = None) -> tuple[str, bool]:
    """The model's text and whether it was cut short by its token budget. The user turn is
    `prompt`, then `material` cut to fit; PipelineError when even the prompt alone does not."""
    from tenshu.gateway import RequestContext

    window = _window(gateway, model)
    budget = max(1, min(answer_tokens, window // 2))
    request = await _fitted(gateway, model, system, prompt, material,
                            window - budget - TEMPLATE_MARGIN)
    request.max_tokens, request.response_format = budget, response_format
    ctx = RequestContext(request_id=f"req_{secrets.token_hex(12)}", protocol="pipeline",
                         route=route, principal=replace(principal, record="never"))
    fold = Fold()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            async for event in gateway.chat(request, ctx):
                fold.add(event)
    except TimeoutError:
        raise PipelineError(f"the model {model} gave no whole answer within "
                            f"{TIMEOUT_S:g} s") from None
    except TenshuError as exc:
        raise PipelineError(f"the model {model} failed: {exc}") from None
    text = fold.messages()[0].text if fold.blocks else ""
    finish = fold.finish.get(0)
    return text.strip(), finish is not None and finish.stop_reason == "max_tokens"


async def ask_json(gateway: Gateway, principal: Principal, route: str, *, model: str,
                   system: str, prompt: str, material: str = "", schema: dict, name: str,
                   answer_tokens: int = 1024) -> dict:
    """The model's answer as a JSON object valid against `schema` (asked for with a strict
    json_schema response format: grammar-enforced on local models)."""
    response_format = {"type": "json_schema",
                       "json_schema": {"name": name, "schema": schema, "strict": True}}
    text, cut = await ask(gateway, principal, route, model=model, system=system, prompt=prompt,
                          material=material, answer_tokens=answer_tokens,
                          response_format=response_format)
    if cut:
        raise PipelineError(f"the model {model}'s {name} was cut short by its token budget "
                            f"({min(answer_tokens, _window(gateway, model) // 2)} tokens)")
    try:
        data = json.loads(text)
        jsonschema.validate(data, schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        why = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
        raise PipelineError(f"the model {model}'s {name} is not the JSON asked for: "
                            f"{why}") from None
    return data


def answer_chars(gateway: Gateway, model: str, answer_tokens: int) -> int:
    """About how many characters of answer `answer_tokens` buy on this model (at two a token,
    which JSON from small tokenizers beats): what a schema's string limits are sized to."""
    return 2 * min(answer_tokens, _window(gateway, model) // 2)


def _window(gateway: Gateway, model: str) -> int:
    try:
        return gateway.model_info(model).context_window or UNKNOWN_WINDOW
    except TenshuError:
        raise PipelineError(f"model: {model!r} is not a model or route this server serves",
                            final=True) from None


async def _fitted(gateway: Gateway, model: str, system: str, prompt: str, material: str,
                  room: int) -> ChatRequest:
    """The request whose prompt is `prompt` and as much of `material` as fits in `room`
    tokens: cut in proportion to the overshoot, counted again, a few times."""
    def request(cut: str) -> ChatRequest:
        text = f"{prompt}\n\n{cut}" if cut else prompt
        return ChatRequest(model=model, messages=[Message.of("system", system),
                                                  Message.of("user", text)], stream=True)

    material = material[:max(0, room) * CHARS_PER_TOKEN]
    for _ in range(8):
        attempt = request(material)
        try:
            tokens = await gateway.count_tokens(attempt)
        except ContextLengthError:  # an embedded model counts no further than its window
            tokens = None
        if tokens is not None and tokens <= room:
            return attempt
        if not material:
            break
        material = material[:int(len(material) * (room / tokens * 0.9 if tokens else 0.5))]
    raise PipelineError(f"the prompt does not fit {model}'s window ({room} tokens left for it "
                        "after the answer's)")
