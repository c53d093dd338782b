"""Tests for tenshu/memory/readers.py: real files made in fixtures (a PDF with fpdf2, a Word
document with python-docx, HTML, Markdown), the damaged and unreadable ones a person's folders
hold, and what a citation would point at: the text, its heading path and its page."""

from __future__ import annotations

import os

import docx
import pytest
from fpdf import FPDF

from tenshu.memory.readers import Document, ReadError, read_bytes, read_file, walk

MB = 1024 * 1024


def section_of(document: Document, words: str):
    """The section whose text holds `words`."""
    found = [s for s in document.sections if words in s.text]
    assert len(found) == 1, f"{words!r} in {len(found)} sections"
    return found[0]


def check_slices(document: Document) -> None:
    end = 0
    for s in document.sections:
        assert document.text[s.start : s.start + len(s.text)] == s.text
        assert s.start >= end and s.text.strip() == s.text != ""
        end = s.start + len(s.text)


@pytest.fixture
def pdf_file(tmp_path):
    pdf = FPDF()
    pdf.set_title("Field Notes")
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 10, "The heron nests by the river.\nIt fishes at dawn.")
    pdf.add_page()
    pdf.multi_cell(0, 10, "Page two is about otters.")
    path = tmp_path / "notes.pdf"
    pdf.output(str(path))
    return path


@pytest.fixture
def docx_file(tmp_path):
    document = docx.Document()
    document.add_heading("Operator Guide", 0)  # the Title style
    document.add_paragraph("Read this first.")
    document.add_heading("Install", 1)
    document.add_paragraph("Download the package.")
    document.add_heading("On Debian", 2)
    document.add_paragraph("Use apt to install it.")
    document.add_heading("Limits", 1)
    table = document.add_table(rows=2, cols=2)
    for row, (name, value) in zip(
        table.rows, [("Setting", "Value"), ("max_file_mb", "64")], strict=True
    ):
        row.cells[0].text, row.cells[1].text = name, value
    path = tmp_path / "guide.docx"
    document.save(str(path))
    return path


MARKDOWN = """\
Preface before any heading.

# Tenshu

A self-hosted AI server.

## Install

```sh
# this is a shell comment, not a heading
pip install tenshu
```

### On Debian

Use apt.

## Usage ##

Run it.
"""

HTML = """\
<!doctype html>
<html><head><title>The  Page &amp; More</title>
<style>body { color: red }</style><script>var hidden = "script text";</script></head>
<body><nav><a href="/">Home</a> <a href="/about">About</a></nav>
<h1>Welcome</h1>
<p>Hello   <b>bold</b>
world &lt;3 &eacute;t&eacute;</p>
<h2>Details</h2>
<ul><li>first item</li><li>second item</li></ul>
<pre>def f():
    return 1</pre>
<script>console.log("more script")</script>
<table><tr><th>Key</th><td>Value</td></tr></table>
</body></html>
"""


def test_pdf_pages_come_back_with_their_text(pdf_file):
    document = read_file(pdf_file, max_bytes=MB)
    assert document.kind == "pdf"
    assert document.title == "Field Notes"
    assert [s.page for s in document.sections] == [1, 2]
    assert "The heron nests by the river." in section_of(document, "heron").text
    assert section_of(document, "otters").page == 2
    assert all(s.path == () for s in document.sections)
    check_slices(document)


def test_docx_headings_give_section_paths_and_tables_their_cells(docx_file):
    document = read_file(docx_file, max_bytes=MB)
    assert document.kind == "docx"
    assert document.title == "Operator Guide"
    assert section_of(document, "Read this first").path == ("Operator Guide",)
    assert section_of(document, "Download the package").path == ("Operator Guide", "Install")
    assert section_of(document, "Use apt").path == ("Operator Guide", "Install", "On Debian")
    limits = section_of(document, "max_file_mb")
    assert limits.path == ("Operator Guide", "Limits")
    assert "Setting | Value\nmax_file_mb | 64" in limits.text
    assert all(s.page is None for s in document.sections)
    check_slices(document)


def test_docx_core_title_wins_over_the_styled_title(tmp_path):
    document = docx.Document()
    document.core_properties.title = "Q3 Report"
    document.add_heading("Quarterly", 0)
    document.add_paragraph("Numbers.")
    path = tmp_path / "q3.docx"
    document.save(str(path))
    assert read_file(path, max_bytes=MB).title == "Q3 Report"


