"""Test kit: pipeline contexts whose clock the test holds, and a pipeline over memory.

``pinned_context`` gives a processing-time pipeline whose clock reads a fixed instant (and can
be advanced), so tests of rules without time conditions see every change published at the end
of each batch, whatever the events' timestamps, with no wall clock involved.
:class:`MemoryPipeline` feeds event documents through the processor with the in-memory store
the way Kafka would (offsets per partition, re-routed events delivered) and reads back what it
emitted. Event documents come from :mod:`tests.events`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from streams.engine import RuleSet
from streams.engine.facts import SeriesSpec
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.timekeeping import ManualClock
from streams.settings import Settings
from streams.store.base import Store
from streams.store.memory import MemoryStore

PINNED = "2026-06-01T00:00:00+00:00"
"""The instant a pinned clock reads: after every timestamp the unit tests use."""


def pinned_clock(at: str = PINNED) -> ManualClock:
    """A manual clock set to ``at`` (ISO 8601 with offset)."""
    return ManualClock(datetime.fromisoformat(at).timestamp())


def pinned_context(
    rules: RuleSet,
    settings: Settings | None = None,
    store: Store | None = None,
    partitions: int = 1,
    clock: ManualClock | None = None,
) -> PipelineContext:
    """A processing-time pipeline context over ``rules`` with a pinned clock."""
    return PipelineContext.create(
        settings or Settings(),
        rules,
        store if store is not None else MemoryStore(),
        partitions,
        clock=clock or pinned_clock(),
    )


def condition_series(rules: RuleSet) -> tuple[SeriesSpec, ...]:
    """The rule pack's series other than the one kept for performance (its conversion)."""
    conversion = rules.conversion
    return tuple(s for s in rules.series if conversion is None or s.id != conversion.series_id)


CONTROL_SECRET = "test-control-secret"
"""The ``SEGMENTER_CONTROL_SECRET`` of the tests that send control records (watermarks)."""


def control(until: float) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """The value and headers of a control record signed with :data:`CONTROL_SECRET`."""
    from streams.pipeline.control import control_record

    return control_record(until, CONTROL_SECRET)


def memory_store(ctx: PipelineContext) -> MemoryStore:
    """The in-memory store of a context the kit built: the one place a test narrows ``Store``
    to :class:`MemoryStore` (to read its outbox, members and states directly)."""
    store = ctx.store
    if not isinstance(store, MemoryStore):
        raise TypeError(f"this context's store is a {type(store).__name__}, not a MemoryStore")
    return store


INPUT_TOPIC = Settings().input_topic


@dataclass
class MemoryPipeline:
    """The processor over the in-memory store, fed like Kafka feeds a worker.

    Documents go to their customer's home partition (or the one given) with increasing offsets,
    one batch per partition; events the processor re-routes to another partition are delivered
    there until none is left. What the pipeline emitted is read from the store's outboxes.
    """

    ctx: PipelineContext
    offsets: dict[int, int] = field(default_factory=dict)

    @property
    def store(self) -> MemoryStore:
        """The in-memory store (states, member sets, outboxes)."""
        return memory_store(self.ctx)

    def record(self, doc: Mapping[str, Any], partition: int | None = None) -> Record:
        """The next record of ``doc`` on its partition (keyed by its customer)."""
        cid = str(doc.get("userId") or doc.get("anonymousId"))
        target = self.ctx.home_partition(cid) if partition is None else partition
        offset = self.offsets[target] = self.offsets.get(target, -1) + 1
        return Record(INPUT_TOPIC, target, offset, cid.encode(), orjson.dumps(doc))

    async def send(self, docs: Iterable[Mapping[str, Any]], partition: int | None = None) -> None:
        """Apply ``docs``: one batch per partition, then deliver what was re-routed."""
        batches: dict[int, list[Record]] = {}
        for doc in docs:
            record = self.record(doc, partition)
            batches.setdefault(record.partition, []).append(record)
        for target in sorted(batches):
            await process_batch(self.ctx, batches[target])
        await self.deliver_rerouted()

    async def deliver_rerouted(self, rounds: int = 5) -> None:
        """Deliver events re-sent to their profile's partition like Kafka would."""
        store = self.store
        for _ in range(rounds):
            moved = False
            for source, raw_entries in list(store.outboxes.items()):
                for raw in raw_entries:
                    entry = OutboxEntry.decode(raw)
                    if entry.topic != INPUT_TOPIC or entry.partition is None:
                        continue
                    target = entry.partition
                    offset = self.offsets[target] = self.offsets.get(target, -1) + 1
                    record = Record(
                        INPUT_TOPIC, target, offset, entry.key, entry.value, entry.headers
                    )
                    store.outboxes[source] = [r for r in store.outboxes[source] if r != raw]
                    await process_batch(self.ctx, [record])
                    moved = True
            if not moved:
                return

    def emitted(self, topic: str | None = None) -> list[OutboxEntry]:
        """What the pipeline emitted (``topic``: the migrations topic unless given), partition
        by partition, in order."""
        wanted = topic or self.ctx.settings.migrations_topic
        store = self.store
        return [
            entry
            for p in sorted(store.outboxes)
            for entry in (OutboxEntry.decode(raw) for raw in store.outboxes[p])
            if entry.topic == wanted
        ]

    def migrations(self, customer: str | None = None) -> list[dict[str, Any]]:
        """The migration events emitted (of ``customer``), decoded."""
        found = [orjson.loads(entry.value or b"") for entry in self.emitted()]
        return [m for m in found if customer is None or m["customer_id"] == customer]
