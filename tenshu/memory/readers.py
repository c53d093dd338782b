"""Readers: a person's files, uploads and fetched pages, turned into plain text with structure.

The first step of memory (local RAG over a person's own documents). `read_file` and
`read_bytes` give a `Document`: its whole plain text, cut into `Section`s that each carry a
heading path and, for a PDF, a page; `chunking.py` then cuts sections into the chunks that are
embedded, and a chunk's citation is its section's path and page. `walk` lists what a set of
files and folders holds to read, with the problems found on the way.

    kind       from                                   sections start at
    markdown   .md .markdown                          ATX headings (# .. ######), not in ``` fences
    html       .html .htm, text/html                  <h1>..<h6>; script, style, nav, head dropped
    pdf        .pdf, application/pdf, %PDF- magic     each page (page=N)
    docx       .docx                                  paragraphs styled Title / Heading N
    text, code, json, csv                             one section: the text as it is

The kind comes from the extension, then the content type (which wins for a URL: a page at
`.../index.php` is HTML), then the bytes. Text must be UTF-8 (or the charset a content type
names); line ends become "\\n". Every problem is a `ReadError` that names the file and says
what is wrong in words a person can act on.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Section:
    text: str  # the section's plain text; == Document.text[start:start + len(text)]
    path: tuple[str, ...]  # heading path, e.g. ("Install", "On Debian"); () before any heading
    page: int | None  # 1-based page (PDF), else None
    start: int  # offset of this section in Document.text


@dataclass(frozen=True, slots=True)
class Document:
    source: str  # the path or URL as given
    title: str
    text: str  # the whole plain text; sections are slices of it, in order, non-overlapping
    sections: tuple[Section, ...]
    kind: str  # markdown | text | html | pdf | docx | code | json | csv


class ReadError(Exception):
    """A file that cannot be read, with a message a person can act on: "<source>: <problem>",
    e.g. "notes/scan.pdf: no text in it (a scanned PDF? tenshu does no OCR)"."""


_CODE = (
    ".py .pyi .js .mjs .cjs .jsx .ts .tsx .go .rs .c .h .cc .cpp .cxx .hpp .hh .java .kt"
    " .kts .scala .swift .m .mm .rb .php .pl .pm .lua .r .jl .hs .ml .ex .exs .erl .clj .cs .fs"
    " .dart .zig .nim .sh .bash .zsh .fish .ps1 .bat .toml .yaml .yml .ini .cfg .conf .sql"
    " .xml .css .scss .sass .less .vue .svelte .proto .graphql .tf .nix .cmake .mk .gradle"
)
_KINDS = {
    **dict.fromkeys(_CODE.split(), "code"),
    **dict.fromkeys([".md", ".markdown", ".mdx"], "markdown"),
    **dict.fromkeys([".txt", ".text", ".rst", ".log", ".adoc", ".org", ".tex"], "text"),
    **dict.fromkeys([".html", ".htm", ".xhtml"], "html"),
    **dict.fromkeys([".json", ".jsonl", ".ndjson", ".ipynb"], "json"),
    **dict.fromkeys([".csv", ".tsv"], "csv"),
    ".pdf": "pdf",
    ".docx": "docx",
}
_CONTENT_TYPES = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
    "application/json": "json",
    "application/x-ndjson": "json",
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
}
# Files that are clearly not documents: skipped inside a folder, refused when named.
_NOT_DOCUMENTS = {
    ext: what
    for what, exts in {
        "an image": ".png .jpg .jpeg .gif .bmp .tif .tiff .webp .ico .heic .psd .svg",
        "audio or video": ".mp3 .wav .flac .ogg .m4a .aac .mp4 .mkv .mov .avi .webm",
        "an archive": ".zip .gz .tgz .bz2 .xz .zst .7z .rar .tar .jar .whl .deb .rpm .dmg .iso",
        "a program or library": ".exe .dll .so .dylib .bin .o .a .pyc .pyo .class .wasm",
        "a font": ".ttf .otf .woff .woff2",
        "a database or model file": ".db .sqlite .parquet .npy .npz .pt .pth .safetensors .gguf"
        " .onnx .pkl",
    }.items()
    for ext in exts.split()
}
# Documents in formats tenshu does not read, and what to do instead.
_OTHER_FORMATS = {
    **dict.fromkeys([".doc", ".odt", ".rtf"], "save it as .docx or PDF"),
    **dict.fromkeys([".xls", ".xlsx", ".ods"], "save it as .csv"),
    **dict.fromkeys([".ppt", ".pptx", ".odp"], "save it as PDF"),
}
_SKIPPED_FOLDERS = {"node_modules", "__pycache__"}


def read_file(path: Path, *, max_bytes: int) -> Document:
    """Read one file; its size is checked before a byte of it is read."""
    path = Path(path)
    try:
        problem = _file_problem(path, path.stat(), max_bytes)
        if problem is None:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)  # the file may have grown since stat
            if len(data) > max_bytes:
                problem = _too_large(len(data), max_bytes)
    except OSError as exc:
        raise _error(path, _os_problem(exc)) from exc
    if problem is not None:
        raise _error(path, problem)
    return read_bytes(data, str(path))


def read_bytes(data: bytes, source: str, *, content_type: str | None = None) -> Document:
    """Read a file's bytes, an upload or a fetched URL; `source` names it in errors."""
    ext = _location(source).suffix.lower()
    if ext in _NOT_DOCUMENTS:
        raise _error(source, _not_document(ext))
    if ext in _OTHER_FORMATS:
        raise _error(source, f"a {ext} file, which tenshu does not read; {_OTHER_FORMATS[ext]}")
    mime, _, params = (content_type or "").partition(";")
    by_type = _CONTENT_TYPES.get(mime.strip().lower())
    by_ext = _KINDS.get(ext)
    if "://" in source:  # a server's content type is surer than the URL's look
        kind = by_type or by_ext or _sniff(data)
    else:
        kind = by_ext or by_type or _sniff(data)
    if kind == "pdf":
        return _read_pdf(data, source)
    if kind == "docx":
        return _read_docx(data, source)
    charset = re.search(r"charset\s*=\s*\"?([\w.:-]+)", params, re.IGNORECASE)
    text = _decode(data, source, charset.group(1) if charset else None)
    if kind == "html":
        return _read_html(text, source)
    if kind == "markdown":
        return _read_markdown(text, source)
    return Document(source, _stem(source), text, _sections(text, [(0, (), None)]), kind)


