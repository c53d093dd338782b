"""Chunking: a Document's sections cut into token-bounded, overlapping chunks, the units that
memory embeds and cites.

It sits between the readers (`readers.py`, which give sections with a heading path and page)
and the embedder. A chunk never crosses a section, so it has one heading path and one page to
cite, and its text is always a slice of the document's text (`text[start:end]`).

Within a section the text is cut into blocks: paragraphs apart by blank lines, a fenced code
block whole, a list with its items where it fits. Blocks are packed greedily up to `max_tokens`;
a block too large for one chunk is cut at line breaks, then sentence ends, then spaces, then
(as a last resort, a long run with no spaces) anywhere. Each chunk after the first in a
section starts with the tail of the one before, up to `overlap` tokens, from a word start.

It is linear in the text: each block is counted once (and the parts of a block too large, once
at each level it is cut at) and the counts are summed; a packed chunk is counted once more, to
check the sum against a tokenizer that merges across the joins.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from tenshu.memory.readers import Document, next_fence


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str  # == document.text[start:end], exactly
    section: str  # " > ".join(section.path), "" if none
    page: int | None
    start: int
    end: int


def chunk(
    document: Document, *, max_tokens: int, overlap: int, count: Callable[[str], int]
) -> list[Chunk]:
    """Cut `document` into chunks of at most `max_tokens` by `count` (the embedder's tokenizer),
    each after the first in a section overlapping the previous by up to `overlap` tokens."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be at least 0 and less than max_tokens, not {overlap}")
    cutter = _Cutter(document, max_tokens, overlap, count)
    chunks: list[Chunk] = []
    for section in document.sections:
        start = section.start
        pieces = cutter.pieces(start, start + len(section.text))
        chunks.extend(cutter.pack(pieces, " > ".join(section.path), section.page))
    return chunks


Piece = tuple[int, int, int]  # start, end (its trailing whitespace included), tokens

_PLAIN, _ITEM, _INDENTED = 0, 1, 2  # what a block is, for keeping a list together
_LIST_ITEM = re.compile(r"(?:[-*+•]|\d{1,9}[.)])[ \t]")
_LINE_STARTS = re.compile(r"\n\s*")  # its end is where the next non-blank line starts
_SENTENCE_ENDS = re.compile(r"[.!?][\"')\]]*\s+|[。！？]\s*")
_WORD_START = re.compile(r"(?<=\s)\S")


