"""The collector's way into Kafka: one ``acks=all`` producer per API process.

``segmenter api`` starts it beside the HTTP server. When the broker cannot be reached the API
keeps serving lookups, the collector answers 503 (clients retry), and the producer is started
again in the background until it connects.

Requests share per-partition record batches, sent in rounds (group commit): a round takes the
oldest filling batch of every partition, hands them all to the producer at once (one produce
request carries them), and ends when the broker acknowledged them all. While a round is at the
broker, the events of every request fill the next round's batches. Batches so grow with the
load, an idle collector sends at once, and each event costs an append to a batch (aiokafka's
``send`` makes a future per message: a fifth of the collector's CPU, measured with py-spy).
A request waits for the acknowledgement of every batch that holds one of its events. Events of
a request are appended in order and a partition's batches go one round after the other, so
order per partition, and so per key, is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from streams.events.intake import Prepared
from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.stack.kafka_security import client_kwargs

log = logging.getLogger("segmenter.collector")

ACK_TIMEOUT_S = 10.0
"""Longest a request waits for the broker's acknowledgements before answering 503."""
MAX_BATCH_BYTES = 1024 * 1024
"""The producer's batch per partition (events of many requests share one)."""
CONNECT_RETRY_S = (0.5, 5.0)
"""First and longest wait between two attempts to start the producer."""


class SinkUnavailable(RuntimeError):
    """The events could not be confirmed in Kafka: the client should retry (503)."""


def _settled(future: asyncio.Future[None]) -> None:
    """Mark an acknowledgement's exception as seen (no request may be waiting for it any more)."""
    if not future.cancelled():
        future.exception()


class KafkaSink:
    """Produces prepared events to the input topic and waits until every in-sync replica has
    them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.input_topic
        self.producer: AIOKafkaProducer | None = None
        self.last_error: str | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._filling: dict[int, deque[tuple[BatchBuilder, asyncio.Future[None]]]] = {}
        self._rounds: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """True once the producer is connected."""
        return self.producer is not None

    def _new_producer(self) -> AIOKafkaProducer:
        assert self.settings.kafka_bootstrap is not None
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            linger_ms=0,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=2 * MAX_BATCH_BYTES,
            request_timeout_ms=int(ACK_TIMEOUT_S * 1000),
            client_id="segmenter-collector",
            **client_kwargs(self.settings),
        )

    async def _connect(self) -> None:
        delay = CONNECT_RETRY_S[0]
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
                await producer.partitions_for(self.topic)
            except (KafkaError, OSError) as exc:
                self.last_error = f"cannot reach the broker: {exc!r}"
                log.warning("collector: %s; trying again in %gs", self.last_error, delay)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_RETRY_S[1])
                continue
            self.producer = producer
            self.last_error = None
            return

    async def start(self, wait_s: float = 5.0) -> None:
        """Start connecting; wait up to ``wait_s`` for it (the rest goes on in the background)."""
        self._connecting = asyncio.create_task(self._connect())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connecting), wait_s)

    async def stop(self) -> None:
        """Stop connecting, send what is filling, and close the producer."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._rounds is not None and not self._rounds.done():
            await asyncio.wait([self._rounds], timeout=ACK_TIMEOUT_S)
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await producer.stop()

    async def _partition_count(self, producer: AIOKafkaProducer) -> int:
        known = producer.client.cluster.partitions_for_topic(self.topic)
        if not known:
            known = await producer.partitions_for(self.topic)
        return len(known)

    def _append(self, producer: AIOKafkaProducer, partition: int, event: Prepared) -> Any:
        """Add ``event`` to the partition's last filling batch (a new one when full); return
        that batch's acknowledgement."""
        filling = self._filling.get(partition)
        if filling is None:
            filling = self._filling[partition] = deque()
        if filling:
            builder, acked = filling[-1]
            added = builder.append(timestamp=None, key=event.key, value=event.value, headers=[])
            if added is not None:
                return acked
        builder = producer.create_batch()
        if builder.append(timestamp=None, key=event.key, value=event.value, headers=[]) is None:
            raise SinkUnavailable(f"an event of {len(event.value)} bytes fits no batch")
        acked = asyncio.get_running_loop().create_future()
        acked.add_done_callback(_settled)
        filling.append((builder, acked))
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.create_task(self._send_rounds(producer))
        return acked

    async def _send_rounds(self, producer: AIOKafkaProducer) -> None:
        """Send rounds until nothing is filling: each round, every partition's oldest batch."""
        while True:
            batches = [(p, queue.popleft()) for p, queue in self._filling.items() if queue]
            if not batches:
                return
            sent: list[tuple[asyncio.Future[Any], asyncio.Future[None]]] = []
            for partition, (builder, acked) in batches:
                try:
                    delivered = await producer.send_batch(builder, self.topic, partition=partition)
                except KafkaError as exc:
                    acked.set_exception(SinkUnavailable(f"Kafka did not take the events: {exc!r}"))
                else:
                    sent.append((delivered, acked))
            for delivered, acked in sent:
                try:
                    await delivered
                except KafkaError as exc:
                    acked.set_exception(SinkUnavailable(f"Kafka did not take the events: {exc!r}"))
                else:
                    acked.set_result(None)

    async def add(self, events: Sequence[Prepared]) -> list[asyncio.Future[None]]:
        """Put ``events`` in order into the batches of the coming rounds; return the
        acknowledgements to wait for (:meth:`confirm`)."""
        producer = self.producer
        if producer is None:
            raise SinkUnavailable(self.last_error or "the collector is connecting to Kafka")
        if not events:
            return []
        try:
            count = await self._partition_count(producer)
        except KafkaError as exc:
            raise SinkUnavailable(f"no metadata for {self.topic}: {exc!r}") from exc
        waits: dict[int, asyncio.Future[None]] = {}
        for event in events:
            acked = self._append(producer, partition_for(event.key, count), event)
            waits[id(acked)] = acked
        return list(waits.values())

    @staticmethod
    async def confirm(acks: Sequence[asyncio.Future[None]]) -> None:
        """Return once every acknowledgement in ``acks`` came (a :class:`SinkUnavailable`
        when one failed, or when they took longer than :data:`ACK_TIMEOUT_S`)."""
        if not acks:
            return
        done, pending = await asyncio.wait(set(acks), timeout=ACK_TIMEOUT_S)
        if pending:
            raise SinkUnavailable(f"Kafka did not confirm the events in {ACK_TIMEOUT_S:g}s")
        for future in done:
            failure = future.exception()
            if failure is not None:
                raise SinkUnavailable(str(failure))

    async def send(self, events: Sequence[Prepared]) -> None:
        """Produce ``events`` in order; return once the broker acknowledged all of them."""
        await self.confirm(await self.add(events))
