"""Segment's HTTP tracking API without the network: request bodies to input records.

The collector (:mod:`streams.api.collector`) reads a body and hands it here. What Segment does,
this does (docs/events.md, "Sending with Segment's libraries"):

- ``POST /v1/batch`` takes ``{"batch": [...], "sentAt", "context", "writeKey"}``; the single
  routes (``/v1/track``...) take one event, whose ``type`` the route sets;
- limits: a body of at most :data:`MAX_BODY_BYTES` (500 KB) and :data:`MAX_BATCH_EVENTS` events;
  each event, as produced, at most ``SEGMENTER_MAX_EVENT_BYTES`` (32 KB);
- clock skew: when the client says when it sent the event (``sentAt``, the event's own or the
  batch's), ``timestamp`` becomes ``receivedAt - (sentAt - timestamp)`` and the client's value
  is kept as ``originalTimestamp``; ``receivedAt`` is always the collector's clock;
- ``writeKey``, ``integrations`` (Segment's routing to its destinations) and ``_metadata`` (the
  libraries' own bookkeeping) are dropped; ``context`` is kept, with a batch's ``context``
  under each event's own;
- then each event is completed, checked and keyed as ``segmenter send`` does
  (:func:`streams.events.intake.prepare`). A bad event is rejected with its index and reason;
  the others of the batch go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from streams.events.decode import DecodeFailure
from streams.events.intake import Prepared, prepare, utc_text_us

MAX_BODY_BYTES = 500 * 1024
"""Largest request body, after decompression (Segment's batch limit)."""
MAX_BATCH_EVENTS = 2500
"""Most events in one batch (Segment's)."""
ROUTES = {
    "batch": None,
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
}
"""Each route under ``/v1/`` and the event type it sets (``None``: a batch)."""
SHORT_ROUTES = {"b": "batch", "t": "track", "i": "identify", "p": "page", "s": "screen"}
SHORT_ROUTES |= {"g": "group", "a": "alias"}
"""The one-letter paths analytics.js (analytics-next) posts to, and the route each one is."""
DROPPED = frozenset({"writeKey", "integrations", "_metadata"})
"""Fields never produced."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class BodyError(ValueError):
    """The whole request is refused: nothing of it is produced."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Rejection:
    """One event of a request that is not produced, and why."""

    index: int
    message_id: str | None
    kind: str
    message: str

    def as_json(self) -> dict[str, Any]:
        """The entry of the 400 answer's ``errors`` list."""
        return {
            "index": self.index,
            "messageId": self.message_id,
            "kind": self.kind,
            "message": self.message,
        }


@dataclass
class Collected:
    """A request's events: those to produce, in order, and those refused."""

    accepted: list[Prepared] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body (a :class:`BodyError` when it is not one)."""
    if len(body) > MAX_BODY_BYTES:
        raise BodyError(
            "payload_too_large", f"expected at most {MAX_BODY_BYTES} bytes, found {len(body)}"
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError("invalid_json", f"expected a JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise BodyError("invalid_json", f"expected a JSON object, found {type(doc).__name__}")
    return doc


def _instant(value: object) -> datetime | None:
    """An ISO 8601 time with an offset, parsed; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class Arrival:
    """When a request was received: epoch microseconds and as ``receivedAt`` text."""

    epoch_us: int
    text: str

    @classmethod
    def at(cls, moment: datetime) -> Arrival:
        """The arrival at ``moment`` (an aware datetime)."""
        epoch_us = (moment - EPOCH) // MICROSECOND
        return cls(epoch_us, utc_text_us(epoch_us))


def stamped(
    event: dict[str, Any], arrival: Arrival, sent_at: object = None, context: object = None
) -> dict[str, Any]:
    """The event as produced: dropped fields gone, batch ``context`` and ``sentAt`` folded in,
    ``receivedAt`` set and ``timestamp`` corrected for the client's clock skew."""
    out = {name: value for name, value in event.items() if name not in DROPPED}
    if isinstance(context, dict) and context:
        own = out.get("context")
        out["context"] = {**context, **own} if isinstance(own, dict) else dict(context)
    if out.get("sentAt") is None and sent_at is not None:
        out["sentAt"] = sent_at
    out["receivedAt"] = arrival.text
    if out.get("timestamp") is None:
        out["timestamp"] = arrival.text
        return out
    original = _instant(out["timestamp"])
    sent = _instant(out.get("sentAt"))
    if original is None or sent is None:
        return out  # nothing to correct with; a bad timestamp is the schema check's to report
    try:
        corrected = utc_text_us(arrival.epoch_us - (sent - original) // MICROSECOND)
    except (OverflowError, ValueError, OSError):  # beyond the years datetime can write
        return out
    out["originalTimestamp"] = out["timestamp"]
    out["timestamp"] = corrected
    return out


def _message_id(event: object) -> str | None:
    found = event.get("messageId") if isinstance(event, dict) else None
    return found if isinstance(found, str) else None


@dataclass(frozen=True, slots=True)
class Request:
    """A request's events and what applies to all of them."""

    events: list[Any]
    arrival: Arrival
    sent_at: object = None
    context: object = None
    max_event_bytes: int = 32 * 1024

    @classmethod
    def of(
        cls, doc: dict[str, Any], route: str, received: datetime, max_event_bytes: int
    ) -> Request:
        """The request of body ``doc`` posted to ``route`` (a key of :data:`ROUTES`) at
        ``received``; a :class:`BodyError` when it is refused as a whole."""
        kind = ROUTES[route]
        arrival = Arrival.at(received)
        if kind is not None:
            return cls([{**doc, "type": kind}], arrival, max_event_bytes=max_event_bytes)
        events = doc.get("batch")
        if not isinstance(events, list):
            raise BodyError("invalid_batch", "expected 'batch': a list of events")
        if len(events) > MAX_BATCH_EVENTS:
            raise BodyError(
                "payload_too_large",
                f"expected at most {MAX_BATCH_EVENTS} events in a batch, found {len(events)}",
            )
        return cls(events, arrival, doc.get("sentAt"), doc.get("context"), max_event_bytes)

    def collect(self, start: int = 0, stop: int | None = None) -> Collected:
        """The records of events ``start`` to ``stop`` (all by default), in order."""
        found = Collected()
        stop = len(self.events) if stop is None else min(stop, len(self.events))
        for index in range(start, stop):
            event = self.events[index]
            if not isinstance(event, dict):
                kind_name = type(event).__name__
                found.rejected.append(
                    Rejection(index, None, "json", f"expected a JSON object, found {kind_name}")
                )
                continue
            stamp = stamped(event, self.arrival, self.sent_at, self.context)
            prepared = prepare(stamp, self.max_event_bytes)
            if isinstance(prepared, DecodeFailure):
                found.rejected.append(
                    Rejection(index, _message_id(event), prepared.kind, prepared.message)
                )
            else:
                found.accepted.append(prepared)
        return found


def collect(doc: dict[str, Any], route: str, received: datetime, max_event_bytes: int) -> Collected:
    """The records of one request's body ``doc`` posted to ``route`` (a key of :data:`ROUTES`).

    A :class:`BodyError` when the request as a whole is refused.
    """
    return Request.of(doc, route, received, max_event_bytes).collect()


def body_write_key(doc: dict[str, Any]) -> str | None:
    """The ``writeKey`` a browser library puts in the body, if any."""
    key = doc.get("writeKey")
    return key if isinstance(key, str) and key else None