def walk(paths: Iterable[Path], *, max_bytes: int) -> Iterator[tuple[Path, ReadError | None]]:
    """Yield (file, None) for each file to read under `paths`, and (path, ReadError) for each
    problem found on the way: a missing path, a folder that cannot be listed, a file too large
    or unreadable, a symbolic link loop (reported once, never followed).

    Folders are walked in name order; hidden names, node_modules and __pycache__ are skipped,
    and so are files that are clearly not documents (images, archives, programs), unless named.
    A folder reached twice (two links to it, or named inside another) is walked once.
    """
    walked: set[str] = set()
    for path in paths:
        path = Path(path)
        try:
            st = path.stat()
        except OSError as exc:
            yield path, _error(path, _os_problem(exc, path))
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_folder(path, max_bytes, walked, ())
            continue
        ext = path.suffix.lower()
        problem = (
            _not_document(ext) if ext in _NOT_DOCUMENTS else _file_problem(path, st, max_bytes)
        )
        yield path, None if problem is None else _error(path, problem)


def next_fence(line: str, fence: str | None) -> str | None:
    """The markdown code fence open after `line`, given the one open before it (None: none).

    A fence opens with 3+ backticks or tildes (indented at most 3 spaces) and closes at a line of
    the same character, at least as many, and nothing else. Chunking uses it too.
    """
    stripped = line.strip()
    if fence is not None:
        closes = stripped.startswith(fence) and not stripped.strip(fence[0])
        return None if closes else fence
    if len(line) - len(line.lstrip(" ")) > 3 or stripped[:3] not in ("```", "~~~"):
        return None
    run = len(stripped) - len(stripped.lstrip(stripped[0]))
    if stripped[0] == "`" and "`" in stripped[run:]:
        return None  # ``` x ``` on one line is inline code, not a fence
    return stripped[0] * run


