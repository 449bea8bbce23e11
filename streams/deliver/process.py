"""``segmenter deliver``: one process running every destination's loop.

Run several (``segmenter deliver`` on more machines): each destination's consumer group spreads
the partitions over them. SIGINT/SIGTERM stop after the batch in hand; a batch still being
retried is abandoned uncommitted and sent again by whoever takes its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from streams.deliver.audience import AudienceSink
from streams.deliver.config import (
    AudienceFile,
    Destination,
    DestinationLoadError,
    ProfileSyncFile,
    load_destinations,
)
from streams.deliver.http_sinks import Poster, ProfileSyncSink, WebhookSink
from streams.deliver.metrics import RedisDeliveryMetrics
from streams.deliver.outcome import Counters
from streams.deliver.records import Selector
from streams.deliver.runner import DestinationRunner, Sink
from streams.engine import RuleLoadError, load_rules
from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.stack.kafka_security import client_kwargs
from streams.stack.topics import ensure_topics
from streams.store.redis_store import RedisStore

STOP_GRACE_S = 10.0


def _say(text: str) -> None:
    print(f"segmenter deliver: {text}", file=sys.stderr, flush=True)


def _kinds(settings: Settings) -> dict[str, str]:
    rules = load_rules(settings.rules)
    return {info.id: info.kind for info in rules.segments}


class StartPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Where a new destination starts: partitions without a committed offset go to the end
    offsets read when the process started (``start_from: latest``), not to the end at the
    moment the group finally assigns them, so nothing emitted in between is skipped."""

    def __init__(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int] | None):
        self.consumer = consumer
        self.ends = ends

    @classmethod
    async def of(cls, consumer: AIOKafkaConsumer, topic: str, start_from: str) -> StartPositions:
        """The start positions of a destination (none to fix for ``start_from: earliest``)."""
        if start_from == "earliest":
            return cls(consumer, None)
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps) if tps else {}
        return cls(consumer, ends)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Nothing to do: offsets are committed after each batch."""

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Seek partitions the group never committed to their start position."""
        if self.ends is None:
            return
        for tp in assigned:
            if tp in self.ends and await self.consumer.committed(tp) is None:
                self.consumer.seek(tp, self.ends[tp])


