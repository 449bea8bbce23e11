"""Sending the outbox to Kafka, then trimming it: the only way the worker produces messages."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from streams.pipeline.outbox import OutboxEntry
from streams.store.base import CommitBatch, Store

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
        await _send(producer, raw)
        await store.outbox_trim(partition, len(raw))
        sent += len(raw)


async def _send(producer: AIOKafkaProducer, raw_entries: list[bytes]) -> None:
    futures = []
    for item in raw_entries:
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


async def send_committed(store: Store, producer: AIOKafkaProducer, commit: CommitBatch) -> None:
    """Send what a commit put in the outbox, then trim it.

    Fast path: when an outbox held nothing older (its length after the commit equals what the
    commit added), the committed bytes are sent as they are and all outboxes are trimmed in one
    round trip. Otherwise the partition's outbox is flushed in order from Redis.
    """
    fast: dict[int, list[bytes]] = {}
    slow: list[int] = []
    for partition, entries in commit.outbox.items():
        if not entries:
            continue
        if commit.outbox_lengths.get(partition) == len(entries):
            fast[partition] = entries
        else:
            slow.append(partition)
    if fast:
        await _send(producer, [raw for entries in fast.values() for raw in entries])
        await store.outbox_trim_many({p: len(entries) for p, entries in fast.items()})
    for partition in slow:
        await flush_outbox(store, producer, partition)