# -- walking --------------------------------------------------------------------------------


def _walk_folder(
    folder: Path, max_bytes: int, walked: set[str], above: tuple[str, ...]
) -> Iterator[tuple[Path, ReadError | None]]:
    real = os.path.realpath(folder)
    if real in above:
        yield folder, _error(folder, f"a symbolic link loop (it leads back to {real})")
        return
    if real in walked:
        return
    walked.add(real)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda entry: entry.name)
    except OSError as exc:
        yield folder, _error(folder, f"cannot be listed: {_os_problem(exc)}")
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name in _SKIPPED_FOLDERS:
            continue
        path = Path(entry.path)
        try:
            st = path.stat()  # follows symbolic links
        except OSError as exc:
            yield path, _error(path, _os_problem(exc, path))
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_folder(path, max_bytes, walked, (*above, real))
        elif stat.S_ISREG(st.st_mode) and path.suffix.lower() not in _NOT_DOCUMENTS:
            problem = _file_problem(path, st, max_bytes)
            yield path, None if problem is None else _error(path, problem)
        # pipes, sockets and devices inside a folder are not documents: skipped


def _file_problem(path: Path, st: os.stat_result, max_bytes: int) -> str | None:
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, socket or device)"
    if st.st_size > max_bytes:
        return _too_large(st.st_size, max_bytes)
    if not os.access(path, os.R_OK):
        return "permission denied (tenshu's user may not read it)"
    return None


def _too_large(size: int, max_bytes: int) -> str:
    mb = 1024 * 1024
    return f"{size / mb:.1f} MB, larger than the {max_bytes / mb:g} MB limit ([memory] max_file_mb)"


def _os_problem(exc: OSError, path: Path | None = None) -> str:
    if isinstance(exc, FileNotFoundError):
        return "a broken symbolic link" if path and path.is_symlink() else "does not exist"
    if isinstance(exc, PermissionError):
        return "permission denied (tenshu's user may not read it)"
    if isinstance(exc, IsADirectoryError):
        return "a folder, not a file"
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop"
    return f"cannot be read ({exc.strerror or exc})"


def _error(source: str | Path, problem: str) -> ReadError:
    return ReadError(f"{source}: {problem}")


def _not_document(ext: str) -> str:
    return f"{_NOT_DOCUMENTS[ext]} ({ext}), not a document tenshu can read"


# -- kinds and text -------------------------------------------------------------------------


def _location(source: str) -> PurePosixPath:
    """The path part of a file name or URL, for its extension and stem."""
    if "://" in source:
        return PurePosixPath(unquote(urlsplit(source).path))
    return PurePosixPath(source.replace("\\", "/"))


def _stem(source: str) -> str:
    return _location(source).stem or urlsplit(source).netloc or source


def _sniff(data: bytes) -> str:
    if data.startswith(b"%PDF-"):
        return "pdf"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def _decode(data: bytes, source: str, charset: str | None) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte order mark
        charset = "utf-16"
    elif b"\x00" in data:
        raise _error(source, "a binary file, not text")
    try:
        text = data.decode(charset or "utf-8-sig")
    except LookupError:  # a charset Python does not know: try UTF-8
        return _decode(data, source, None)
    except UnicodeError:
        raise _error(source, "a binary file (or text not in UTF-8)") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.lstrip("\ufeff")


