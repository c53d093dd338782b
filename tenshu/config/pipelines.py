"""[pipelines.NAME] in tenshu.toml: the shipped pipelines a context trigger can run
(`action = "pipeline"`, `pipeline = "NAME"`), validated into frozen PipelineSpecs.

    analyst   data (a CSV file, a SQLite query or a JSON endpoint) -> a summary, a chart and
              the model's reading of them, as a Markdown report in the owner's reports/
    draft     a feed entry's or an item's link -> the page's main text -> the model's draft,
              as Markdown in the owner's drafts/

context/pipelines/ runs them. Any problem is a ValueError naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PIPELINE_TYPES = ("analyst", "draft")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_OWN = {"analyst": {"csv", "sqlite", "query", "url", "items", "date_column", "value_column",
                    "group_by"},
        "draft": {"prompt"}}
DEFAULT_DRAFT_PROMPT = ("Write a short draft post about this article, in my voice: first "
                        "person, plain and direct, a title line, then three short paragraphs "
                        "saying what it is about and why it matters to me.")


@dataclass(frozen=True)
class PipelineSpec:
    """One pipeline. Each type reads its own keys; the others must be left out."""

    name: str
    type: str
    model: str = ""  # the served model or route that writes the analysis or the draft
    csv: str = ""  # analyst: a CSV file (absolute, or from ~)
    sqlite: str = ""  # analyst: a SQLite database (absolute, or from ~), opened read-only
    query: str = ""  # analyst, with sqlite: the SELECT whose rows are the data
    url: str = ""  # analyst: an http(s) endpoint answering JSON
    items: str = ""  # analyst, with url: the dotted path of the list of records
    date_column: str = ""  # analyst: the time axis (default: the first date-like column)
    value_column: str = ""  # analyst: what is charted (default: the first numeric column)
    group_by: str = ""  # analyst: a column whose groups are ranked and charted apart
    prompt: str = ""  # draft: the instruction the model is given (default: a short post)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.name!r}: a pipeline's name is letters, digits, - and _")
        if self.type not in PIPELINE_TYPES:
            raise ValueError(f"type: {self.type!r} is not one of {', '.join(PIPELINE_TYPES)}")
        if not self.model:
            raise ValueError("model: the model or route the pipeline asks")
        for key in set().union(*_OWN.values()) - _OWN[self.type]:
            if getattr(self, key):
                raise ValueError(f"{key}: {self.type} pipelines do not take it")
        if self.type == "analyst":
            self._check_data()

    def _check_data(self) -> None:
        given = [k for k in ("csv", "sqlite", "url") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give one data source: csv, sqlite (with query) or url")
        for key in ("csv", "sqlite"):
            if getattr(self, key) and not Path(getattr(self, key)).expanduser().is_absolute():
                raise ValueError(f"{key}: {getattr(self, key)!r} is not an absolute path "
                                 "(or one from ~)")
        if bool(self.sqlite) != bool(self.query):
            raise ValueError("query: a sqlite source takes one SELECT, and only it takes one")
        if self.query and not re.match(r"\s*(select|with)\b", self.query, re.IGNORECASE):
            raise ValueError("query: must be a SELECT (the database is opened read-only)")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url: {self.url!r} is not an http(s) URL")
        if self.items and not self.url:
            raise ValueError("items: only a url source takes it")

    @property
    def instruction(self) -> str:
        """The draft's instruction: `prompt`, else the default."""
        return self.prompt.strip() or DEFAULT_DRAFT_PROMPT

    @property
    def data_source(self) -> str:
        """An analyst's data, as a person would name it: the file, or the URL."""
        return self.csv or self.sqlite or self.url


def parse_pipelines(data: dict) -> tuple[PipelineSpec, ...]:
    """[pipelines.NAME] of a read tenshu.toml."""
    from tenshu.config.routing import _build

    tables = data.get("pipelines", {})
    if not isinstance(tables, dict):
        raise ValueError("pipelines: must be tables ([pipelines.NAME])")
    return tuple(_build(PipelineSpec, table, f"pipelines.{name}", name=name)
                 for name, table in tables.items())
