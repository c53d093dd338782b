"""The shipped pipelines against a real server's gateway and its real model (tenshu-tiny,
grammar-constrained where the answer is JSON), with data and pages served on loopback.

The analyst reads the same 60 days of two regions' sales from a CSV file, a SQLite query and a
JSON endpoint, and each report says the same numbers tenshu computed, links a real 800x400 PNG
beside it, and holds a schema-valid analysis; the draft fetches an article (through a
redirect), keeps its text and not its menu, and writes a draft with a front matter. Files land
in the owner's workspace and nowhere else, whatever the title. The model's words are never
asserted on: only their shape, and what tenshu computed.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import struct
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from tenshu.api.server import build_server
from tenshu.config import ServerSettings
from tenshu.config.pipelines import DEFAULT_DRAFT_PROMPT, PipelineSpec, parse_pipelines
from tenshu.context.pipelines import PipelineError, run_pipeline
from tenshu.context.pipelines.draft import extract
from tenshu.context.pipelines.workspace import slug
from tenshu.store.context import StoredEvent
from tenshu.store.people import Principal
from tests.context.test_sources import site  # noqa: F401 (the loopback web server)

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
DAY = "2026-03-02"
module_loop = pytest.mark.asyncio(loop_scope="module")

NAV = "<nav><a href='/'>Home</a> <a href='/archive'>Archive</a> <a href='/about'>About</a></nav>"
FOOTER = "<footer>Copyright 2026 Example Blog. <a href='/privacy'>Privacy policy</a></footer>"
PARAGRAPHS = [
    "Most small web applications never outgrow a single SQLite file. It is fast, it needs "
    "no server process, and a backup is a copy of one file.",
    "Write-ahead logging lets readers and one writer work at the same time, which covers "
    "the traffic of most personal projects by a wide margin.",
    "When you do outgrow it, moving to PostgreSQL is mostly mechanical, because the SQL "
    "you wrote is already standard and the schema carries over.",
] * 12  # longer than tenshu-tiny's 512-token window: the text must be cut to fit
ARTICLE = ("<html><head><title>Why SQLite is enough | Example Blog</title></head><body>"
           f"{NAV}<main><article><h1>Why SQLite is enough</h1>"
           + "".join(f"<p>{p}</p>" for p in PARAGRAPHS) + f"</article></main>{FOOTER}"
           "</body></html>")
EMPTY = f"<html><head><title>Archive</title></head><body>{NAV}<div></div>{FOOTER}</body></html>"


# -- what is served on loopback -------------------------------------------------------------

def sales() -> list[dict]:
    """60 days from 2026-01-01, north rising by 2 a day from 100, south cycling weekly."""
    start = date(2026, 1, 1)
    return [{"date": (start + timedelta(days=i)).isoformat(), "region": region,
             "sales": 100 + 2 * i if region == "north" else 80 + 5 * (i % 7)}
            for i in range(60) for region in ("north", "south")]


@pytest.fixture
def web(site) -> str:  # noqa: F811 (the imported fixture)
    """The pages and the data, on loopback (test_sources.py's site); its root URL."""
    site.pages.update({
        "/sales.json": (200, "application/json",
                        json.dumps({"data": {"rows": sales()}}).encode(), {}),
        "/article": (200, "text/html; charset=utf-8", ARTICLE.encode(), {}),
        "/old-article": (301, "text/plain", b"", {"Location": "/article"}),
        "/archive": (200, "text/html", EMPTY.encode(), {}),
        "/report.pdf": (200, "application/pdf", b"%PDF-1.4", {}),
    })
    return site.url("")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """The sales as a CSV file and as a SQLite database."""
    folder = tmp_path_factory.mktemp("sales")
    rows = sales()
    csv = folder / "sales.csv"
    csv.write_text("date,region,sales\n" + "".join(
        f"{r['date']},{r['region']},{r['sales']}\n" for r in rows))
    db = folder / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (day TEXT, region TEXT, amount INTEGER, note TEXT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, 'x')",
                         [(r["date"], r["region"], r["sales"]) for r in rows])
    return {"csv": csv, "sqlite": db}


