"""Which input partition a customer belongs to: the default Kafka partitioner (murmur2)."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a keyed record lands on with the Java client's default partitioner."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)