Mark = tuple[int, tuple[str, ...], int | None]  # where a section starts, its path, its page


def _sections(text: str, marks: list[Mark]) -> tuple[Section, ...]:
    """Sections from their start marks (in order), trimmed of whitespace; empty ones dropped."""
    out = []
    for i, (start, path, page) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        piece = text[start:end]
        body = piece.strip()
        if body:
            out.append(Section(body, path, page, start + len(piece) - len(piece.lstrip())))
    return tuple(out)


def _nest(stack: list[tuple[int, str]], level: int, name: str) -> tuple[str, ...]:
    """Push a heading at `level`, closing those at its level or deeper; the new heading path."""
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, name))
    return tuple(heading for _, heading in stack)


# -- markdown -------------------------------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")


def _read_markdown(text: str, source: str) -> Document:
    marks: list[Mark] = [(0, (), None)]
    stack: list[tuple[int, str]] = []
    title = None
    fence = None
    pos = 0
    for line in text.split("\n"):
        if fence is None and line[:4].lstrip(" ").startswith("#") and (m := _ATX.match(line)):
            name = _CLOSING_HASHES.sub("", (m.group(2) or "").strip()).strip()
            marks.append((pos, _nest(stack, len(m.group(1)), name), None))
            if title is None and len(m.group(1)) == 1 and name:
                title = name
        else:
            fence = next_fence(line, fence)
        pos += len(line) + 1
    return Document(source, title or _stem(source), text, _sections(text, marks), "markdown")


# -- HTML -----------------------------------------------------------------------------------

