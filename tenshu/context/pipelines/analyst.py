"""The analyst pipeline: data -> summary and chart -> the model's reading -> a Markdown report.

    load (data.py) -> choose columns, summarise (summary.py), draw (chart.py)  [a thread]
      -> ask_json (model.py): {"headline", "findings": [...], "watch": [...]}
      -> reports/YYYY-MM-DD-NAME.md and .png in the owner's pipelines folder  [a thread]

Everything in the report's Summary and chart is computed by tenshu; the model only reads the
summary and writes the headline, the findings and what to watch, in a JSON schema whose string
limits are sized to the model's answer budget, so that even a small local model's
grammar-constrained answer ends within it. A second run on the same day replaces that day's
report.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from tenshu.config.pipelines import PipelineSpec
from tenshu.context.pipelines.base import PipelineResult
from tenshu.context.pipelines.chart import draw
from tenshu.context.pipelines.data import choose, load
from tenshu.context.pipelines.model import answer_chars, ask_json
from tenshu.context.pipelines.summary import Summary, summarise
from tenshu.context.pipelines.workspace import write
from tenshu.store.people import Principal

ANSWER_TOKENS = 1024
SYSTEM = ("You are a careful data analyst. You read a summary that was computed from a data set "
          "and answer in JSON: a one-line headline, the findings the numbers support, and what "
          "to watch next. Use only the numbers given; do not invent any.")


def analysis_schema(chars: int) -> dict:
    """The analysis's schema, its strings bounded so that a whole answer is about `chars`
    characters at most."""
    findings, watch = (5, 3) if chars >= 1200 else (3, 2)

    def strings(most: int, length: int) -> dict:
        return {"type": "array", "minItems": 1, "maxItems": most,
                "items": {"type": "string", "minLength": 1, "maxLength": length}}

    return {"type": "object",
            "properties": {
                "headline": {"type": "string", "minLength": 1,
                             "maxLength": _clamp(chars // 8, 40, 160)},
                "findings": strings(findings, _clamp(chars * 5 // 8 // findings, 40, 300)),
                "watch": strings(watch, _clamp(chars // 4 // watch, 30, 200))},
            "required": ["headline", "findings", "watch"], "additionalProperties": False}


async def run_analyst(spec: PipelineSpec, principal: Principal, *, gateway, folder: Path,
                      now: datetime) -> PipelineResult:
    day = now.date().isoformat()
    frame = await load(spec)

    def compute() -> tuple[Summary, bytes]:
        used = choose(frame, spec)
        over = f" over {used.date}" if used.date else f" by {used.group}" if used.group else ""
        return (summarise(frame, used, spec.data_source),
                draw(frame, used, f"{spec.name}: {used.value}{over}"))

    summary, png = await asyncio.to_thread(compute)
    # three quarters of the budget for the strings: the JSON around them, and a margin
    schema = analysis_schema(answer_chars(gateway, spec.model, ANSWER_TOKENS) * 3 // 4)
    analysis = await ask_json(
        gateway, principal, f"pipelines/{spec.name}", model=spec.model, system=SYSTEM,
        prompt=f"The data set {spec.name!r}, on {day}. The summary:", material=summary.brief(),
        schema=schema, name="analysis", answer_tokens=ANSWER_TOKENS)
    headline = _line(analysis["headline"])
    stem = f"{day}-{spec.name}"
    text = report(spec.name, day, headline, [_line(f) for f in analysis["findings"]],
                  summary, f"{stem}.png", [_line(w) for w in analysis["watch"]])

    def save() -> tuple[Path, Path]:
        chart = write(folder, f"reports/{stem}.png", png)
        return write(folder, f"reports/{stem}.md", text), chart

    files = await asyncio.to_thread(save)
    body = "\n".join([headline, *([summary.change.text()] if summary.change else []),
                      f"Report: {files[0].relative_to(folder.parent)}"])
    return PipelineResult(f"{spec.name}: {headline}", body, files)


def report(name: str, day: str, headline: str, findings: list[str], summary: Summary,
           chart: str, watch: list[str]) -> str:
    """The report as Markdown; `chart` is the PNG's name beside it."""
    over = f" over {summary.used.date}" if summary.used.date else ""
    return "\n".join([
        f"# {name}: {day}", "", f"**{headline}**", "",
        "## Findings", "", *(f"- {f}" for f in findings), "",
        "## Summary", "", summary.markdown(), "",
        "## Chart", "", f"![{summary.used.value}{over}]({chart})", "",
        "## To watch", "", *(f"- {w}" for w in watch), ""])


def _line(text: str) -> str:
    """A model's string as one line of Markdown text."""
    return " ".join(text.split())


def _clamp(n: int, low: int, high: int) -> int:
    return max(low, min(high, n))
