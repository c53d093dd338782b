"""The shipped pipelines a context trigger runs (`action = "pipeline"`): the analyst's report
and the article's draft. The engine calls one entry point:

    result = await run_pipeline(spec, event, principal, gateway=gateway, home=home, now=now)
    result.title, result.body     # the notification
    result.files                  # what was written, under the owner's pipelines folder

    analyst.py    data -> summary (summary.py) and chart (chart.py) -> the model's reading
    draft.py      a link -> the page's main text -> the model's draft
    data.py       the analyst's data: CSV, a read-only SQLite query, JSON records over HTTP
    model.py      the one model call, through the gateway as the owner, fitted to the window
    workspace.py  $TENSHU_HOME/workspaces/<user_id>/pipelines/, and nowhere else

A failure raises PipelineError, whose message names what failed and why; its `final` says that
no retry can help.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tenshu.config.pipelines import PipelineSpec
from tenshu.context.pipelines.base import PipelineError, PipelineResult
from tenshu.context.pipelines.workspace import workspace
from tenshu.store.context import StoredEvent
from tenshu.store.people import Principal

__all__ = ["PipelineError", "PipelineResult", "run_pipeline"]


async def run_pipeline(spec: PipelineSpec, event: StoredEvent, principal: Principal, *,
                       gateway, home: Path, now: datetime) -> PipelineResult:
    """Run `spec` for `event` as `principal`, writing into their workspace under `home`;
    `now` dates the files (its own date, in its own zone)."""
    folder = workspace(home, principal)
    # imported on first use: pandas, matplotlib and trafilatura take seconds, and a server
    # with no pipeline needs none of them
    if spec.type == "analyst":
        from tenshu.context.pipelines.analyst import run_analyst

        return await run_analyst(spec, principal, gateway=gateway, folder=folder, now=now)
    from tenshu.context.pipelines.draft import run_draft

    return await run_draft(spec, event, principal, gateway=gateway, folder=folder, now=now)
