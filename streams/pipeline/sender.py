"""Sending the outbox to Kafka, then trimming it: the only way the worker produces messages."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from streams.pipeline.outbox import OutboxEntry
from streams.store.base import Store

OUTBOX_PAGE = 2000


async def flush_outbox(store: Store, producer: AIOKafkaProducer, partition: int) -> int:
    """Send every committed message of ``partition`` in order; return how many were sent.

    A message is trimmed only after the broker acknowledged it, so a crash at any point leaves
    it in the outbox to be sent again (same bytes, same ``ce_id``).
    """
    sent = 0
    while True:
        raw = await store.outbox(partition, OUTBOX_PAGE)
        if not raw:
            return sent
        futures = []
        for item in raw:
            entry = OutboxEntry.decode(item)
            futures.append(
                await producer.send(
                    entry.topic,
                    value=entry.value,
                    key=entry.key,
                    partition=entry.partition,
                    headers=list(entry.headers),
                )
            )
        await asyncio.gather(*futures)
        await store.outbox_trim(partition, len(raw))
        sent += len(raw)
