"""The sources of an import: files, globs or stdin, as JSON lines, CSV or Parquet rows.

:func:`resolve` turns the command line into :class:`Source` files (stdin is spooled to a file,
so that it can be read twice: once for its digest, once for its rows). :func:`rows` reads one
source as ``(line, event or None, error or None)``: JSON lines as they are (Segment spec, as
``segmenter send`` takes them), CSV and Parquet rows through the ``--map`` column mapping
(:mod:`streams.importer.mapping`). Parquet without a mapping takes each row as an event (columns
named as the Segment spec's fields). Nothing holds more than one row (or one Parquet batch).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from streams.importer.mapping import ColumnMap, MappingError, RowError, parse_time

Format = Literal["jsonl", "csv", "parquet"]
PARQUET_BATCH = 8192


class SourceError(ValueError):
    """A source cannot be read (one clear line)."""


@dataclass(frozen=True)
class Source:
    """One file to import, its format, and how the user named it (for messages)."""

    path: Path
    format: Format
    name: str


def format_of(path: str, forced: Format | None) -> Format:
    """The format a file's name says (``--format`` wins)."""
    if forced is not None:
        return forced
    lower = path.lower()
    if lower.endswith((".csv", ".tsv", ".csv.txt")):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    return "jsonl"


def resolve(names: Sequence[str], forced: Format | None, spool: Path) -> list[Source]:
    """Files, glob patterns (sorted) and ``-`` (stdin, spooled under ``spool``), in order."""
    sources: list[Source] = []
    for name in names:
        if name == "-":
            target = spool / f"stdin-{len(sources)}"
            with target.open("wb") as sink:
                shutil.copyfileobj(sys.stdin.buffer, sink)
            sources.append(Source(target, forced or "jsonl", "<stdin>"))
            continue
        matches = sorted(glob.glob(name)) if glob.has_magic(name) else [name]
        if not matches:
            raise SourceError(f"no file matches {name!r}")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise SourceError(f"cannot read {match}: no such file")
            sources.append(Source(path, format_of(match, forced), match))
    if not sources:
        raise SourceError("nothing to import: name one or more files, globs, or - for stdin")
    return sources


def digest(sources: Sequence[Source], options: Sequence[str]) -> str:
    """The import run's id: the sources' bytes, in order, and the options that shape rows."""
    hasher = hashlib.sha256()
    for option in options:
        hasher.update(option.encode() + b"\0")
    for source in sources:
        hasher.update(source.format.encode() + b"\0")
        with source.path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
        hasher.update(b"\0\0")
    return hasher.hexdigest()[:24]


Row = tuple[int, dict[str, Any] | bytes | None, str | None]
"""``(line, event, error)``: an event as JSON bytes (a JSON line as given) or a dict (a mapped
row), or an error message."""


def rows(source: Source, mapping: ColumnMap | None) -> Iterator[Row]:
    """Every row of ``source`` (raise :class:`SourceError`/``MappingError`` for the file)."""
    if source.format == "csv":
        if mapping is None:
            raise MappingError(
                f"{source.name}: a CSV file needs --map (e.g. --map customer_id=Customer,"
                'time=Date,event="Order Completed",revenue=Total)'
            )
        yield from _csv_rows(source, mapping)
    elif source.format == "parquet":
        yield from _parquet_rows(source, mapping)
    else:
        yield from _json_rows(source)


def _json_rows(source: Source) -> Iterator[Row]:
    with source.path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if line:
                yield number, line, None


def _csv_rows(source: Source, mapping: ColumnMap) -> Iterator[Row]:
    delimiter = "\t" if source.path.name.lower().endswith(".tsv") else ","
    with source.path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames
        if not header:
            raise SourceError(f"{source.name}: empty CSV file (no header row)")
        bound = mapping.bind(header, source.name)
        unused = bound.unmapped(header)
        if unused:
            print(
                f"segmenter import: {source.name}: columns not mapped (not imported):"
                f" {', '.join(unused)}",
                file=sys.stderr,
            )
        width = len(header)
        try:
            for row in reader:
                line = reader.line_num
                found = _width(row, width)
                if found != width:
                    yield line, None, f"expected {width} columns, found {found}"
                    continue
                try:
                    yield line, bound.event(row), None
                except RowError as exc:
                    yield line, None, str(exc)
        except csv.Error as exc:
            raise SourceError(f"{source.name}:{reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise SourceError(f"{source.name}: not UTF-8 text ({exc.reason})") from None


def _width(row: dict[Any, Any], width: int) -> int:
    """How many columns a CSV row has (``DictReader`` fills missing ones with None and keeps
    extra ones under the key None)."""
    extra = row.get(None)
    if extra:
        return width + len(extra)
    return width - sum(value is None for value in row.values())


def _parquet_rows(source: Source, mapping: ColumnMap | None) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(source.path)
    except Exception as exc:  # pyarrow raises its own errors for a file that is not Parquet
        raise SourceError(f"{source.name}: not a Parquet file ({exc})") from None
    header = table.schema_arrow.names
    bound = mapping.bind(header, source.name) if mapping is not None else None
    number = 0
    for batch in table.iter_batches(batch_size=PARQUET_BATCH):
        for row in batch.to_pylist():
            number += 1
            try:
                yield number, bound.event(row) if bound else _as_event(row), None
            except RowError as exc:
                yield number, None, str(exc)


def _as_event(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row taken as a Segment event: timestamps as ISO 8601, nulls dropped."""
    doc = {key: _plain(value) for key, value in row.items() if value is not None}
    if "timestamp" in doc and not isinstance(doc["timestamp"], str):
        doc["timestamp"] = parse_time(row["timestamp"])
    return doc


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return parse_time(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def as_bytes(event: dict[str, Any] | bytes) -> bytes:
    """An event as a JSON line."""
    return event if isinstance(event, bytes) else orjson.dumps(event)
