"""(a) The ceiling: the least a Python consumer of the same events must do.

One aiokafka consumer reads the whole topic, decodes every value with orjson and sends one Redis
command per event (``HINCRBY ns:bench:{customer} n 1``), pipelined per fetched batch. Its rate
bounds what the segmenter can reach on the same machine, broker and Redis.
"""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.benchmarks.common import (
    PARTITIONS,
    BenchError,
    Infra,
    Progress,
    Throughput,
    delete_keys,
    say,
)
from streams.benchmarks.cpu import per_event_us


async def run_ceiling(infra: Infra, topic: str, count: int, timeout: float) -> Throughput:
    """Events/s (and CPU time per event) of the raw consumer over the whole topic.

    Measured like (b): from the end of the first batch to the last event, over the events after
    the first batch, so start-up and the first fetch are left out of both.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=infra.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    client = infra.redis()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        prefix = f"{infra.namespace}:bench:"
        done = 0
        first: tuple[float, int, float] | None = None
        progress = Progress("ceiling consumed", count)
        deadline = time.monotonic() + timeout
        while done < count:
            if time.monotonic() > deadline:
                raise BenchError(f"the ceiling consumer read only {done}/{count} events")
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            if not batch:
                continue
            pipe = client.pipeline(transaction=False)
            for records in batch.values():
                for record in records:
                    doc = orjson.loads(record.value or b"{}")
                    cid = doc.get("userId") or doc.get("anonymousId")
                    pipe.hincrby(f"{prefix}{{{cid}}}", "n", 1)
                    done += 1
            await pipe.execute()
            if first is None:
                first = (time.monotonic(), done, time.process_time())
            progress.update(done)
        assert first is not None
        elapsed = max(time.monotonic() - first[0], 1e-6)
        measured = max(count - first[1], 1)
        cpu = per_event_us(time.process_time() - first[2], measured)
        rate = measured / elapsed
        say(f"(a) ceiling: {count} events in {elapsed:.1f}s = {rate:.0f} events/s")
        await delete_keys(client, f"{prefix}*")
        return Throughput(rate, cpu)
    finally:
        await consumer.stop()
        await client.aclose()
