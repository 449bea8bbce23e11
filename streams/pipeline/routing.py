"""Which input partition a customer belongs to: the default Kafka partitioner (murmur2)."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

CACHED_IDS = 65_536
"""Customer ids whose partition is remembered (murmur2 in pure Python costs about 5 µs; a
batch asks for the same customer's partition several times)."""


@lru_cache(maxsize=CACHED_IDS)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition a keyed record lands on with the Java client's default partitioner."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)
