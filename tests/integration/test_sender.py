"""Sending the outbox in record batches, against the real broker.

What must hold whatever the batching: every entry arrives once, on the partition the producer's
default partitioner would have picked for its key (or its fixed partition), in outbox order
within a partition, with its key, value and headers intact; entries too big for one batch and
keyless entries still go out.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.routing import partition_for
from streams.pipeline.sender import _send
from streams.stack.topics import ensure_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4
FILL = b"." * 100
"""Makes each partition's share of the entries overflow one default-sized (16 KiB) batch."""


async def _read_all(bootstrap: str, topic: str, count: int) -> list[tuple[int, object]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[tuple[int, object]] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        deadline = asyncio.get_running_loop().time() + 20
        while len(got) < count and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                got.extend((tp.partition, record) for record in records)
    finally:
        await consumer.stop()
    return got


async def _scenario(bootstrap: str, topic: str) -> None:
    await ensure_topics(bootstrap, {topic: PARTITIONS})
    entries = [
        OutboxEntry(
            topic, f"c{i % 7}".encode(), f"v{i}:".encode() + FILL, (("n", str(i).encode()),)
        )
        for i in range(1000)
    ]
    entries.insert(50, OutboxEntry(topic, b"big", b"x" * 100_000, (("n", b"big"),)))
    entries.insert(60, OutboxEntry(topic, None, b"keyless", (("n", b"keyless"),)))
    entries.insert(70, OutboxEntry(topic, b"c1", b"fixed", (("n", b"fixed"),), partition=3))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2**21)
    await producer.start()
    try:
        await _send(producer, [entry.encode() for entry in entries])
    finally:
        await producer.stop()
    got = await _read_all(bootstrap, topic, len(entries))

    assert len(got) == len(entries)
    by_value = {record.value: (partition, record) for partition, record in got}  # type: ignore[attr-defined]
    per_partition: dict[int, list[bytes]] = defaultdict(list)
    for partition, record in got:
        per_partition[partition].append(record.value)  # type: ignore[attr-defined]
    expected: dict[int, list[bytes]] = defaultdict(list)
    for entry in entries:
        assert entry.value in by_value, entry.value[:20] if entry.value else entry
        partition, record = by_value[entry.value]
        assert record.key == entry.key  # type: ignore[attr-defined]
        assert list(record.headers) == [(k, v) for k, v in entry.headers]  # type: ignore[attr-defined]
        if entry.partition is not None:
            assert partition == entry.partition
        elif entry.key is not None:
            assert partition == partition_for(entry.key, PARTITIONS)
        if entry.key is not None:
            expected[partition].append(entry.value or b"")
    for partition, values in expected.items():
        received = [v for v in per_partition[partition] if v != b"keyless"]
        assert received == values, f"partition {partition} out of order"


def test_batched_sending_keeps_partitions_order_and_content(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    asyncio.run(_scenario(kafka_bootstrap, f"{topic_prefix}.sender"))
