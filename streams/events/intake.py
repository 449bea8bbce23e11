"""Events as producers hand them to the input topic: completed, checked, keyed.

``segmenter send`` and the HTTP collector (:mod:`streams.api.collector`) both turn an event
object into the Kafka record the workers read, the same way:

- ``messageId`` and ``timestamp`` are filled in when missing, as Segment's libraries do;
- the record's value is the event as JSON, checked as the worker will check it (size, nesting,
  schema), so what a producer accepts is never dead-lettered for its shape;
- the record's key is the customer id (``userId``, else ``anonymousId``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from streams.events.decode import DecodeFailure, check_encoded
from streams.events.models import BaseEvent


@dataclass(frozen=True, slots=True)
class Prepared:
    """One event ready to produce: its Kafka key and value, and the event they encode."""

    key: bytes
    value: bytes
    event: BaseEvent


def utc_text(moment: datetime) -> str:
    """``moment`` as RFC 3339 in UTC with milliseconds and ``Z`` (sub-milliseconds dropped)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@lru_cache(maxsize=4096)
def _second_text(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()[:19]


def utc_text_us(epoch_us: int) -> str:
    """Epoch microseconds as :func:`utc_text` writes them (the second's text is cached: the
    events of a batch share a few seconds)."""
    seconds, micros = divmod(epoch_us, 1_000_000)
    return f"{_second_text(seconds)}.{micros // 1000:03d}Z"


def completed(event: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The event with ``messageId`` and ``timestamp`` filled in when missing (as SDKs do)."""
    out = dict(event)
    if out.get("messageId") is None:
        out["messageId"] = str(uuid.uuid4())
    if out.get("timestamp") is None:
        out["timestamp"] = utc_text(now or datetime.now(UTC))
    return out


def prepare(
    event: dict[str, Any], max_bytes: int, now: datetime | None = None
) -> Prepared | DecodeFailure:
    """The record of ``event`` (completed at ``now``), or why the worker would refuse it."""
    filled = completed(event, now)
    value = orjson.dumps(filled)
    checked = check_encoded(filled, value, max_bytes)
    if isinstance(checked, DecodeFailure):
        return checked
    return Prepared(checked.customer_id.encode(), value, checked)