class Deliverer:
    """The clients shared by the destination loops, and the loops themselves."""

    def __init__(self, settings: Settings, destinations: list[Destination], kinds: dict[str, str]):
        self.settings = settings
        self.destinations = destinations
        self.kinds = kinds
        self.runners: list[DestinationRunner] = []

    def start_from(self, destination: Destination) -> str:
        """Where a destination without a committed position starts: its ``start_from``, or the
        beginning when the broker's log starts empty at each start (``segmenter up``'s embedded
        broker): then every migration of the new log is one the destination has not seen."""
        return "earliest" if self.settings.log_resets else destination.spec.start_from

    async def run(self) -> None:
        """Start every destination; return when all stopped (or raise an infrastructure error)."""
        s = self.settings
        assert s.kafka_bootstrap is not None
        security = client_kwargs(s)
        await ensure_topics(
            s.kafka_bootstrap,
            {d.dead_letter_topic(): s.migrations_partitions for d in self.destinations},
            security=security,
        )
        store = RedisStore.from_settings(s)
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5, **security
        )
        await producer.start()
        session = aiohttp.ClientSession()
        consumers: list[AIOKafkaConsumer] = []
        try:
            metrics = RedisDeliveryMetrics(store.client, store.keys.ns)
            for destination in self.destinations:
                start_from = self.start_from(destination)
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=s.kafka_bootstrap,
                    group_id=f"{s.deliver_group}.{destination.id}",
                    enable_auto_commit=False,
                    auto_offset_reset=start_from,
                    **security,
                )
                await consumer.start()
                start = await StartPositions.of(consumer, s.migrations_topic, start_from)
                consumer.subscribe([s.migrations_topic], listener=start)
                consumers.append(consumer)
                counters = Counters()
                sink, prepare = self._sink(destination, store, session, counters, consumer)
                self.runners.append(
                    DestinationRunner(
                        destination=destination,
                        consumer=consumer,
                        producer=producer,
                        sink=sink,
                        selector=Selector.of(destination, self.kinds),
                        counters=counters,
                        metrics=metrics,
                        topic=s.migrations_topic,
                        before_first_batch=prepare,
                    )
                )
            names = ", ".join(f"{d.id} ({d.spec.type})" for d in self.destinations)
            _say(f"delivering {s.migrations_topic} to {names}")
            await asyncio.gather(*(runner.run() for runner in self.runners))
        finally:
            for consumer in consumers:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await session.close()
            with contextlib.suppress(Exception):
                await producer.stop()
            await store.close()

    def _sink(
        self,
        destination: Destination,
        store: RedisStore,
        session: aiohttp.ClientSession,
        counters: Counters,
        consumer: AIOKafkaConsumer,
    ) -> tuple[Sink, Callable[[], Awaitable[None]] | None]:
        spec = destination.spec
        if isinstance(spec, AudienceFile):
            segments = spec.segments or sorted(
                sid for sid, kind in self.kinds.items() if spec.kinds is None or kind in spec.kinds
            )
            audience = AudienceSink(destination, store, store.client, store.keys.ns, segments)

            async def prepare() -> None:
                await _wait_for_positions(consumer)
                await audience.export_missing()

            return audience, prepare
        poster = Poster(destination, session, counters)
        if isinstance(spec, ProfileSyncFile):
            return ProfileSyncSink(poster, store), None
        return WebhookSink(poster), None

    def stop(self) -> None:
        """Ask every loop to stop after the batch in hand."""
        for runner in self.runners:
            runner.stopping.set()


async def _wait_for_positions(consumer: AIOKafkaConsumer, timeout: float = 30.0) -> None:
    """Wait for the group's assignment and fix the start positions (before a full export).

    Joining the group takes a fetch; whatever that fetch returns is put back (the consumer
    seeks to the first record of each partition), so nothing is skipped.
    """
    deadline = time.monotonic() + timeout
    while not consumer.assignment() and time.monotonic() < deadline:
        got = await consumer.getmany(timeout_ms=100, max_records=1)
        for tp, records in got.items():
            if records:
                consumer.seek(tp, records[0].offset)
    for tp in consumer.assignment():
        await consumer.position(tp)


async def _main(settings: Settings, destinations: list[Destination], kinds: dict[str, str]) -> int:
    deliverer = Deliverer(settings, destinations, kinds)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(deliverer.run())

    def stop() -> None:
        deliverer.stop()
        loop.call_later(STOP_GRACE_S, task.cancel)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await task
    except asyncio.CancelledError:
        _say("stopped with a batch in hand (it will be sent again)")
    return 0


def run_deliver(settings: Settings, directory: Path | None = None) -> int:
    """``segmenter deliver``: 0 after a clean stop, 1 on bad files or an infrastructure error."""
    settings = with_running_stack(settings)
    if directory is not None:
        settings = settings.model_copy(update={"destinations": directory})
    if not settings.kafka_bootstrap or not settings.redis_url:
        _say("set SEGMENTER_KAFKA_BOOTSTRAP and SEGMENTER_REDIS_URL, or run beside `segmenter up`")
        return 2
    try:
        kinds = _kinds(settings)
        destinations = load_destinations(settings.destinations, kinds)
    except (RuleLoadError, DestinationLoadError) as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    if not destinations:
        _say(f"no destination files in {settings.destinations}/ (see docs/destinations.md)")
        return 1
    try:
        return asyncio.run(_main(settings, destinations, kinds))
    except Exception as exc:  # infrastructure: let the supervisor restart us
        _say(f"stopping on {type(exc).__name__}: {exc}")
        return 1
