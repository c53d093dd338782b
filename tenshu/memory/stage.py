"""The gateway's memory stage: retrieve from the person's collections and put what was found
into the prompt, within a token budget, saying where it came from.

Retrieval is on when the request names collections (`x-tenshu-memory: notes,work`; `none` turns
it off), or its key or route does (`tenshu keys create --memory notes`, `memory = ["notes"]` on
a route in tenshu.toml). A collection named in the header must exist for the caller (404 as any
missing resource); one a key or route names but the caller lacks is skipped, so one route can
serve people with and without a `notes` collection.

The query is the last user message. The chunks go into the system message, numbered, each with
its source, section and page; the answer's `sources` (in the body) and `x-tenshu-sources` (a
header) name them. A request given chunks of a collection not marked `cloud` stays on local
models (the router's sovereignty check), whatever its route says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from tenshu.core.errors import ContextLengthError, NotFoundError
from tenshu.core.messages import Message, TextBlock
from tenshu.core.request import ChatRequest
from tenshu.memory.memory import Memory
from tenshu.memory.retrieval import Hit
from tenshu.store.collections import Collection
from tenshu.store.people import Principal

if TYPE_CHECKING:
    from tenshu.gateway import RequestContext

HEADER = "x-tenshu-memory"
SOURCES_HEADER = "x-tenshu-sources"
_OFF = {"none", "off", "false", "0"}
MIN_BUDGET = 64  # tokens: below this the prompt gets no excerpts at all
INTRO = ("Excerpts from the user's own documents follow; they may help answer. Where you use "
         "one, cite it by its number, like [1].")


@dataclass
class Retrieval:
    hits: list[Hit]
    private: str | None  # why the request must stay on this machine, if it must

    def sources(self) -> list[dict]:
        return [h.citation() for h in self.hits]

    def headers(self) -> dict[str, str]:
        return {SOURCES_HEADER: ", ".join(_header_item(h) for h in self.hits)}


def _header_item(hit: Hit) -> str:
    item = f"chunk={hit.chunk_id};collection={quote(hit.collection, safe='/')};" \
        f"source={quote(hit.source, safe='/:')}"
    if hit.section:
        item += f";section={quote(hit.section, safe='')}"
    if hit.page is not None:
        item += f";page={hit.page}"
    return item


def wanted(headers: dict[str, str], key_memory: tuple[str, ...],
           route_memory: tuple[str, ...]) -> tuple[list[str], bool]:
    """The collections a request retrieves from, and whether they were named by the request
    itself (then each must exist)."""
    asked = headers.get(HEADER)
    if asked is not None:
        names = [n.strip() for n in asked.split(",") if n.strip()]
        if any(n.lower() in _OFF for n in names):
            return [], True
        return names, True
    return list(dict.fromkeys([*key_memory, *route_memory])), False


def query_of(request: ChatRequest) -> str:
    """What to search for: the last user message's words."""
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text
    return ""


class MemoryStage:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    async def retrieve(self, request: ChatRequest, ctx: RequestContext,
                       route_memory: tuple[str, ...], *, window: int, prompt_tokens: int,
                       count: Callable[[ChatRequest], Awaitable[int]] | None = None
                       ) -> Retrieval | None:
        """Search the collections the request, its key or its route name, and add what fits
        to the request's system message; None when nothing was added. The budget is first
        estimated (a quarter of a token per character); `count`, the model's own token count,
        then has the last excerpts dropped until the prompt and the reply fit the window."""
        names, strict = wanted(ctx.headers, ctx.key_memory, route_memory)
        principal = ctx.principal
        if not names or principal is None or request.is_completion:
            return None
        query = query_of(request)
        if not query.strip():
            return None
        reserve = request.max_tokens or (max(window // 4, 256) if window else 0)
        budget = self.memory.settings.budget_tokens
        if window:
            budget = min(budget, window - prompt_tokens - reserve)
        if budget < MIN_BUDGET:
            return None
        found = await asyncio.to_thread(self._reachable, principal, names, strict)
        if not found:
            return None
        hits = await self.memory.search(principal, query, [c.name for c in found])
        hits = _within(hits, budget)
        original = list(request.messages)
        while hits:
            request.messages = list(original)
            _inject(request, hits)
            if count is None or not window or await _fits(count, request, window - reserve):
                break
            hits = hits[:-1]  # the model's tokenizer counts more than the estimate
        if not hits:
            request.messages = original
            return None
        closed = sorted({h.collection for h in hits} - {c.name for c in found if c.cloud})
        private = f"memory from collection(s) {', '.join(closed)}, not shared with cloud " \
            "models" if closed else None
        return Retrieval(hits, private)

    def _reachable(self, principal: Principal, names: list[str],
                   strict: bool) -> list[Collection]:
        """The collections named, as the principal reaches them. Named by the request
        (`strict`), each must exist (NotFoundError); named by a key or route, a missing one
        is skipped."""
        if strict:
            return self.memory.resolve(principal, names)
        found = []
        for name in names:
            try:
                found += self.memory.resolve(principal, [name])
            except NotFoundError:
                continue
        return found


async def _fits(count: Callable[[ChatRequest], Awaitable[int]], request: ChatRequest,
                room: int) -> bool:
    try:
        return await count(request) <= room
    except ContextLengthError:  # a backend's count refuses what cannot fit at all
        return False


def _within(hits: list[Hit], budget: int) -> list[Hit]:
    """The best hits whose text fits the budget (a quarter of a token per character, and a
    line of heading each)."""
    kept, used = [], len(INTRO) // 4
    for hit in hits:
        cost = (len(hit.text) + len(hit.source) + len(hit.section)) // 4 + 8
        if used + cost > budget:
            break
        kept.append(hit)
        used += cost
    return kept


def excerpts(hits: list[Hit]) -> str:
    parts = [INTRO]
    for i, hit in enumerate(hits, start=1):
        where = hit.title or hit.source
        if hit.kind == "correction":
            where = "a correction the user made to an earlier answer"
        elif hit.section:
            where += f" — {hit.section}"
        if hit.page is not None:
            where += f" (page {hit.page})"
        parts.append(f"[{i}] {where}\n{hit.text.strip()}")
    return "\n\n".join(parts)


def _inject(request: ChatRequest, hits: list[Hit]) -> None:
    text = excerpts(hits)
    if request.messages and request.messages[0].role == "system":
        first = request.messages[0]
        request.messages[0] = Message("system", [*first.content, TextBlock("\n\n" + text)])
    else:
        request.messages.insert(0, Message("system", [TextBlock(text)]))
