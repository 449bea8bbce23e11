"""Rows of a table (CSV, Parquet) as Segment events: the ``--map`` column mapping.

``--map customer_id=Customer,time=Date,event="Order Completed",revenue=Total`` says which
column holds what. Targets:

* ``customer_id`` (the ``userId``) or ``anonymous_id``: one is required;
* ``time``: required; an ISO 8601 date or date-time (a date is midnight UTC; a time without an
  offset is UTC), or epoch seconds;
* ``event``: the ``track`` event's name, a column or a literal (a value that names no column is
  the name itself: ``event="Order Completed"``); ``type`` likewise (default ``track``);
* ``message_id``: the row's ``messageId``; without it the id is derived from the row's mapped
  content, so the same row always gets the same id (and two identical rows are one event);
* ``revenue``, ``total``, ``quantity``, ``price``, ``value``: numeric properties;
* ``properties.NAME`` / ``traits.NAME``: any other property (``track``) or trait
  (``identify``), kept as text.

Every column named must exist: a mapping that names an unknown column, or lacks the customer or
the time, is refused before anything is read, with the columns there are. A row whose values do
not fit (a bad time, a number that is not one, an empty customer) is rejected with
``file:line: message`` and the rest imported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

NUMERIC = ("revenue", "total", "quantity", "price", "value")
TARGETS = ("customer_id", "anonymous_id", "time", "event", "type", "message_id", *NUMERIC)
LITERAL_TARGETS = ("event", "type")


class MappingError(ValueError):
    """The ``--map`` option cannot be used with these columns (one clear line)."""


class RowError(ValueError):
    """One row does not fit the mapping: the message says which value and why."""


@dataclass(frozen=True)
class ColumnMap:
    """Target -> column (or, for ``event`` and ``type``, a literal)."""

    columns: dict[str, str]
    literals: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: Sequence[str]) -> ColumnMap:
        """From ``--map`` values: comma-separated ``TARGET=COLUMN`` pairs (repeatable)."""
        columns: dict[str, str] = {}
        for spec in specs:
            for pair in _pairs(spec):
                target, sep, column = pair.partition("=")
                target, column = target.strip(), _unquote(column.strip())
                if not sep or not target or not column:
                    raise MappingError(f"--map: expected TARGET=COLUMN, found {pair!r}")
                if target not in TARGETS and not target.startswith(("properties.", "traits.")):
                    raise MappingError(
                        f"--map: unknown target {target!r}; expected one of"
                        f" {', '.join(TARGETS)}, properties.NAME or traits.NAME"
                    )
                if target in columns:
                    raise MappingError(f"--map: {target!r} is mapped twice")
                columns[target] = column
        return cls(columns)

    def bind(self, header: Sequence[str], where: str) -> ColumnMap:
        """Check the mapping against a table's columns; ``event``/``type`` values that name no
        column become literals. Raise :class:`MappingError` naming what is wrong."""
        known = set(header)
        if "customer_id" not in self.columns and "anonymous_id" not in self.columns:
            raise MappingError(
                f"{where}: --map needs customer_id=COLUMN (or anonymous_id=COLUMN);"
                f" columns: {', '.join(header)}"
            )
        if "time" not in self.columns:
            raise MappingError(
                f"{where}: --map needs time=COLUMN (when each row happened);"
                f" columns: {', '.join(header)}"
            )
        columns: dict[str, str] = {}
        literals: dict[str, str] = {}
        for target, column in self.columns.items():
            if column in known:
                columns[target] = column
            elif target in LITERAL_TARGETS:
                literals[target] = column
            else:
                raise MappingError(
                    f"{where}: unknown column {column!r} (mapped to {target});"
                    f" columns: {', '.join(header)}"
                )
        if "event" not in columns and "event" not in literals and "type" not in literals:
            raise MappingError(
                f'{where}: --map needs event=COLUMN or event="Event Name" (what each row is,'
                ' e.g. event="Order Completed")'
            )
        return ColumnMap(columns, literals)

    def unmapped(self, header: Sequence[str]) -> list[str]:
        """The table's columns the mapping does not use."""
        used = set(self.columns.values())
        return [column for column in header if column not in used]

    def event(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The Segment event of one row (raise :class:`RowError` when a value does not fit)."""
        columns, literals = self.columns, self.literals
        doc: dict[str, Any] = {}
        kind = _text(row.get(columns["type"])) if "type" in columns else literals.get("type")
        doc["type"] = kind or "track"
        for target, key in (("customer_id", "userId"), ("anonymous_id", "anonymousId")):
            if target in columns:
                found = _text(row.get(columns[target]))
                if found:
                    doc[key] = found
        if "userId" not in doc and "anonymousId" not in doc:
            raise RowError("customer_id: expected a customer id, found an empty value")
        doc["timestamp"] = parse_time(row.get(columns["time"]))
        name = _text(row.get(columns["event"])) if "event" in columns else literals.get("event")
        properties: dict[str, Any] = {}
        traits: dict[str, Any] = {}
        for target, column in columns.items():
            value = row.get(column)
            if target in NUMERIC:
                number = _number(value, target)
                if number is not None:
                    properties[target] = number
            elif target.startswith("properties."):
                if value not in (None, ""):
                    properties[target[11:]] = value
            elif target.startswith("traits.") and value not in (None, ""):
                traits[target[7:]] = value
        if doc["type"] == "track":
            if not name:
                raise RowError("event: expected an event name, found an empty value")
            doc["event"] = name
            doc["properties"] = properties
        if traits:
            doc["traits"] = traits
        message = _text(row.get(columns["message_id"])) if "message_id" in columns else None
        doc["messageId"] = message or content_id(doc)
        return doc


def content_id(doc: Mapping[str, Any]) -> str:
    """A row's message id derived from its content: the same row, the same id."""
    digest = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"row-{digest[:32]}"


def parse_time(value: Any) -> str:
    """An ISO 8601 timestamp with an offset (UTC when none is given)."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).isoformat()
    text = _text(value)
    if not text:
        raise RowError("time: expected a date or time, found an empty value")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.fromtimestamp(float(text), UTC)
        except (ValueError, OverflowError, OSError):
            raise RowError(
                f"time: expected an ISO 8601 date or time (2024-03-05, 2024-03-05T14:30:00Z)"
                f" or epoch seconds, found {text!r}"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _number(value: Any, target: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError(f"{target}: expected a number, found {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        raise RowError(f"{target}: expected a number, found {value!r}") from None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _pairs(spec: str) -> list[str]:
    """Split on commas outside quotes."""
    pairs: list[str] = []
    current: list[str] = []
    quote = ""
    for char in spec:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
            current.append(char)
        elif char == ",":
            pairs.append("".join(current))
            current = []
        else:
            current.append(char)
    if current or spec.endswith(","):
        pairs.append("".join(current))
    return [pair for pair in pairs if pair.strip()]
