"""The analyst's chart: the value over time (a line per group, for the largest groups), or by
group, or by row; a PNG of WIDTH x HEIGHT pixels.

Drawn on a bare matplotlib Figure with the Agg canvas, never through pyplot: no display, no
global state, so it is safe in a worker thread while another report is drawn. CPU work: not
for the event loop.
"""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from tenshu.context.pipelines.data import Columns

WIDTH, HEIGHT, DPI = 800, 400, 100
MAX_LINES = 5  # groups drawn as their own line; the rest are left out of the chart


def draw(frame: pd.DataFrame, used: Columns, title: str) -> bytes:
    """The chart as PNG bytes."""
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    value = used.value
    if used.date is not None:
        dated = frame.dropna(subset=[used.date])
        when = dated[used.date]  # rows at the same time (one per region...) are summed
        if used.group is not None:
            top = dated.groupby(used.group)[value].sum().nlargest(MAX_LINES).index
            for group in top:
                rows = dated[dated[used.group] == group]
                series = rows.groupby(when[rows.index])[value].sum()
                axes.plot(series.index, series.to_numpy(), label=str(group))
            axes.legend(title=used.group, fontsize="small")
        else:
            series = dated.groupby(when)[value].sum()
            axes.plot(series.index, series.to_numpy())
        locator = AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        axes.set_ylabel(value)
    elif used.group is not None:
        totals = frame.groupby(used.group)[value].sum().nlargest(12)
        axes.bar([str(g) for g in totals.index], totals.to_numpy())
        axes.set_ylabel(value)
        axes.tick_params(axis="x", labelrotation=30)
    else:
        axes.plot(range(len(frame)), frame[value].to_numpy())
        axes.set_xlabel("row")
        axes.set_ylabel(value)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()

