"""The one reader of the migrations topic in an API process, for its visitor streams.

An assign-all consumer with no group (``group_id=None``): each ``segmenter api`` process reads
every partition itself, from the end at its start, and commits nothing, so any number of API
processes behind a load balancer each serve their own connections. A migration from before the
process started is never needed: a stream starts with a snapshot from Redis, and resumes from
the hub's recent migrations or with a snapshot.

The topic may not exist yet (a worker creates it): the feed waits for it. Partitions added
later are picked up (read from their beginning) within :data:`REFRESH_S`. Broker errors restart
the consumer after a pause, from where it was; streams stay open meanwhile and receive the
migrations of the pause late rather than never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streams.api.visitor_hub import VisitorHub
from streams.settings import Settings
from streams.stack.kafka_security import client_kwargs

log = logging.getLogger("segmenter.visitor")

REFRESH_S = 30.0
"""How often the topic's partitions are checked for new ones."""
RETRY_S = 2.0
"""Pause before the consumer is started again after an error, or the topic is looked up."""


def _ce_time(headers: object) -> str | None:
    for name, value in headers or ():  # type: ignore[attr-defined]
        if name == "ce_time":
            return bytes(value).decode()
    return None


class MigrationFeed:
    """Reads ``settings.migrations_topic`` into ``hub`` until stopped."""

    def __init__(self, settings: Settings, hub: VisitorHub) -> None:
        self.settings = settings
        self.hub = hub
        self.records = 0
        self.positions: dict[int, int] = {}
        """Partition -> the next offset to read (kept over restarts of the consumer)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, restarting the consumer after errors."""
        while not stop.is_set():
            try:
                await self._consume(stop)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                log.warning("visitor feed: %r; starting again in %gs", exc, RETRY_S)
            except Exception:  # a bug must not end the streams' feed for good
                log.exception("visitor feed failed; starting again in %gs", RETRY_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_S)

    async def _consume(self, stop: asyncio.Event) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            **client_kwargs(settings),
        )
        await consumer.start()
        try:
            if not await self._assign(consumer, stop):
                return
            self.hub.ready.set()
            refresh_at = time.monotonic() + REFRESH_S
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batch.items():
                    self._feed(records)
                    self.positions[tp.partition] = records[-1].offset + 1
                if time.monotonic() >= refresh_at:
                    refresh_at = time.monotonic() + REFRESH_S
                    await self._assign(consumer, stop)
        finally:
            self.hub.ready.clear()
            await consumer.stop()

    def _feed(self, records: list[ConsumerRecord]) -> None:
        self.records += len(records)
        for record in records:
            if record.key is not None and record.value is not None:
                self.hub.feed(
                    record.key.decode(errors="replace"), record.value, _ce_time(record.headers)
                )

    async def _assign(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
        """Assign every partition of the topic (waiting for it to exist); False when stopped.

        A partition read before (by this feed, also before a restart of the consumer) goes on
        at the next offset; at the very start every partition is read from its end; one added
        later from its beginning."""
        topic = self.settings.migrations_topic
        while not stop.is_set():
            await consumer.topics()  # refreshes the cluster metadata
            found = consumer.partitions_for_topic(topic) or set()
            if found:
                break
            log.warning("visitor feed: waiting for the topic %s", topic)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_S)
        else:
            return False
        every = [TopicPartition(topic, p) for p in sorted(found)]
        if set(consumer.assignment()) == set(every):
            return True
        consumer.assign(every)
        started = bool(self.positions)
        for tp in every:
            if tp.partition in self.positions:
                consumer.seek(tp, self.positions[tp.partition])
            elif started:
                await consumer.seek_to_beginning(tp)
            else:
                await consumer.seek_to_end(tp)
        for tp in every:  # resolve now: nothing produced after this is missed
            self.positions[tp.partition] = await consumer.position(tp)
        return True