# -- the server: built and started in this module's event loop --------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tenshu(tmp_path_factory):
    server = build_server(ServerSettings(embedder=False, log_level="warning"),
                          state_db=tmp_path_factory.mktemp("state") / "state.db", jobs=[])
    up, stop = asyncio.Event(), asyncio.Event()

    async def serve():  # the lifespan is entered and left in one task, as anyio requires
        async with server.app.router.lifespan_context(server.app):
            up.set()
            await stop.wait()

    task, started = asyncio.create_task(serve()), asyncio.create_task(up.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()  # it failed to start: raises why
    server.store.users.add("ana")
    yield server
    stop.set()
    await task


@pytest.fixture(scope="module")
def ana(tenshu) -> Principal:
    return Principal.of(tenshu.store.users.get("ana"))


def event(kind: str = "schedule.due", **payload) -> StoredEvent:
    return StoredEvent(1, "src", "key-1", kind, payload, NOW)


def analyst(**keys) -> PipelineSpec:
    return PipelineSpec("sales", "analyst", model="tenshu-tiny", **{"group_by": "region", **keys})


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def section(markdown: str, title: str) -> list[str]:
    """The lines of a '## title' section, blank ones left out."""
    part = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in part.splitlines() if line.strip()]


# -- the analyst ----------------------------------------------------------------------------

@module_loop
async def test_a_csv_becomes_a_report_with_its_numbers_a_chart_and_an_analysis(
        tenshu, ana, data, tmp_path):
    result = await run_pipeline(analyst(csv=str(data["csv"])), event(), ana,
                                gateway=tenshu.gateway, home=tmp_path, now=NOW)

    folder = tmp_path / "workspaces" / str(ana.user_id) / "pipelines"
    assert files_under(tmp_path) == {f"workspaces/{ana.user_id}/pipelines/reports/{DAY}-sales"
                                     f"{ext}" for ext in (".md", ".png")}
    md, png = folder / "reports" / f"{DAY}-sales.md", folder / "reports" / f"{DAY}-sales.png"
    assert result.files == (md, png)
    assert png_size(png) == (800, 400)

    report = md.read_text()
    lines = report.splitlines()
    assert lines[0] == f"# sales: {DAY}"
    headline = lines[2].removeprefix("**").removesuffix("**")
    assert lines[2] == f"**{headline}**" and 1 <= len(headline) <= 160
    for name, most in (("Findings", 5), ("To watch", 3)):
        items = section(report, name)
        assert 1 <= len(items) <= most and all(i.startswith("- ") for i in items)
    assert section(report, "Chart") == [f"![sales over date]({DAY}-sales.png)"]

    summary = "\n".join(section(report, "Summary"))
    assert f"`{data['csv']}`: 120 rows, 2026-01-01 to 2026-03-01." in summary
    assert "| date | datetime64" in summary and "| region | str" in summary
    # the last 7 days (Feb 23 to Mar 1, i = 53..59) against the 7 before (i = 46..52):
    # north 100 + 2i, south 80 + 5 (i % 7), whose weeks are alike
    north_now, north_before = sum(100 + 2 * i for i in range(53, 60)), \
        sum(100 + 2 * i for i in range(46, 53))
    south_week = sum(80 + 5 * k for k in range(7))
    current, previous = north_now + south_week, north_before + south_week
    change = (f"Change: the last 7 days (2026-02-23 to 2026-03-01) against the 7 days before: "
              f"{current:,} against {previous:,}, +{current - previous} "
              f"(+{100 * (current - previous) / previous:.1f}%).")
    assert change in summary
    # the latest day (i = 59): north 218, south 80 + 5 * 3
    assert "| latest (2026-03-01) | sales |" in summary
    assert "| total | 313 |" in summary and "| north | 218 |" in summary
    north = sum(100 + 2 * i for i in range(60))
    south = sum(80 + 5 * (i % 7) for i in range(60))
    assert f"| north | {north:,} | {100 * north / (north + south):.1f}% |" in summary
    assert f"| south | {south:,} | {100 * south / (north + south):.1f}% |" in summary
    assert "| sales | 120 | " in summary  # describe(): its count first

    assert result.title == f"sales: {headline}"
    assert result.body.splitlines() == [headline, change.removeprefix("Change: ")[:-1],
                                        f"Report: pipelines/reports/{DAY}-sales.md"]


