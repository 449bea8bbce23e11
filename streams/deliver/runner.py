"""One destination's delivery loop: consume, select, deliver or dead-letter, then commit.

Each destination is its own consumer group (``<SEGMENTER_DELIVER_GROUP>.<id>``) on the migrations
topic. A batch is up to ``batch.max_records`` records, gathered for at most ``batch.linger_ms``;
offsets are committed only after the batch was delivered or dead-lettered, so a crash at any
point sends the batch again (at least once). Records of one customer share a partition and are
delivered in order, one batch after the other.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streams.deliver.config import Destination
from streams.deliver.outcome import Counters, Outcome
from streams.deliver.records import Record, Selector

METRICS_EVERY_S = 1.0
POLL_MS = 200


class Sink(Protocol):
    """Where a destination's batches go."""

    async def deliver(self, records: list[Record]) -> Outcome:
        """Deliver the batch (retrying inside) and say whether it arrived."""


class MetricsSink(Protocol):
    """Where the counters and the lag go (Redis, read by the API's ``/metrics``)."""

    async def add(self, destination: str, counts: dict[str, int], lag: dict[int, int]) -> None:
        """Add ``counts`` and set the lag of each partition this process owns."""


def dead_letter_headers(
    record: Record, topic: str, destination: str, outcome: Outcome
) -> list[tuple[str, bytes]]:
    """The original headers plus where the record came from and why it was not delivered."""
    return [
        *record.headers,
        ("segmenter.destination", destination.encode()),
        ("segmenter.error.message", (outcome.error or "").encode()),
        ("segmenter.delivery.attempts", str(outcome.attempts).encode()),
        ("segmenter.source.topic", topic.encode()),
        ("segmenter.source.partition", str(record.partition).encode()),
        ("segmenter.source.offset", str(record.offset).encode()),
        ("segmenter.dead_lettered_at", f"{time.time():.3f}".encode()),
    ]


@dataclass
class DestinationRunner:
    """Runs one destination until :attr:`stopping` is set (or an infrastructure error)."""

    destination: Destination
    consumer: AIOKafkaConsumer
    producer: AIOKafkaProducer
    sink: Sink
    selector: Selector
    counters: Counters
    metrics: MetricsSink
    topic: str
    before_first_batch: Callable[[], Any] | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)

    async def _gather(self) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``linger_ms`` for more after the first."""
        spec = self.destination.spec.batch
        got = await self.consumer.getmany(timeout_ms=POLL_MS, max_records=spec.max_records)
        records = _records(got)
        deadline = time.monotonic() + spec.linger_ms / 1000
        while records and len(records) < spec.max_records and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await self.consumer.getmany(
                timeout_ms=max(1, int(min(left, POLL_MS / 1000) * 1000)),
                max_records=spec.max_records - len(records),
            )
            records.extend(_records(more))
        return records

    async def _dead_letter(self, records: list[Record], outcome: Outcome) -> None:
        topic = self.destination.dead_letter_topic()
        futures = [
            await self.producer.send(
                topic,
                value=r.value,
                key=r.key,
                headers=dead_letter_headers(r, self.topic, self.destination.id, outcome),
            )
            for r in records
        ]
        await asyncio.gather(*futures)
        self.counters.dead_lettered += len(records)
        self.say(
            f"deliver {self.destination.id}: {len(records)} records dead-lettered to {topic}:"
            f" {outcome.error}"
        )

    async def handle(self, records: list[Record]) -> None:
        """Deliver (or dead-letter) the records the destination takes, then commit them all."""
        chosen = [r for r in records if self.selector.takes(r)]
        self.counters.skipped += len(records) - len(chosen)
        if chosen:
            outcome = await self.sink.deliver(chosen)
            if outcome.delivered:
                self.counters.delivered += len(chosen)
            else:
                await self._dead_letter(chosen, outcome)
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            offsets[TopicPartition(self.topic, r.partition)] = r.offset + 1
        try:
            await self.consumer.commit(offsets)
            self.committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            self.say(f"deliver {self.destination.id}: commit failed ({exc}); the batch comes again")

    async def lag(self) -> dict[int, int]:
        """Records not yet committed, per partition this process owns (the end offsets asked
        of the broker, so a partition taken over from a crashed process is reported at once)."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return {}
        ends = await self.consumer.end_offsets(assigned)
        out: dict[int, int] = {}
        for tp in assigned:
            # Asked of the broker each time: a partition lost and taken back may have been
            # committed further by another deliverer meanwhile.
            stored = await self.consumer.committed(tp)
            mine = self.committed.get(tp)
            candidates = [c for c in (stored, mine) if c is not None]
            if not candidates:
                continue
            done = self.committed[tp] = max(candidates)
            out[tp.partition] = max(0, ends.get(tp, done) - done)
        return out

    async def _report(self) -> None:
        await self.metrics.add(self.destination.id, self.counters.take(), await self.lag())

    async def run(self) -> None:
        """The loop; returns when :attr:`stopping` is set between batches."""
        if self.before_first_batch is not None:
            await self.before_first_batch()
        next_report = 0.0
        while not self.stopping.is_set():
            records = await self._gather()
            if records:
                await self.handle(records)
            if time.monotonic() >= next_report:
                await self._report()
                next_report = time.monotonic() + METRICS_EVERY_S
        await self._report()


def _records(got: dict[Any, list[Any]]) -> list[Record]:
    return [
        Record.of(m.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
        for messages in got.values()
        for m in messages
    ]