def test_markdown_sections_follow_nested_headings_and_skip_fenced_hashes(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(MARKDOWN)
    document = read_file(path, max_bytes=MB)
    assert document.kind == "markdown"
    assert document.title == "Tenshu"
    assert document.text == MARKDOWN  # kept as written
    assert [s.path for s in document.sections] == [
        (),
        ("Tenshu",),
        ("Tenshu", "Install"),
        ("Tenshu", "Install", "On Debian"),
        ("Tenshu", "Usage"),
    ]
    install = section_of(document, "pip install")
    assert "# this is a shell comment" in install.text
    assert install.text.startswith("## Install")
    assert section_of(document, "Preface").text == "Preface before any heading."
    check_slices(document)


def test_markdown_title_falls_back_to_the_file_name(tmp_path):
    path = tmp_path / "meeting-notes.md"
    path.write_text("## Agenda\n\nBudget.\n")
    assert read_file(path, max_bytes=MB).title == "meeting-notes"


def test_html_drops_scripts_styles_and_navigation(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(HTML)
    document = read_file(path, max_bytes=MB)
    assert document.kind == "html"
    assert document.title == "The Page & More"
    for hidden in ("script text", "more script", "color: red", "Home", "About"):
        assert hidden not in document.text
    assert "Hello bold world <3 été" in document.text
    assert "first item\nsecond item" in document.text
    assert "def f():\n    return 1" in document.text  # <pre> keeps its spaces
    assert "Key | Value" in document.text
    assert section_of(document, "Hello").path == ("Welcome",)
    assert section_of(document, "second item").path == ("Welcome", "Details")
    check_slices(document)


def test_a_url_is_read_by_its_content_type():
    page = b"<html><body><h1>Docs</h1><p>Served by PHP.</p></body></html>"
    document = read_bytes(page, "https://example.com/docs/index.php", content_type="text/html")
    assert document.kind == "html"
    assert document.title == "Docs"
    assert document.text == "Docs\n\nServed by PHP."
    latin = read_bytes(
        "café".encode("latin-1"), "https://x.org/a", content_type="text/plain; charset=ISO-8859-1"
    )
    assert latin.text == "café"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("main.py", "code"),
        ("config.yaml", "code"),
        ("data.json", "json"),
        ("table.csv", "csv"),
        ("notes.txt", "text"),
        ("Makefile", "text"),
        ("notes.unknown", "text"),
    ],
)
def test_text_kinds_come_back_whole(tmp_path, name, kind):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")  # a BOM and Windows line ends
    document = read_file(path, max_bytes=MB)
    assert document.kind == kind
    assert document.text == "line one\nline two\n"
    assert [(s.text, s.path, s.page) for s in document.sections] == [
        ("line one\nline two", (), None)
    ]


def test_a_binary_file_is_refused(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"\x7fELF\x00\x01\x02 not text")
    with pytest.raises(ReadError, match="a binary file") as info:
        read_file(path, max_bytes=MB)
    assert str(path) in str(info.value)
    latin = tmp_path / "old.txt"
    latin.write_bytes("Grüße".encode("latin-1"))
    with pytest.raises(ReadError, match="not in UTF-8"):
        read_file(latin, max_bytes=MB)


def test_utf16_with_its_mark_is_read_and_other_encodings_are_not(tmp_path):
    path = tmp_path / "windows.txt"
    path.write_bytes("Notiz: Grüße".encode("utf-16"))  # with a byte order mark
    assert read_file(path, max_bytes=MB).text == "Notiz: Grüße"


def test_office_formats_tenshu_does_not_read_say_what_to_do(tmp_path):
    path = tmp_path / "budget.xlsx"
    path.write_bytes(b"PK\x03\x04...")
    with pytest.raises(
        ReadError, match=r"a \.xlsx file, which tenshu does not read; save it as \.csv"
    ):
        read_file(path, max_bytes=MB)


def test_a_corrupt_pdf_is_refused(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ReadError, match="not a PDF or a damaged one"):
        read_file(path, max_bytes=MB)