@module_loop
async def test_a_sqlite_query_and_a_json_endpoint_give_the_same_numbers(
        tenshu, ana, data, web, tmp_path):
    reports = []
    for i, keys in enumerate([
            {"csv": str(data["csv"])},
            {"sqlite": str(data["sqlite"]), "query": "SELECT day, region, amount AS sales, "
             "note FROM orders ORDER BY day"},
            {"url": f"{web}/sales.json", "items": "data.rows"}]):
        home = tmp_path / str(i)
        result = await run_pipeline(analyst(**keys), event(), ana, gateway=tenshu.gateway,
                                    home=home, now=NOW)
        assert [p.name for p in result.files] == [f"{DAY}-sales.md", f"{DAY}-sales.png"]
        assert png_size(result.files[1]) == (800, 400)
        summary = section(result.files[0].read_text(), "Summary")
        # the source line and the column types differ; every number tenshu computed agrees
        reports.append([line for line in summary[1:] if "| datetime64" not in line
                        and "| str " not in line and "| int64 |" not in line
                        and not line.startswith("| column |")])
    assert reports[0] == reports[1] == reports[2]


@module_loop
async def test_an_analyst_without_dates_or_groups_charts_the_values_by_row(
        tenshu, ana, tmp_path):
    csv = tmp_path / "scores.csv"
    csv.write_text("name,score\n" + "".join(f"p{i},{i * 3}\n" for i in range(10)))
    spec = PipelineSpec("scores", "analyst", model="tenshu-tiny", csv=str(csv))
    result = await run_pipeline(spec, event(), ana, gateway=tenshu.gateway, home=tmp_path,
                                now=NOW)
    report = result.files[0].read_text()
    assert "| latest (the last row) | score |" in report and "| score | 27 |" in report
    assert "Change:" not in report and png_size(result.files[1]) == (800, 400)


@module_loop
@pytest.mark.parametrize("keys, words", [
    ({"value_column": "profit"}, ["value_column", "no column 'profit'", "date, region, sales"]),
    ({"group_by": "country"}, ["group_by", "no column 'country'"]),
])
async def test_a_column_the_data_lacks_is_named_with_those_it_has(
        tenshu, ana, data, tmp_path, keys, words):
    with pytest.raises(PipelineError) as failed:
        await run_pipeline(analyst(csv=str(data["csv"]), **keys), event(), ana,
                           gateway=tenshu.gateway, home=tmp_path, now=NOW)
    assert all(w in str(failed.value) for w in words)
    assert files_under(tmp_path) == set()


@module_loop
async def test_unreachable_or_unreadable_data_is_an_error_naming_it(
        tenshu, ana, data, web, tmp_path):
    cases = [(analyst(url=f"{web}/missing.json"), [f"{web}/missing.json", "404"]),
             (analyst(url=f"{web}/sales.json", items="data.nope"), ["data.nope"]),
             (analyst(csv=str(tmp_path / "gone.csv")), ["gone.csv", "no such file"]),
             (analyst(sqlite=str(data["sqlite"]), query="SELECT * FROM missing"),
              ["shop.db", "no such table"])]
    for spec, words in cases:
        with pytest.raises(PipelineError) as failed:
            await run_pipeline(spec, event(), ana, gateway=tenshu.gateway, home=tmp_path,
                               now=NOW)
        assert all(w in str(failed.value) for w in words), str(failed.value)
    assert files_under(tmp_path) == set()


