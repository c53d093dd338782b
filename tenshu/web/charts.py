"""Charts as SVG, drawn on the server: time series, horizontal (stacked) bars, histograms,
meters and a waterfall of one request's candidates, for the dashboard and the trace page.

Each function is pure: numbers and labels in, an `<svg class="chart">` out, as Markup with every
label escaped. The SVG has a viewBox, so it scales to its container's width, and no style of its
own: colours come from app.css through classes (s1..s6 for series, axis, grid, line, area,
track, hit, empty), so light and dark both work under the page's strict CSP. Every bar and
every point in time has a <title>, so hovering shows its values. No data draws the empty state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# The viewBox's width. Drawn about this wide (a third of a wide page, or a phone's width), an
# 11 px label is 11 px on the screen; wider or narrower, the whole chart scales.
W = 360
CHAR = 6.8  # the width of an 11 px digit or so (DejaVu Sans: 7): a label fits if this does
LEFT = 44  # room for the y axis' labels
ROW = 22  # one horizontal bar


@dataclass(frozen=True)
class Series:
    """One line, or one part of a stacked bar: a name and one value per point (None: none)."""

    name: str
    values: Sequence[float | None]
    cls: str = ""  # a class from app.css; "" takes s1..s6 by position


@dataclass(frozen=True)
class Span:
    """One row of a waterfall: from `start` to `end` on the time axis."""

    label: str
    start: float
    end: float
    cls: str
    note: str = ""


def count(value: float) -> str:
    """1234 -> "1.2k": short enough for an axis."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def ms(value: float) -> str:
    if value >= 100_000:
        return f"{value / 1000:.0f} s"
    if value >= 1000:
        return f"{value / 1000:.3g} s"
    return f"{value:.3g} ms" if value < 10 else f"{value:.0f} ms"


def empty(title: str, message: str = "No requests in this period") -> Markup:
    """The chart of nothing: a short box that says so."""
    return _svg(title, 56, [f'<text class="empty" x="{W / 2}" y="32" '
                            f'text-anchor="middle">{escape(message)}</text>'], "empty-chart")


def time_series(labels: Sequence[str], series: Sequence[Series], *, title: str,
                fmt: Callable[[float], str] = count, area: bool = False,
                integer: bool = False, ticks: Sequence[tuple[int, str]] | None = None,
                height: int = 170) -> Markup:
    """Lines over time, one point per label (e.g. "2 Mar 14:05", shown on hover); `ticks` are
    the (point, text) written under the axis (by default about six of the labels); `area`
    shades under the lines."""
    values = [v for s in series for v in s.values if v is not None]
    if not labels or not any(values):
        return empty(title)
    top = 20
    bottom = height - 20
    step, peak = _scale(max(values), integer)
    n = len(labels)
    x = (lambda i: LEFT + (W - LEFT - 6) * (i / (n - 1) if n > 1 else 0.5))  # noqa: E731
    y = (lambda v: bottom - (bottom - top) * v / peak)  # noqa: E731
    parts = _legend(series, 2) + _y_axis(step, peak, y, fmt)
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{W}" y2="{bottom}"/>')
    if ticks is None:
        ticks = [(i, labels[i]) for i in range(0, n, max(1, math.ceil((n - 1) / 5)))]
    parts += _x_labels([(x(i), text) for i, text in ticks], height - 5)
    for k, s in enumerate(series):
        cls = s.cls or f"s{k % 6 + 1}"
        for run in _runs(s.values):
            points = " ".join(f"{x(i):.1f},{y(s.values[i]):.1f}" for i in run)
            if area:
                parts.append(f'<polygon class="area {cls}" points="{x(run[0]):.1f},{bottom} '
                             f'{points} {x(run[-1]):.1f},{bottom}"/>')
            if len(run) > 1:
                parts.append(f'<polyline class="line {cls}" points="{points}"/>')
            else:  # a lone point draws no line: a dot then
                parts.append(f'<circle class="{cls}" cx="{x(run[0]):.1f}" '
                             f'cy="{y(s.values[run[0]]):.1f}" r="2.5"/>')
    width = (W - LEFT - 6) / max(1, n - 1)
    for i, label in enumerate(labels):  # a column per point in time, to hover
        shown = "; ".join(f"{s.name} {fmt(v)}" for s in series
                          if (v := s.values[i]) is not None) or "none"
        parts.append(f'<rect class="hit" x="{x(i) - width / 2:.1f}" y="{top}" '
                     f'width="{width:.1f}" height="{bottom - top}"><title>'
                     f'{escape(label)}: {escape(shown)}</title></rect>')
    return _svg(title, height, parts)


