"""What the analyst computes from its data before any model is asked: a compact Summary, as
Markdown tables for the report and as a few lines of text for the model's prompt.

    summary = summarise(frame, columns, source)
    summary.markdown()      # the report's Summary section
    summary.brief()         # the facts the model reads

rows and columns (type, values present); describe() of the numeric columns; the latest values
(the value column's total at the latest time, and each group's); the change against the
previous period, when there are dates; the groups ranked by their total. Periods are days:
daily data spanning two weeks or more compares the last 7 days with the 7 before, anything
else its last day with the day before it. Values are summed (sales, orders, visits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from tenshu.context.pipelines.data import Columns

MAX_COLUMNS = 30  # listed in the report
MAX_DESCRIBED = 8  # numeric columns described
MAX_GROUPS = 10
WEEK = 7


@dataclass(frozen=True)
class Change:
    label: str  # "the last 7 days (2026-02-24 to 2026-03-01) against the 7 days before"
    current: float
    previous: float

    @property
    def delta(self) -> float:
        return self.current - self.previous

    @property
    def percent(self) -> float | None:
        return None if self.previous == 0 else 100 * self.delta / abs(self.previous)

    def text(self) -> str:
        pct = "" if self.percent is None else f" ({self.percent:+.1f}%)"
        return (f"{self.label}: {number(self.current)} against {number(self.previous)}, "
                f"{'+' if self.delta >= 0 else '-'}{number(abs(self.delta))}{pct}")


@dataclass(frozen=True)
class Summary:
    source: str
    rows: int
    columns: tuple[tuple[str, str, int], ...]  # name, dtype, values present
    used: Columns
    described: pd.DataFrame  # describe() of the numeric columns, one row per column
    first: str | None  # the earliest and latest dates, with a date column
    last: str | None
    latest_at: str  # the latest time, or "the last row"
    latest: tuple[tuple[str, float], ...]  # ("total" or the value column, x), then each group's
    change: Change | None
    groups: tuple[tuple[str, float, float | None], ...]  # group, total, share in %

    def markdown(self) -> str:
        span = f", {self.first} to {self.last}" if self.first else ""
        parts = [f"`{self.source}`: {self.rows:,} rows{span}.", "",
                 table(["column", "type", "values"],
                       [[name, dtype, f"{n:,}"] for name, dtype, n in self.columns])]
        if not self.described.empty:
            stats = list(self.described.columns)
            parts += ["", table(["", *stats], [[str(name), *map(number, row)] for name, row
                                               in zip(self.described.index,
                                                      self.described.to_numpy(), strict=True)])]
        parts += ["", table([f"latest ({self.latest_at})", self.used.value],
                            [[label, number(x)] for label, x in self.latest])]
        if self.change is not None:
            parts += ["", f"Change: {self.change.text()}."]
        if self.groups:
            parts += ["", table([self.used.group or "", self.used.value, "share"],
                                [[g, number(x), "" if s is None else f"{s:.1f}%"]
                                 for g, x, s in self.groups])]
        return "\n".join(parts)

    def brief(self) -> str:
        """The facts in a few lines, most telling first (the model's prompt may cut the end)."""
        span = f" from {self.first} to {self.last}" if self.first else ""
        lines = [f"{self.rows} rows{span}; the value is {self.used.value}."]
        if self.change is not None:
            lines.append(f"Change: {self.change.text()}.")
        lines.append(f"Latest ({self.latest_at}): " +
                     ", ".join(f"{label} {number(x)}" for label, x in self.latest) + ".")
        if self.groups:
            lines.append(f"By {self.used.group}: " + ", ".join(
                f"{g} {number(x)}" + ("" if s is None else f" ({s:.0f}%)")
                for g, x, s in self.groups) + ".")
        if self.used.value in self.described.index:
            row = self.described.loc[self.used.value]
            lines.append(f"{self.used.value}: mean {number(row['mean'])}, min "
                         f"{number(row['min'])}, max {number(row['max'])}.")
        lines.append("Columns: " + ", ".join(f"{n} ({t})" for n, t, _ in self.columns) + ".")
        return "\n".join(lines)


def summarise(frame: pd.DataFrame, used: Columns, source: str) -> Summary:
    numeric = frame.select_dtypes("number").select_dtypes(exclude="bool")
    described = (numeric.iloc[:, :MAX_DESCRIBED].describe().T if not numeric.empty
                 else pd.DataFrame())
    columns = tuple((str(c), str(frame[c].dtype), int(frame[c].notna().sum()))
                    for c in frame.columns[:MAX_COLUMNS])
    first = last = change = None
    if used.date is not None:
        dated = frame.dropna(subset=[used.date])
        first, last = _day(dated[used.date].min()), _day(dated[used.date].max())
        when = dated[used.date].max()
        latest_rows = dated[dated[used.date] == when]
        latest_at = _day(when) if when == when.normalize() else str(when)
        change = _change(dated, used)
    else:
        latest_rows, latest_at = frame.tail(1), "the last row"
    return Summary(source, len(frame), columns, used, described, first, last, latest_at,
                   _latest(latest_rows, used), change, _groups(frame, used))


def _latest(rows: pd.DataFrame, used: Columns) -> tuple[tuple[str, float], ...]:
    label = "total" if len(rows) > 1 else used.value
    out = [(label, float(rows[used.value].sum()))]
    if used.group is not None:
        by = rows.groupby(used.group, dropna=False)[used.value].sum()
        out += [(str(g), float(x)) for g, x in by.sort_values(ascending=False).items()]
    return tuple(out[:MAX_GROUPS + 1])


def _change(dated: pd.DataFrame, used: Columns) -> Change | None:
    daily = dated.groupby(dated[used.date].dt.floor("D"))[used.value].sum().sort_index()
    if len(daily) < 2:
        return None
    days = daily.index
    gap = pd.Series(days).diff().dt.days.median()
    if gap <= 1 and (days[-1] - days[0]).days >= 2 * WEEK - 1:
        end, week = days[-1], timedelta(days=WEEK)
        current = daily[days > end - week].sum()
        previous = daily[(days > end - 2 * week) & (days <= end - week)].sum()
        label = (f"the last {WEEK} days ({_day(end - week + timedelta(days=1))} to "
                 f"{_day(end)}) against the {WEEK} days before")
        return Change(label, float(current), float(previous))
    return Change(f"{_day(days[-1])} against {_day(days[-2])}", float(daily.iloc[-1]),
                  float(daily.iloc[-2]))


def _groups(frame: pd.DataFrame, used: Columns) -> tuple[tuple[str, float, float | None], ...]:
    if used.group is None:
        return ()
    totals = frame.groupby(used.group, dropna=False)[used.value].sum()
    whole = float(totals.sum())
    top = totals.sort_values(ascending=False).head(MAX_GROUPS)
    return tuple((str(g), float(x), 100 * float(x) / whole if whole else None)
                 for g, x in top.items())


def _day(when: pd.Timestamp) -> str:
    return when.date().isoformat()


def number(x: float) -> str:
    """1234 -> '1,234'; 1234.5678 -> '1,234.57'; NaN -> ''."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:,.2f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a '|' in a cell is escaped."""
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ")
                                 for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])