# -- the draft ------------------------------------------------------------------------------

def draft(**keys) -> PipelineSpec:
    return PipelineSpec("blog", "draft", **{"model": "tenshu-tiny", **keys})


def test_the_article_s_text_is_kept_and_its_menu_and_footer_are_not():
    text, title = extract(ARTICLE.encode(), "http://127.0.0.1/article")
    assert title == "Why SQLite is enough"
    assert PARAGRAPHS[0] in text and PARAGRAPHS[2] in text
    assert "Archive" not in text and "Privacy policy" not in text


@module_loop
async def test_a_feed_entry_s_article_becomes_a_draft_with_a_front_matter(
        tenshu, ana, web, tmp_path):
    entry = event("feed.entry", title="Why  SQLite\nis enough", link=f"{web}/old-article",
                  summary="...", id="e1")
    result = await run_pipeline(draft(), entry, ana, gateway=tenshu.gateway, home=tmp_path,
                                now=NOW)
    path = tmp_path / "workspaces" / str(ana.user_id) / "pipelines" / "drafts" / \
        f"{DAY}-why-sqlite-is-enough.md"
    assert result.files == (path,) and files_under(tmp_path) == {
        str(path.relative_to(tmp_path))}
    text = path.read_text()
    matter, body = re.fullmatch(r"---\n(.*?)\n---\n\n(.*)\n", text, re.S).groups()
    lines = matter.splitlines()
    assert lines[:4] == ['title: "Why SQLite is enough"', f'source: "{web}/old-article"',
                         f"date: {DAY}", "pipeline: blog"]
    assert body.strip()
    assert result.title == "Draft: Why SQLite is enough"
    assert result.body.endswith(f"\nDraft: pipelines/drafts/{DAY}-why-sqlite-is-enough.md")


@module_loop
async def test_an_item_s_title_cannot_lead_out_of_the_workspace(tenshu, ana, web, tmp_path):
    item = event("http.item", url="http://127.0.0.1:9/endpoint", id="7",
                 item={"title": "../../etc/passwd", "url": f"{web}/article"})
    spec = draft(prompt="Three lines on this, please.")
    first = await run_pipeline(spec, item, ana, gateway=tenshu.gateway, home=tmp_path, now=NOW)
    second = await run_pipeline(spec, item, ana, gateway=tenshu.gateway, home=tmp_path,
                                now=NOW)
    drafts = tmp_path / "workspaces" / str(ana.user_id) / "pipelines" / "drafts"
    assert first.files == (drafts / f"{DAY}-etc-passwd.md",)
    assert second.files == (drafts / f"{DAY}-etc-passwd-2.md",)  # the first one is kept
    assert files_under(tmp_path) == {str(p.relative_to(tmp_path))
                                     for p in (*first.files, *second.files)}
    assert 'title: "../../etc/passwd"' in first.files[0].read_text()


@module_loop
async def test_a_draft_that_cannot_be_made_names_the_url_and_the_cause(
        tenshu, ana, web, tmp_path):
    cases = [
        (event("feed.entry", title="t", link=f"{web}/archive"),
         [f"{web}/archive", "no article text"], False),
        (event("feed.entry", title="t", link=f"{web}/gone"), [f"{web}/gone", "404"], False),
        (event("feed.entry", title="t", link=f"{web}/report.pdf"),
         [f"{web}/report.pdf", "application/pdf"], False),
        (event("feed.entry", title="t"), ["feed.entry", "no link"], True),
        (event("http.changed", url=f"{web}/article", hash="h", data={}), ["no link"], True),
        (event("feed.entry", title="t", link="file:///etc/passwd"),
         ["file:///etc/passwd", "only http"], True),
    ]
    for entry, words, final in cases:
        with pytest.raises(PipelineError) as failed:
            await run_pipeline(draft(), entry, ana, gateway=tenshu.gateway, home=tmp_path,
                               now=NOW)
        assert all(w in str(failed.value) for w in words), str(failed.value)
        assert failed.value.final is final
    with pytest.raises(PipelineError, match="model: 'nope' is not a model or route"):
        await run_pipeline(draft(model="nope"), event("feed.entry", link=f"{web}/article"),
                           ana, gateway=tenshu.gateway, home=tmp_path, now=NOW)
    assert files_under(tmp_path) == set()


