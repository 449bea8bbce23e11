"""Test kit of the visitor streams: a real processor over a MemoryStore feeding a hub.

:class:`Shop` processes Segment events with :func:`process_batch` and hands the migration
records to a :class:`VisitorHub` as they would come off Kafka (key, value, ``ce_time``);
:func:`frames` parses what a stream wrote back from its Server-Sent Events text. The reference
of a test is the processor's own migrations (:meth:`Shop.of`, :meth:`Shop.segments`), folded in
plain Python.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from streams.api.visitor_hub import VisitorHub, VisitorStream
from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import Record, process_batch
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests import events
from tests.fixtures import TEST_RULES
from tests.kit import pinned_context

TS = "2026-01-01T10:00:00Z"


def doc(kind: str, mid: str, user: str | None = None, **fields: Any) -> dict[str, Any]:
    return events.event(kind, mid, user, TS, **fields)


def canadian(mid: str, user: str) -> dict[str, Any]:
    return doc("identify", mid, user, traits={"address": {"country": "CA"}})


def order(mid: str, user: str, revenue: float) -> dict[str, Any]:
    return events.order(mid, user, revenue, TS)


class Shop:
    """A processing-time pipeline over a MemoryStore, and a hub reading its migrations."""

    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(**settings)
        self.store = MemoryStore()
        self.ctx = pinned_context(parse_rules(TEST_RULES), self.settings, self.store)
        self.hub = VisitorHub(self.settings, self.store)
        self.offsets = itertools.count()
        self.migrations: list[OutboxEntry] = []

    async def apply(self, *docs: dict[str, Any]) -> list[OutboxEntry]:
        """Process ``docs``; the migrations they produced (not yet fed to the hub)."""
        records = [
            Record("segmenter.events", 0, next(self.offsets), None, orjson.dumps(d)) for d in docs
        ]
        batch = await process_batch(self.ctx, records)
        entries = [OutboxEntry.decode(raw) for raws in batch.outbox.values() for raw in raws]
        found = [e for e in entries if e.topic == self.settings.migrations_topic]
        self.migrations.extend(found)
        return found

    def feed(self, entries: list[OutboxEntry]) -> None:
        for entry in entries:
            assert entry.key is not None and entry.value is not None
            time_iso = dict(entry.headers)["ce_time"].decode()
            self.hub.feed(entry.key.decode(), entry.value, time_iso)

    async def send(self, *docs: dict[str, Any]) -> list[OutboxEntry]:
        """Process ``docs`` and feed their migrations to the hub."""
        found = await self.apply(*docs)
        self.feed(found)
        return found

    def of(self, customer: str) -> list[dict[str, Any]]:
        """Every migration value of ``customer`` so far, in order."""
        return [
            orjson.loads(e.value or b"")
            for e in self.migrations
            if e.key is not None and e.key.decode() == customer
        ]

    def segments(self, customer: str) -> list[str]:
        """The customer's segments folded from its migrations (the reference)."""
        members: set[str] = set()
        for m in self.of(customer):
            (members.add if m["direction"] == "entered" else members.discard)(m["segment"])
        return sorted(members)


def parse_sse(text: str) -> list[tuple[str, int, dict[str, Any]]]:
    """Server-Sent Events text as (event, id, data) triples; comments and ``retry`` left out."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], int(fields["id"]), orjson.loads(fields["data"])))
    return out


def frames(stream: VisitorStream) -> list[tuple[str, int, dict[str, Any]]]:
    """The stream's queued SSE events (taken off the queue)."""
    text = b"".join(stream.frames).decode()
    stream.frames.clear()
    return parse_sse(text)


def moves(values: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(m["direction"], m["sequence"], m["segment"]) for m in values]


def received(events: list[tuple[str, int, dict[str, Any]]]) -> list[tuple[str, int, str]]:
    return [(e, i, d["segment"]) for e, i, d in events if e != "snapshot"]
