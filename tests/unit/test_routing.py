"""Routing: customers map to input partitions the way Kafka's default partitioner does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from streams.pipeline.routing import partition_for


def test_partition_for_matches_the_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(8))
    for n in range(500):
        key = f"user-{n * 7919}".encode()
        assert partition_for(key, 8) == partitioner(key, partitions, partitions)


def test_customers_spread_over_every_partition() -> None:
    assert {partition_for(f"u{i}".encode(), 8) for i in range(200)} == set(range(8))
    assert all(partition_for(f"u{i}".encode(), 1) == 0 for i in range(50))
