"""The draft pipeline: a feed entry's or an item's link -> the page -> its main text -> the
model's draft, as Markdown with a front matter in the owner's drafts/.

    link_of(event)                      feed.entry: payload.link; http.item: item.link or .url
      -> fetch (memory/sources.py)      http(s) only, a timeout, a size cap, redirects followed
      -> trafilatura                    the article's text, without navigation and footers [thread]
      -> ask (model.py)                 the pipeline's `prompt`, the title, the text cut to fit
      -> drafts/YYYY-MM-DD-<slug>.md    ---\\ntitle, source, date\\n---\\n<draft>       [thread]

An event with no link is given up at once (no retry can give it one); a page that cannot be
fetched, is not HTML, or has no article text is an error naming the URL and the cause, tried
again as the trigger says.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import trafilatura

from tenshu.config.pipelines import PipelineSpec
from tenshu.context.pipelines.base import PipelineError, PipelineResult
from tenshu.context.pipelines.model import ask
from tenshu.context.pipelines.workspace import free_name, slug, write
from tenshu.memory.readers import ReadError
from tenshu.memory.sources import fetch
from tenshu.store.context import StoredEvent
from tenshu.store.people import Principal

FETCH_TIMEOUT_S = 20.0
MAX_PAGE_BYTES = 5 * 2**20
MIN_TEXT_CHARS = 100  # less is a menu or a cookie notice, not an article
ANSWER_TOKENS = 1024
SYSTEM = "You write first drafts for the person you work for. Answer with the draft alone."
_PAGE_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "application/xml", "text/xml")


def link_of(event: StoredEvent) -> tuple[str, str]:
    """The event's link and title ("" when it has none)."""
    link = event.link()
    if link is None:
        raise PipelineError(f"the {event.kind} event {event.key[:200]!r} of {event.source} has "
                            "no link (or url) to draft from", final=True)
    if not link.startswith(("http://", "https://")):
        raise PipelineError(f"{link}: only http:// and https:// links are fetched", final=True)
    title = event.entry().get("title")
    return link, " ".join(title.split()) if isinstance(title, str) else ""


def extract(page: bytes, link: str) -> tuple[str, str]:
    """The page's main text and its title, by trafilatura ("" for what it finds none of)."""
    doc = trafilatura.bare_extraction(page, url=link, with_metadata=True,
                                      include_comments=False)
    if doc is None:
        return "", ""
    return (doc.text or "").strip(), (doc.title or "").strip()


async def run_draft(spec: PipelineSpec, event: StoredEvent, principal: Principal, *, gateway,
                    folder: Path, now: datetime) -> PipelineResult:
    link, title = link_of(event)
    try:
        page, content_type = await fetch(link, timeout=FETCH_TIMEOUT_S, max_bytes=MAX_PAGE_BYTES)
    except ReadError as exc:
        raise PipelineError(str(exc)) from None
    if content_type and content_type not in _PAGE_TYPES:
        raise PipelineError(f"{link}: the page is {content_type}, not HTML")
    text, page_title = await asyncio.to_thread(extract, page, link)
    if len(text) < MIN_TEXT_CHARS:
        raise PipelineError(f"{link}: no article text in the page (trafilatura extracted "
                            f"{len(text)} characters)")
    title = title or page_title or link
    draft, cut = await ask(
        gateway, principal, f"pipelines/{spec.name}", model=spec.model, system=SYSTEM,
        prompt=f"{spec.instruction}\n\nTitle: {title}\nLink: {link}\n\nThe article:",
        material=text, answer_tokens=ANSWER_TOKENS)
    if not draft:
        raise PipelineError(f"the model {spec.model} wrote no draft for {link}")
    day = now.date().isoformat()
    matter = [f"title: {json.dumps(title, ensure_ascii=False)}",
              f"source: {json.dumps(link, ensure_ascii=False)}", f"date: {day}",
              f"pipeline: {spec.name}", *(["cut_short: true"] if cut else [])]
    text = "\n".join(["---", *matter, "---", "", draft, ""])

    def save() -> Path:
        drafts = folder / "drafts"
        return write(folder, f"drafts/{free_name(drafts, f'{day}-{slug(title)}', '.md')}", text)

    path = await asyncio.to_thread(save)
    preview = " ".join(draft.split())
    body = (preview[:300] + ("..." if len(preview) > 300 else "") +
            f"\nDraft: {path.relative_to(folder.parent)}")
    return PipelineResult(f"Draft: {title}", body, (path,))
