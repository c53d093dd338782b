"""The analyst's data as a pandas DataFrame, and the columns it is read by.

    frame = await load(spec)                  # csv | sqlite (read-only) | url (JSON records)
    columns = choose(frame, spec)             # the time axis, the value, the groups

A CSV or a SQLite query is read in a thread; a URL is fetched on the loop (memory/sources.py's
fetch: http(s) only, a timeout, a size cap, redirects followed) and its records are read in a
thread. Every failure is a PipelineError naming the file or URL and the cause; a column the
configuration names that the data lacks names the columns it has.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import warnings
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tenshu.config.pipelines import PipelineSpec
from tenshu.context.pipelines.base import PipelineError
from tenshu.context.sources.base import ContextSourceError
from tenshu.context.sources.http_json import _list_at
from tenshu.memory.readers import ReadError
from tenshu.memory.sources import fetch

FETCH_TIMEOUT_S = 30.0
MAX_JSON_BYTES = 20 * 2**20
DATE_SHARE = 0.9  # a text column is a date column when this share of its values parse


@dataclass(frozen=True)
class Columns:
    date: str | None  # parsed to datetime64 in the frame
    value: str  # numeric
    group: str | None


async def load(spec: PipelineSpec) -> pd.DataFrame:
    if spec.url:
        try:
            body, _ = await fetch(spec.url, timeout=FETCH_TIMEOUT_S, max_bytes=MAX_JSON_BYTES)
        except ReadError as exc:
            raise PipelineError(str(exc)) from None
        return await asyncio.to_thread(_records, body, spec.items or ".", spec.url)
    if spec.csv:
        return await asyncio.to_thread(_csv, Path(spec.csv).expanduser())
    return await asyncio.to_thread(_sqlite, Path(spec.sqlite).expanduser(), spec.query)


def _csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # pandas' ParserError and EmptyDataError included
        raise PipelineError(f"{path}: not readable as CSV ({exc})") from None


def _sqlite(path: Path, query: str) -> pd.DataFrame:
    if not path.is_file():
        raise PipelineError(f"{path}: no such database file")
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            return pd.read_sql_query(query, conn)
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise PipelineError(f"{path}: the query failed ({exc})") from None


def _records(body: bytes, items: str, url: str) -> pd.DataFrame:
    try:
        records = _list_at(json.loads(body), items, url)
    except ValueError as exc:
        raise PipelineError(f"{url}: the answer is not JSON ({exc})") from None
    except ContextSourceError as exc:
        raise PipelineError(str(exc)) from None
    if all(isinstance(r, dict) for r in records):
        return pd.json_normalize(records)
    return pd.DataFrame({"value": records})


def choose(frame: pd.DataFrame, spec: PipelineSpec) -> Columns:
    """The columns to read `frame` by (the date column is parsed in place): each given one
    must be there; the date defaults to the first date-like column, the value to the first
    numeric one."""
    if frame.empty:
        raise PipelineError(f"{spec.data_source}: no rows")
    for key in ("date_column", "value_column", "group_by"):
        name = getattr(spec, key)
        if name and name not in frame.columns:
            raise PipelineError(f"{key}: {spec.data_source} has no column {name!r} (it has "
                                f"{', '.join(map(str, frame.columns))})")
    date = spec.date_column or next((c for c in frame.columns if _date_like(frame[c])), None)
    if date is not None:
        frame[date] = _dates(frame[date])
        if frame[date].isna().all():
            raise PipelineError(f"date_column: no value of {date!r} in {spec.data_source} "
                                "is a date")
    value = spec.value_column or next(
        (c for c in frame.columns if c not in (date, spec.group_by) and _numeric(frame[c])),
        None)
    if value is None:
        raise PipelineError(f"{spec.data_source} has no numeric column to chart (columns: "
                            f"{', '.join(map(str, frame.columns))}); set value_column")
    if not _numeric(frame[value]):
        frame[value] = pd.to_numeric(frame[value], errors="coerce")
        if frame[value].isna().all():
            raise PipelineError(f"value_column: {value!r} in {spec.data_source} holds no "
                                "numbers")
    return Columns(date, value, spec.group_by or None)


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _date_like(column: pd.Series) -> bool:
    """Dates already, or text that is ISO 8601 dates (other formats only when named:
    pandas' guess takes "12" for a day)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    if not (pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column)):
        return False  # numbers would parse as nanoseconds since 1970
    sample = column.dropna().head(200)
    return len(sample) > 0 and _dates(sample, ("ISO8601",)).notna().mean() >= DATE_SHARE


def _dates(column: pd.Series, formats=("ISO8601", "mixed")) -> pd.Series:
    """A column as datetimes, NaT where a value is none: the first of `formats` that reads
    most values, else the best partial reading."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return column
    best = pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns when it guesses per value
        for fmt in formats:
            try:
                parsed = pd.to_datetime(column, errors="coerce", format=fmt)
            except (ValueError, TypeError):  # mixed time zones, values of no date type
                continue
            if not pd.api.types.is_datetime64_any_dtype(parsed):
                continue
            if parsed.notna().mean() >= DATE_SHARE:
                return parsed
            if parsed.notna().sum() > best.notna().sum():
                best = parsed
    return best