def test_a_scanned_pdf_says_there_is_no_text(tmp_path):
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)  # a picture of a page, no text
    with pytest.raises(ReadError, match="no text in it .*no OCR"):
        read_bytes(bytes(pdf.output()), "scan.pdf")


def test_a_password_locked_pdf_is_refused():
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")
    pdf.add_page()
    pdf.set_font("helvetica")
    pdf.cell(text="hidden")
    with pytest.raises(ReadError, match="locked with a password"):
        read_bytes(bytes(pdf.output()), "locked.pdf")


def test_a_damaged_docx_is_refused(tmp_path):
    path = tmp_path / "letter.docx"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ReadError, match=r"not a Word document \(.docx\) or a damaged one"):
        read_file(path, max_bytes=MB)


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.txt"
    with path.open("wb") as f:
        f.truncate(3 * MB)  # sparse: nothing to read if the size is checked first
    with pytest.raises(ReadError, match=r"larger than the 2 MB limit \(\[memory\] max_file_mb\)"):
        read_file(path, max_bytes=2 * MB)
    assert [(p, str(e)) for p, e in walk([tmp_path], max_bytes=2 * MB)] == [
        (path, f"{path}: 3.0 MB, larger than the 2 MB limit ([memory] max_file_mb)")
    ]


def test_a_missing_path_is_reported(tmp_path):
    missing = tmp_path / "gone.md"
    with pytest.raises(ReadError, match="does not exist"):
        read_file(missing, max_bytes=MB)
    [(path, error)] = walk([missing], max_bytes=MB)
    assert path == missing and str(error) == f"{missing}: does not exist"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_reported(tmp_path):
    path = tmp_path / "secret.md"
    path.write_text("# Secret\n")
    path.chmod(0)
    try:
        with pytest.raises(ReadError, match="permission denied"):
            read_file(path, max_bytes=MB)
        [(_, error)] = walk([tmp_path], max_bytes=MB)
        assert "permission denied" in str(error)
    finally:
        path.chmod(0o644)


def test_walk_lists_documents_in_order_and_skips_what_is_not_one(tmp_path):
    (tmp_path / "b.md").write_text("b")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.md").write_text("h")
    for skipped in (".git", "node_modules", "__pycache__"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "inside.md").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.py").write_text("print()")
    found = list(walk([tmp_path], max_bytes=MB))
    assert found == [
        (tmp_path / "a.txt", None),
        (tmp_path / "b.md", None),
        (tmp_path / "sub" / "c.py", None),
    ]


def test_a_non_document_named_directly_is_reported(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG")
    [(_, error)] = walk([path], max_bytes=MB)
    assert "an image (.png), not a document" in str(error)
    with pytest.raises(ReadError, match="an image"):
        read_file(path, max_bytes=MB)


def test_a_symlink_loop_is_reported_once_and_not_followed(tmp_path):
    root = tmp_path / "docs"
    (root / "inner").mkdir(parents=True)
    (root / "inner" / "note.md").write_text("# Note\n")
    os.symlink(root, root / "inner" / "up")  # docs/inner/up -> docs
    os.symlink(root / "inner", root / "also-inner")  # a second way in: walked once, no error
    found = list(walk([root], max_bytes=MB))
    files = [p for p, e in found if e is None]
    errors = [(p, e) for p, e in found if e is not None]
    assert files == [root / "also-inner" / "note.md"]  # "inner" is the same folder, seen
    assert len(errors) == 1
    assert errors[0][0] == root / "also-inner" / "up"
    assert "a symbolic link loop" in str(errors[0][1])


def test_a_link_to_itself_and_a_broken_link(tmp_path):
    os.symlink(tmp_path / "self", tmp_path / "self")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.md")
    assert [(p.name, str(e)) for p, e in walk([tmp_path], max_bytes=MB)] == [
        ("dangling.md", f"{tmp_path / 'dangling.md'}: a broken symbolic link"),
        ("self", f"{tmp_path / 'self'}: a symbolic link loop"),
    ]


def test_walk_follows_a_link_to_a_file(tmp_path):
    target = tmp_path / "real.md"
    target.write_text("# Real\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.symlink(target, folder / "linked.md")
    assert list(walk([folder], max_bytes=MB)) == [(folder / "linked.md", None)]
    assert read_file(folder / "linked.md", max_bytes=MB).title == "Real"