def bars(labels: Sequence[str], series: Sequence[Series], *, title: str,
         fmt: Callable[[float], str] = count, notes: Sequence[str] | None = None,
         legend: bool | None = None) -> Markup:
    """Horizontal bars, one per label, each stacked from the series' values; the total (or the
    label's note) is written after the bar. A legend names the series (by default, when there
    are several)."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return empty(title)
    legend = len(series) > 1 if legend is None else legend
    top = 20 if legend else 4
    gutter = min(140.0, max(CHAR * len(label) for label in labels) + 8)
    tail = max(CHAR * len(notes[i] if notes else fmt(t)) for i, t in enumerate(totals)) + 6
    span = W - gutter - tail
    peak = max(totals)
    parts = _legend(series, 2) if legend else []
    for i, label in enumerate(labels):
        y = top + i * ROW
        parts.append(f'<text x="{gutter - 6:.1f}" y="{y + 15}" text-anchor="end">'
                     f'<title>{escape(label)}</title>{escape(_fit(label, gutter - 8))}</text>')
        at = gutter
        for k, s in enumerate(series):
            value = s.values[i] or 0
            if not value:
                continue
            width = span * value / peak
            parts.append(f'<rect class="{s.cls or f"s{k % 6 + 1}"}" x="{at:.1f}" y="{y + 4}" '
                         f'width="{max(width, 1):.1f}" height="{ROW - 8}"><title>'
                         f'{escape(label)}: {escape(s.name)} {escape(fmt(value))}</title></rect>')
            at += width
        note = notes[i] if notes else fmt(totals[i])
        parts.append(f'<text x="{at + 5:.1f}" y="{y + 15}">{escape(note)}</text>')
    return _svg(title, top + len(labels) * ROW + 4, parts)


def histogram(edges: Sequence[float], series: Sequence[Series], *, title: str,
              edge_fmt: Callable[[float], str] = count, unit: str = "requests",
              legend: bool | None = None, height: int = 170) -> Markup:
    """Vertical bars over bins [edges[i], edges[i+1]) (the last edge may be infinite), stacked
    from the series' counts; a legend names the series (by default, when there are several)."""
    n = len(edges) - 1
    totals = [sum(s.values[i] or 0 for s in series) for i in range(max(0, n))]
    if n < 1 or not any(totals):
        return empty(title)
    legend = len(series) > 1 if legend is None else legend
    top = 20 if legend else 8
    bottom = height - 20
    step, peak = _scale(max(totals), True)
    y = (lambda v: bottom - (bottom - top) * v / peak)  # noqa: E731
    width = (W - LEFT - 6) / n
    parts = (_legend(series, 2) if legend else []) + _y_axis(step, peak, y, count)
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{W}" y2="{bottom}"/>')
    names = [_bin_name(edges[i], edges[i + 1], edge_fmt) for i in range(n)]
    for i in range(n):
        base = 0.0
        for k, s in enumerate(series):
            value = s.values[i] or 0
            if not value:
                continue
            who = f" ({s.name})" if legend else ""
            parts.append(f'<rect class="{s.cls or f"s{k % 6 + 1}"}" '
                         f'x="{LEFT + i * width + 1:.1f}" y="{y(base + value):.1f}" '
                         f'width="{max(width - 2, 1):.1f}" '
                         f'height="{y(base) - y(base + value):.1f}"><title>'
                         f'{escape(names[i])}: {count(value)} {escape(unit)}{escape(who)}'
                         f'</title></rect>')
            base += value
    parts += _x_labels([(LEFT + i * width, edge_fmt(edges[i])) for i in range(n + 1)
                        if math.isfinite(edges[i])], height - 5)
    return _svg(title, height, parts)


def meters(rows: Sequence[tuple[str, float, str]], *, title: str,
           message: str = "No budgets") -> Markup:
    """(label, fraction used, text) per row: a track filled to the fraction, amber from 80%,
    red when spent."""
    if not rows:
        return empty(title, message)
    parts = []
    for i, (label, share, text) in enumerate(rows):
        y = 4 + i * 36
        cls = "s5" if share >= 1 else "s2" if share >= 0.8 else "s1"
        parts += [f'<text x="0" y="{y + 11}">{escape(_fit(label, W * 0.55))}</text>',
                  f'<text x="{W}" y="{y + 11}" text-anchor="end">{escape(text)}</text>',
                  f'<rect class="track" x="0" y="{y + 16}" width="{W}" height="10" rx="3"/>',
                  f'<rect class="{cls}" x="0" y="{y + 16}" width="{W * min(share, 1):.1f}" '
                  f'height="10" rx="3"><title>{escape(label)}: {escape(text)}</title></rect>']
    return _svg(title, 8 + len(rows) * 36, parts)


