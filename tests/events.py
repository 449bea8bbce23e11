"""Test kit: Segment-style event documents, built one way for every test.

Each builder returns the document as a dict (what a test produces or posts); :func:`encoded`
gives its bytes (what a Kafka record holds) and :func:`parsed` the event the pipeline applies.
A timestamp (:data:`Moment`) may be an ISO 8601 string (kept as written), a ``datetime``
(``isoformat()``) or epoch seconds (RFC 3339 with milliseconds, as the pipeline writes times).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from streams.events.decode import decode
from streams.events.models import BaseEvent, iso

Moment = str | datetime | float
"""When an event happened: ISO 8601 text, a datetime, or epoch seconds."""

DEFAULT_TS = "2026-01-01T10:00:00Z"
"""The timestamp of a test event that does not say."""

ORDER = "Order Completed"


def stamp(moment: Moment) -> str:
    """The ``timestamp`` field for ``moment``."""
    if isinstance(moment, str):
        return moment
    if isinstance(moment, datetime):
        return moment.isoformat()
    return iso(moment)


def event(
    kind: str, mid: str, user: str | None = "u1", ts: Moment | None = DEFAULT_TS, **fields: Any
) -> dict[str, Any]:
    """An event of type ``kind`` (``userId`` left out when ``user`` is None; ``timestamp``
    when ``ts`` is None: the collector or ``segmenter send`` stamps it on arrival)."""
    doc: dict[str, Any] = {"type": kind, "messageId": mid}
    if user is not None:
        doc["userId"] = user
    if ts is not None:
        doc["timestamp"] = stamp(ts)
    doc.update(fields)
    return doc


def track(
    mid: str, user: str | None, name: str, ts: Moment | None = DEFAULT_TS, **properties: Any
) -> dict[str, Any]:
    """A ``track`` of event ``name`` with ``properties``."""
    return event("track", mid, user, ts, event=name, properties=properties)


def order(
    mid: str,
    user: str | None,
    revenue: object,
    ts: Moment | None = DEFAULT_TS,
    **properties: Any,
) -> dict[str, Any]:
    """An ``Order Completed`` worth ``revenue`` (any value: the poison tests send bad ones)."""
    return track(mid, user, ORDER, ts, revenue=revenue, **properties)


def page(mid: str, user: str | None, ts: Moment = DEFAULT_TS, **fields: Any) -> dict[str, Any]:
    """A ``page`` view."""
    return event("page", mid, user, ts, **fields)


def identify(mid: str, user: str | None, ts: Moment = DEFAULT_TS, **traits: Any) -> dict[str, Any]:
    """An ``identify`` setting ``traits``."""
    return event("identify", mid, user, ts, traits=traits)


def encoded(doc: dict[str, Any]) -> bytes:
    """The document as a record's value."""
    return orjson.dumps(doc)


def parsed(doc: dict[str, Any]) -> BaseEvent:
    """The event the pipeline applies for ``doc`` (it must be valid)."""
    found = decode(encoded(doc), 1 << 20)
    assert isinstance(found, BaseEvent), found
    return found