# -- the configuration ----------------------------------------------------------------------

def test_the_package_offers_its_entry_point_its_result_and_its_error():
    import tenshu.context.pipelines as pipelines

    assert pipelines.__all__ == ["PipelineError", "PipelineResult", "run_pipeline"]
    assert all(hasattr(pipelines, name) for name in pipelines.__all__)


@pytest.mark.parametrize("title, expected", [
    ("../../etc/passwd", "etc-passwd"), ("Why SQLite is enough!", "why-sqlite-is-enough"),
    ("..", "untitled"), ("東京の天気", "東京の天気"), ("a/b\\c:d", "a-b-c-d"),
    ("x" * 100, "x" * 60)])
def test_a_title_slugs_to_one_safe_name(title, expected):
    assert slug(title) == expected


def test_the_docs_pipelines_parse_and_mean_what_they_say():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "context.md").read_text()
    block = docs.split("## Pipelines", 1)[1]
    example = re.search(r"```toml\n(.*?)```", block, re.S)[1]
    specs = {s.name: s for s in parse_pipelines(tomllib.loads(example))}
    assert specs["sales"].type == "analyst" and specs["sales"].group_by == "region"
    assert specs["sales"].sqlite and specs["sales"].query.startswith("SELECT")
    assert specs["posts"].type == "draft" and specs["posts"].instruction != DEFAULT_DRAFT_PROMPT


@pytest.mark.parametrize("table, error", [
    ({"type": "analyst", "model": "m"}, "pipelines.p: give one data source"),
    ({"type": "analyst", "model": "m", "csv": "/a.csv", "url": "http://x/"},
     "pipelines.p: give one data source"),
    ({"type": "analyst", "model": "m", "csv": "data.csv"}, "pipelines.p.csv: 'data.csv' is not"),
    ({"type": "analyst", "model": "m", "sqlite": "/a.db"}, "pipelines.p.query: a sqlite"),
    ({"type": "analyst", "model": "m", "sqlite": "/a.db", "query": "DELETE FROM t"},
     "pipelines.p.query: must be a SELECT"),
    ({"type": "analyst", "model": "m", "url": "ftp://x/"}, "pipelines.p.url: 'ftp://x/'"),
    ({"type": "analyst", "model": "m", "csv": "/a.csv", "items": "data"},
     "pipelines.p.items: only a url"),
    ({"type": "analyst", "model": "m", "csv": "/a.csv", "prompt": "hi"},
     "pipelines.p.prompt: analyst pipelines do not take it"),
    ({"type": "draft", "model": "m", "csv": "/a.csv"},
     "pipelines.p.csv: draft pipelines do not take it"),
    ({"type": "draft"}, "pipelines.p.model: the model"),
    ({"type": "poem", "model": "m"}, "pipelines.p.type: 'poem' is not one of analyst, draft"),
    ({"type": "draft", "model": "m", "colour": "red"}, "pipelines.p: unknown key(s) colour"),
    ({"type": "draft", "model": 3}, "pipelines.p.model: must be a string"),
])
def test_a_wrong_pipeline_table_is_refused_naming_the_key(table, error):
    with pytest.raises(ValueError) as refused:
        parse_pipelines({"pipelines": {"p": table}})
    assert str(refused.value).startswith(error), str(refused.value)