_DROPPED = {"script", "style", "nav", "head", "noscript", "template", "svg"}
_PARAGRAPHS = {"p", "div", "pre", "table", "ul", "ol", "dl", "blockquote", "section", "article"}
_PARAGRAPHS |= {"header", "footer", "main", "aside", "figure", "form", "hr", "details"}
_LINES = {"li", "tr", "br", "dt", "dd", "caption", "figcaption", "summary"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SPACES = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    """Collects a page's text: paragraphs apart by a blank line, spaces collapsed outside <pre>,
    and a section mark at each heading."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.size = 0
        self.newlines = 2  # "\n"s ending the text so far (2 at the start: nothing to separate)
        self.space = False  # a collapsed space waits for the next word on the line
        self.dropped: list[str] = []
        self.pre = 0
        self.title: list[str] | None = None  # while inside <title>
        self.titles: list[str] = []
        self.heading: tuple[int, int, list[str]] | None = None  # level, start, its text
        self.stack: list[tuple[int, str]] = []
        self.marks: list[Mark] = [(0, (), None)]
        self.h1: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title" and "svg" not in self.dropped:  # an <svg> has titles of its own
            self.title = []
        elif tag == "body" and "head" in self.dropped:
            self.dropped.remove("head")  # a <head> that was never closed
        if tag in _DROPPED:
            self.dropped.append(tag)
        if self.dropped:
            return
        if tag in _HEADINGS:
            self._break(2)
            self.heading = (_HEADINGS[tag], self.size, [])
        elif tag in _PARAGRAPHS:
            self._break(2)
            if tag == "pre":
                self.pre += 1
        elif tag in _LINES:
            self._break(1)
        elif tag in ("td", "th") and self.newlines == 0:
            self._write(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.title is not None:
            self.titles.append(" ".join("".join(self.title).split()))
            self.title = None
        if tag in _DROPPED:
            if tag in self.dropped:
                del self.dropped[len(self.dropped) - 1 - self.dropped[::-1].index(tag)]
            return
        if self.dropped:
            return
        if tag in _HEADINGS and self.heading is not None:
            level, start, words = self.heading
            name = " ".join("".join(words).split())
            self.marks.append((start, _nest(self.stack, level, name), None))
            if level == 1 and self.h1 is None and name:
                self.h1 = name
            self.heading = None
            self._break(2)
        elif tag in _PARAGRAPHS:
            self._break(2)
            if tag == "pre" and self.pre:
                self.pre -= 1
        elif tag in _LINES:
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self.title is not None:
            self.title.append(data)
            return
        if self.dropped:
            return
        if self.heading is not None:
            self.heading[2].append(data)
        if self.pre:
            self._write(data)
            return
        words = _SPACES.sub(" ", data)
        core = words.strip(" ")
        if core:
            if (self.space or words[0] == " ") and self.newlines == 0:
                self._write(" ")
            self._write(core)
            self.space = words[-1] == " "
        elif words:
            self.space = True

    def _break(self, n: int) -> None:
        self.space = False
        if self.newlines < n:
            self._write("\n" * (n - self.newlines))

    def _write(self, s: str) -> None:
        self.parts.append(s)
        self.size += len(s)
        body = s.rstrip("\n")
        self.newlines = (self.newlines if not body else 0) + len(s) - len(body)


def _read_html(text: str, source: str) -> Document:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    out = "".join(parser.parts).rstrip()
    title = next((t for t in parser.titles if t), None) or parser.h1 or _stem(source)
    return Document(source, title, out, _sections(out, parser.marks), "html")


# -- PDF and Word ---------------------------------------------------------------------------


def _read_pdf(data: bytes, source: str) -> Document:
    import pypdf  # here, not at the top: a server that reads no PDF starts faster

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
    except Exception as exc:  # pypdf raises many kinds of error for a damaged file
        raise _error(source, "not a PDF or a damaged one") from exc
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")  # many PDFs are encrypted with an empty password
        except Exception:  # an encryption pypdf cannot open without extra packages
            opened = False
        if not opened:
            raise _error(source, "a PDF locked with a password; save a copy without one")
    try:
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception as exc:
        raise _error(source, "not a PDF or a damaged one") from exc
    parts, marks, pos = [], [], 0
    for number, page in enumerate(pages, start=1):
        page = page.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
        marks.append((pos, (), number))
        parts.append(page)
        pos += len(page) + 2
    text = "\n\n".join(parts)
    sections = _sections(text, marks)
    if not sections:
        raise _error(source, "no text in it (a scanned PDF? tenshu does no OCR)")
    title = meta_title.strip() if isinstance(meta_title, str) else ""
    return Document(source, title or _stem(source), text, sections, "pdf")


_WORD_HEADING = re.compile(r"heading (\d)", re.IGNORECASE)


def _read_docx(data: bytes, source: str) -> Document:
    import docx  # here, not at the top: python-docx's import takes 0.2 s of a server's start
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        parts: list[str] = []
        marks: list[Mark] = [(0, (), None)]
        stack: list[tuple[int, str]] = []
        styled_title, pos = None, 0
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                block = "\n".join(filter(None, (_row_text(row) for row in item.rows)))
            else:
                block = item.text.strip()
                style = item.style.name if item.style is not None else ""
                level = 0 if style == "Title" else None  # the title sits above Heading 1
                if m := _WORD_HEADING.match(style or ""):
                    level = int(m.group(1))
                if level is not None and block:
                    marks.append((pos, _nest(stack, level, " ".join(block.split())), None))
                    styled_title = styled_title or (block if level == 0 else None)
            if block:
                parts.append(block)
                pos += len(block) + 2
        core_title = document.core_properties.title
    except Exception as exc:  # python-docx and its zip and XML readers raise many kinds
        raise _error(source, "not a Word document (.docx) or a damaged one") from exc
    text = "\n\n".join(parts)
    title = (core_title or "").strip() or styled_title or _stem(source)
    return Document(source, title, text, _sections(text, marks), "docx")


def _row_text(row) -> str:
    cells, last = [], None
    for cell in row.cells:
        if cell is not last:  # a cell spanning columns comes once per column
            cells.append(" ".join(cell.text.split()))
        last = cell
    return " | ".join(c for c in cells if c)