class _Cutter:
    """Cuts one document's sections into pieces that each fit, then packs them into chunks."""

    def __init__(
        self, document: Document, max_tokens: int, overlap: int, count: Callable[[str], int]
    ):
        self.text = document.text
        self.count = count
        self.overlap = overlap
        self.fences = document.kind in ("markdown", "text")  # .txt notes are often markdown
        # A tokenizer may add tokens to every text (a [CLS] and [SEP]): count them once per
        # chunk, not once per piece, or chunks of many small pieces come out far too short.
        self.base = count("")
        self.limit = max_tokens - self.base
        if self.limit < 1:
            raise ValueError(
                f"max_tokens={max_tokens} leaves no room: the empty text already counts {self.base}"
            )
        # A block cut up is cut smaller than a chunk, to leave room for the overlap beside it.
        self.cut_limit = max(1, self.limit - overlap)

    def tokens(self, start: int, end: int) -> int:
        return self.count(self.text[start:end]) - self.base

    # -- cutting ----------------------------------------------------------------------------

    def pieces(self, start: int, end: int) -> list[Piece]:
        """The section text[start:end] (which starts and ends with a non-space) as pieces that
        each fit a chunk, tiling it: its blocks, and the parts of those too large to be one."""
        starts, kinds = self._blocks(start, end)
        edges = [*starts, end]
        counts = [self.tokens(a, b) for a, b in pairwise(edges)]
        out: list[Piece] = []
        i, n = 0, len(starts)
        while i < n:
            j = i + 1
            if kinds[i] == _ITEM:  # a list: its items, and what is indented under them
                while j < n and kinds[j] != _PLAIN:
                    j += 1
                total = sum(counts[i:j])
                if j - i > 1 and total <= self.limit:
                    out.append((edges[i], edges[j], total))
                    i = j
                    continue
            for k in range(i, j):
                if counts[k] <= self.limit:
                    out.append((edges[k], edges[k + 1], counts[k]))
                else:
                    self._split(edges[k], edges[k + 1], counts[k], 0, out)
            i = j
        return out

    def _blocks(self, start: int, end: int) -> tuple[list[int], list[int]]:
        """Where each block of text[start:end] starts (its first non-space), and its kind."""
        text = self.text
        body = text[start:end]
        starts, kinds = [], []
        fences = self.fences and ("```" in body or "~~~" in body)
        fence = None
        blank = True
        pos = start
        for line in body.split("\n"):
            if fence is not None:  # a fenced code block's lines, blank ones too, stay together
                fence = next_fence(line, fence)
                blank = fence is None  # what follows the closing fence is a new block
            elif not line or line.isspace():
                blank = True
            else:
                opened = next_fence(line, None) if fences else None
                if blank or opened:
                    indent = len(line) - len(line.lstrip())
                    begin = pos + indent
                    starts.append(begin)
                    if _LIST_ITEM.match(text, begin):
                        kinds.append(_ITEM)
                    else:
                        kinds.append(_INDENTED if indent else _PLAIN)
                blank = False
                fence = opened
            pos += len(line) + 1
        return starts, kinds

    def _split(self, start: int, end: int, tokens: int, level: int, out: list[Piece]) -> None:
        """Cut text[start:end], `tokens` too many for one chunk: at line breaks (level 0), then
        sentence ends (1), then spaces or anywhere (2)."""
        if level < 2:
            pattern = _LINE_STARTS if level == 0 else _SENTENCE_ENDS
            cuts = [m.end() for m in pattern.finditer(self.text, start, end) if m.end() < end]
            if not cuts:
                self._split(start, end, tokens, level + 1, out)
                return
            edges = [start, *cuts, end]
            for a, b in pairwise(edges):
                c = self.tokens(a, b)
                if c <= self.cut_limit:
                    out.append((a, b, c))
                else:
                    self._split(a, b, c, level + 1, out)
            return
        self._cut(start, end, tokens, out)

    def _cut(self, start: int, end: int, tokens: int, out: list[Piece]) -> None:
        """Cut a run with no line or sentence breaks left into pieces that fit, at spaces where
        there are any in reach, else anywhere. Each try guesses the width that fits from the
        characters per token seen so far, so the run is counted a few times over, not once per
        word."""
        text, limit = self.text, self.cut_limit
        width = max(1, (end - start) * limit // max(tokens, 1))
        stop = start + len(text[start:end].rstrip())  # where the run's trailing spaces begin
        while start < end:
            cut = min(end, start + width)
            if stop > start and cut >= stop:
                cut = end  # leave no piece of nothing but spaces behind
            elif cut < end:
                space = max(text.rfind(" ", start, cut), text.rfind("\n", start, cut))
                space = max(space, text.rfind("\t", start, cut))
                if space >= start:
                    cut = space + 1
            c = self.tokens(start, cut)
            if c <= limit or (cut - start == 1 and c <= self.limit):  # a character fits a chunk
                out.append((start, cut, c))
                # grow toward what fits, at most doubling, so one short piece cannot blow it up
                width = max(1, min(2 * width, (cut - start) * limit // max(c, 1)))
                start = cut
            elif cut - start > 1:
                if cut == end and stop < end:
                    stop = start  # its trailing spaces do not fit with it: cut as any run
                width = max(1, min(cut - start - 1, (cut - start) * limit // c * 9 // 10))
            else:
                raise ValueError(
                    f"max_tokens is too small: one character counts {c + self.base} tokens"
                )

    # -- packing ----------------------------------------------------------------------------

    def pack(self, pieces: list[Piece], section: str, page: int | None) -> list[Chunk]:
        """Pack one section's pieces greedily into chunks, each after the first starting with
        the previous chunk's tail."""
        text, limit, overlap = self.text, self.limit, self.overlap
        out: list[Chunk] = []
        previous: tuple[int, int, int] | None = None  # the last chunk's start, end, tokens
        i, n = 0, len(pieces)
        while i < n:
            lead, lead_tokens = None, 0
            room = min(overlap, limit - pieces[i][2])  # the next piece must fit beside the tail
            if previous is not None and room > 0:
                lead, lead_tokens = self._tail(*previous, room)
            used, j = lead_tokens, i
            while j < n and used + pieces[j][2] <= limit:
                used += pieces[j][2]
                j += 1
            while True:
                start, end = _trim(text, pieces[i][0] if lead is None else lead, pieces[j - 1][1])
                if j - i == 1 and lead is None:
                    used = pieces[i][2]  # one piece, counted on its own already
                    break
                used = self.tokens(start, end)
                if used <= limit:
                    break
                # the counter is not additive across joins (a tokenizer merging them): give up
                # the overlap first, then the last piece, which goes to the next chunk
                if lead is not None:
                    lead = None
                else:
                    j -= 1
            i = j
            # nothing new beyond the tail carried over: the pieces added were only spaces
            if end > start and (previous is None or end > previous[1]):
                out.append(Chunk(text[start:end], section, page, start, end))
                previous = (start, end, used)
        return out

    def _tail(self, start: int, end: int, tokens: int, room: int) -> tuple[int | None, int]:
        """Where the tail of text[start:end] (`tokens` long) that fits `room` tokens starts, at
        a word start after `start`, and its tokens; (None, 0) where no such tail fits."""
        width = max(1, (end - start) * room // max(tokens, 1))
        while True:
            found = _WORD_START.search(self.text, max(end - width, start + 1), end)
            if found is not None:
                begin = found.start()
            else:  # no word starts that near the end: try the last word alone
                begin = 1 + max(self.text.rfind(c, start, end) for c in " \n\t")
                if begin <= start:
                    return None, 0
            c = self.tokens(begin, end)
            if c <= room:
                return begin, c
            if found is None:  # even the last word is too long
                return None, 0
            # narrower each time; at 0 the search finds nothing and the last word is tried
            width = min(end - begin - 1, (end - begin) * room // c * 9 // 10)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