def waterfall(spans: Sequence[Span], *, title: str,
              fmt: Callable[[float], str] = ms) -> Markup:
    """Rows on one time axis from 0: each candidate tried, then the answer's generation."""
    if not spans:
        return empty(title, "Nothing was tried")
    gutter = min(150.0, max(CHAR * len(s.label) for s in spans) + 8)
    end = max(s.end for s in spans) or 1.0
    step, _ = _scale(end, False)
    x = (lambda v: gutter + (W - gutter - 8) * v / end)  # noqa: E731
    height = len(spans) * ROW + 22
    ticks = [k * step for k in range(int(end / step + 1e-9) + 1)]
    parts = [f'<line class="grid" x1="{x(t):.1f}" y1="0" x2="{x(t):.1f}" y2="{height - 18}"/>'
             for t in ticks]
    parts += _x_labels([(x(t), fmt(t)) for t in ticks], height - 5)
    for i, s in enumerate(spans):
        y = i * ROW
        note = f" - {s.note}" if s.note else ""
        parts += [f'<text x="{gutter - 6:.1f}" y="{y + 15}" text-anchor="end"><title>'
                  f'{escape(s.label)}</title>{escape(_fit(s.label, gutter - 8))}</text>',
                  f'<rect class="{s.cls}" x="{x(s.start):.1f}" y="{y + 4}" '
                  f'width="{max(x(s.end) - x(s.start), 2):.1f}" height="{ROW - 8}"><title>'
                  f'{escape(s.label)}: {escape(fmt(s.end - s.start))}{escape(note)}'
                  f'</title></rect>']
    return _svg(title, height, parts)


# -- parts ----------------------------------------------------------------------------------


def _svg(title: str, height: float, parts: list[str], extra: str = "") -> Markup:
    label = escape(title)
    return Markup(f'<svg class="chart {extra}" viewBox="0 0 {W} {height:.0f}" role="img" '
                  f'aria-label="{label}" xmlns="http://www.w3.org/2000/svg">'
                  f'<title>{label}</title>{"".join(parts)}</svg>')


def _legend(series: Sequence[Series], y: float) -> list[str]:
    parts, at = [], LEFT
    for k, s in enumerate(series):
        cls = s.cls or f"s{k % 6 + 1}"
        parts += [f'<rect class="{cls}" x="{at}" y="{y + 2}" width="10" height="8" rx="2"/>',
                  f'<text x="{at + 14}" y="{y + 10}">{escape(s.name)}</text>']
        at += 24 + CHAR * len(s.name)
    return parts


def _y_axis(step: float, peak: float, y: Callable[[float], float],
            fmt: Callable[[float], str]) -> list[str]:
    parts = []
    for k in range(1, int(round(peak / step)) + 1):
        v = k * step
        parts += [f'<line class="grid" x1="{LEFT}" y1="{y(v):.1f}" x2="{W}" y2="{y(v):.1f}"/>',
                  f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end">'
                  f'{escape(fmt(v))}</text>']
    return parts


def _scale(high: float, integer: bool) -> tuple[float, float]:
    """A tick step of 1, 2 or 5 times a power of ten giving about four ticks, and the axis'
    top: the first tick at or above `high`."""
    high = max(high, 1e-9)
    raw = high / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, round(step))
    return step, step * math.ceil(high / step - 1e-9)


def _x_labels(labels: Sequence[tuple[float, str]], y: float) -> list[str]:
    """Labels centred under their x, moved in to stay inside the chart, and left out where
    they would overlap the one before."""
    parts, taken = [], -math.inf
    for x, text in labels:
        half = CHAR * len(text) / 2
        x = min(max(x, half), W - half)
        if x - half < taken + 6:
            continue
        taken = x + half
        parts.append(f'<text x="{x:.1f}" y="{y}" text-anchor="middle">{escape(text)}</text>')
    return parts


def _runs(values: Sequence[float | None]) -> list[list[int]]:
    """The indexes of each stretch of values without a gap."""
    runs: list[list[int]] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _bin_name(low: float, high: float, fmt: Callable[[float], str]) -> str:
    return f"{fmt(low)} and more" if not math.isfinite(high) else f"{fmt(low)} to {fmt(high)}"


def _fit(text: str, width: float) -> str:
    """`text`, cut with an ellipsis to about `width` units (the full text is in its title)."""
    most = max(3, int(width / CHAR + 1e-6))
    return text if len(text) <= most else text[:most - 1] + "…"
