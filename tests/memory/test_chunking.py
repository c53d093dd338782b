"""Tests for tenshu/memory/chunking.py: every chunk fits its token budget under different
counters, is an exact slice of the document inside one section, and together the chunks cover
all of the document's text; code blocks and lists stay whole where they fit; overlap repeats
the previous chunk's tail."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest

from tenshu.memory.chunking import Chunk, chunk
from tenshu.memory.readers import Document, Section, read_bytes


def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:
    return len(text)


def quarter_chars(text: str) -> int:  # the fallback counter for an embedder with no tokenizer
    return math.ceil(len(text) / 4)


def with_specials(text: str) -> int:  # a tokenizer that adds [CLS] and [SEP] to every text
    return len(text.split()) + 2


COUNTERS = [words, chars, quarter_chars, with_specials]


def plain(text: str, kind: str = "text") -> Document:
    """A document of one section, or several where `text` has markdown headings."""
    if kind == "markdown":
        return read_bytes(text.encode(), "doc.md")
    body = text.strip()
    start = text.index(body[0]) if body else 0
    return Document("doc.txt", "doc", text, (Section(body, (), None, start),), kind)


def check(document: Document, chunks: list[Chunk], max_tokens: int, overlap: int, count) -> None:
    """What every chunking must hold, whatever the text."""
    text = document.text
    sections = {s.start: s for s in document.sections}
    bounds = sorted((s.start, s.start + len(s.text), s) for s in document.sections)
    covered = bytearray(len(text))
    previous = None
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text.strip() == c.text != ""
        assert count(c.text) <= max_tokens, (count(c.text), c.text[:80])
        [section] = [s for a, b, s in bounds if a <= c.start and c.end <= b]
        assert c.section == " > ".join(section.path) and c.page == section.page
        if previous is not None:
            assert c.start > previous.start and c.end > previous.end
            if overlap == 0 or previous.section != c.section:
                assert c.start >= previous.end
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
        previous = c
    missed = [i for i, ch in enumerate(text) if not covered[i] and not ch.isspace()]
    assert not missed, f"text not in any chunk: {text[missed[0] : missed[0] + 40]!r}"
    assert sections or not chunks


def random_text(rng: random.Random) -> str:
    """Markdown-ish text of every shape chunking meets: prose, long lines, lists, code fences,
    headings, CJK, runs of spaces, and one huge word with no spaces."""
    vocabulary = ["memory", "tenshu", "a", "chunk", "embedding", "the", "of", "token", "x" * 30]
    parts = []
    for _ in range(rng.randint(5, 40)):
        shape = rng.choice(["prose", "long", "list", "fence", "heading", "cjk", "spaces", "huge"])
        if shape == "prose":
            sentences = [
                " ".join(rng.choices(vocabulary, k=rng.randint(1, 25))) + "."
                for _ in range(rng.randint(1, 8))
            ]
            parts.append(" ".join(sentences))
        elif shape == "long":
            parts.append(" ".join(rng.choices(vocabulary, k=rng.randint(100, 600))))
        elif shape == "list":
            sep = rng.choice(["\n", "\n\n"])
            parts.append(
                sep.join(
                    f"- item {i} " + "word " * rng.randint(0, 20) for i in range(rng.randint(2, 12))
                )
            )
        elif shape == "fence":
            lines = ["# inside a fence", "", "    indented()"]
            lines += ["code " * rng.randint(0, 12) for _ in range(rng.randint(1, 40))]
            parts.append("```py\n" + "\n".join(lines) + "\n```")
        elif shape == "heading":
            parts.append("#" * rng.randint(1, 4) + " Heading " + str(rng.randint(0, 99)))
        elif shape == "cjk":
            parts.append("記憶は大切です。" * rng.randint(1, 200))
        elif shape == "spaces":
            parts.append("word" + " " * rng.randint(1, 3000) + "after\t\t\ttabs")
        else:
            parts.append("z" * rng.randint(500, 20000))
    return "\n\n".join(parts) + "\n"


@pytest.mark.parametrize("count", COUNTERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("max_tokens", "overlap"), [(16, 0), (16, 5), (64, 16), (300, 0), (7, 6)])
def test_chunks_fit_and_cover_varied_text(count, max_tokens, overlap):
    rng = random.Random(f"{count.__name__}-{max_tokens}-{overlap}")
    for _ in range(6):
        text = random_text(rng)
        for kind in ("markdown", "text", "code"):
            document = plain(text, kind)
            chunks = chunk(document, max_tokens=max_tokens, overlap=overlap, count=count)
            check(document, chunks, max_tokens, overlap, count)


@pytest.mark.parametrize("count", [chars, quarter_chars], ids=lambda c: c.__name__)
def test_one_huge_line_with_no_spaces_is_cut_anywhere(count):
    text = "".join(random.Random(1).choices("abcdef0123456789", k=200_000))
    document = plain(text)
    chunks = chunk(document, max_tokens=100, overlap=10, count=count)
    check(document, chunks, 100, 10, count)
    assert "".join(c.text for c in chunks) == text  # no spaces: no overlap to take
    assert min(count(c.text) for c in chunks[:-1]) > 50  # cut near the budget, not in crumbs


def test_paragraphs_are_packed_whole_up_to_the_budget():
    paragraphs = [" ".join([f"p{i}"] * 4) for i in range(6)]
    document = plain("\n\n".join(paragraphs))
    chunks = chunk(document, max_tokens=10, overlap=0, count=words)
    assert [c.text for c in chunks] == [
        "\n\n".join(paragraphs[0:2]),
        "\n\n".join(paragraphs[2:4]),
        "\n\n".join(paragraphs[4:6]),
    ]


def test_a_fenced_code_block_stays_whole_where_it_fits():
    fence = "```python\ndef f():\n\n    return 1\n\n\nprint(f())\n```"
    document = plain("Intro words here.\n\n" + fence + "\n\nAfter the code.", "markdown")
    chunks = chunk(document, max_tokens=8, overlap=0, count=words)
    assert fence in [c.text for c in chunks]


def test_a_list_stays_together_where_it_fits():
    items = "\n\n".join(f"- step {i} do this" for i in range(4))  # a loose list: 20 words
    document = plain("One two three four five six.\n\n" + items + "\n\nThe end.")
    chunks = chunk(document, max_tokens=20, overlap=0, count=words)
    # item by item, two items would have fit beside the first paragraph
    assert [c.text for c in chunks] == ["One two three four five six.", items, "The end."]


def test_a_long_block_is_cut_at_lines_then_sentences():
    lines = "\n".join(f"line {i} has five words" for i in range(6))
    document = plain(lines)
    chunks = chunk(document, max_tokens=12, overlap=0, count=words)
    assert [c.text.count("\n") + 1 for c in chunks] == [2, 2, 2]
    prose = "First sentence is here. Second one follows it. Third ends it."
    chunks = chunk(plain(prose), max_tokens=9, overlap=0, count=words)
    assert [c.text for c in chunks] == [
        "First sentence is here. Second one follows it.",
        "Third ends it.",
    ]


def test_overlap_repeats_the_tail_of_the_previous_chunk():
    text = " ".join(f"w{i}" for i in range(100))
    document = plain(text)
    chunks = chunk(document, max_tokens=20, overlap=5, count=words)
    for before, after in pairwise(chunks):
        shared = text[after.start : before.end]
        assert before.text.endswith(shared) and after.text.startswith(shared)
        assert 1 <= words(shared) <= 5
        assert text[after.start - 1] == " "  # starts at a word
    disjoint = chunk(document, max_tokens=20, overlap=0, count=words)
    assert " ".join(c.text for c in disjoint) == text


def test_chunks_keep_to_their_section_and_page():
    markdown = "# Guide\n\nIntro " + "word " * 30 + "\n\n## Install\n\nRun " + "it " * 30
    document = read_bytes(markdown.encode(), "guide.md")
    chunks = chunk(document, max_tokens=12, overlap=3, count=words)
    check(document, chunks, 12, 3, words)
    assert {c.section for c in chunks} == {"Guide", "Guide > Install"}
    first_install = next(c for c in chunks if c.section == "Guide > Install")
    assert first_install.text.startswith("## Install")  # no tail carried across sections
    pages = Document(
        "p.pdf",
        "p",
        "page one text\n\npage two text",
        (Section("page one text", (), 1, 0), Section("page two text", (), 2, 15)),
        "pdf",
    )
    assert [(c.text, c.page) for c in chunk(pages, max_tokens=50, overlap=5, count=words)] == [
        ("page one text", 1),
        ("page two text", 2),
    ]


def test_a_tokenizer_that_merges_across_joins_still_gets_its_budget():
    # Counts a "\n\n" join as a token of its own: the sum of the pieces' counts undercounts.
    def merging(text: str) -> int:
        return len(text.split()) + text.count("\n\n")

    document = plain("\n\n".join(["alpha beta"] * 30))
    chunks = chunk(document, max_tokens=9, overlap=3, count=merging)
    check(document, chunks, 9, 3, merging)


def test_a_document_with_no_text_has_no_chunks():
    document = Document("empty.txt", "empty", "  \n\n ", (), "text")
    assert chunk(document, max_tokens=10, overlap=2, count=words) == []


def test_budgets_that_cannot_work_are_refused():
    document = plain("some text")
    with pytest.raises(ValueError, match="overlap"):
        chunk(document, max_tokens=10, overlap=10, count=words)
    with pytest.raises(ValueError, match="max_tokens"):
        chunk(document, max_tokens=0, overlap=0, count=words)
    with pytest.raises(ValueError, match="empty text already counts 2"):
        chunk(document, max_tokens=2, overlap=0, count=with_specials)
    with pytest.raises(ValueError, match="one character counts"):
        chunk(plain("x" * 50), max_tokens=1, overlap=0, count=lambda t: 2 * len(t))
