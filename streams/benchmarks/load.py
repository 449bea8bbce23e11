"""The synthetic events of a run and producing them before the throughput phases."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from streams.benchmarks.common import Progress, say
from streams.generate.personas import Generator, customer_key

Message = tuple[bytes, bytes]
"""(key, value) of one input record."""

_CHUNK = 5000


def synthetic(events: int, customers: int, seed: int) -> list[Message]:
    """``events`` live events from a population of ``customers``, stamped now, keyed by customer.

    The same draw as :meth:`Generator.next_event` (a customer by activity, then one session),
    with the cumulative weights computed once: ``next_event`` recomputes them for every session,
    which is slow for a population of 100,000.
    """
    generator = Generator(seed=seed, customers=customers)
    population = generator.population
    cumulative = list(itertools.accumulate(c.persona.activity for c in population))
    stamp = datetime.now(UTC)
    timestamp = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    out: list[Message] = []
    progress = Progress("events generated", events)
    while len(out) < events:
        customer = generator.rng.choices(population, cum_weights=cumulative, k=1)[0]
        for event in generator.session(customer, stamp)[: events - len(out)]:
            event["timestamp"] = timestamp
            out.append((customer_key(event).encode(), orjson.dumps(event)))
        progress.update(len(out))
    return out


def producer(bootstrap: str, linger_ms: int = 20) -> AIOKafkaProducer:
    """A producer tuned for bulk loading (``linger_ms=0`` for latency measurements)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )


async def preproduce(bootstrap: str, topics: Sequence[str], messages: Sequence[Message]) -> None:
    """Send every message to every topic (keyed, so the default partitioner spreads them)."""
    client = producer(bootstrap)
    await client.start()
    total = len(messages) * len(topics)
    progress = Progress("events produced", total)
    done = 0
    try:
        for start in range(0, len(messages), _CHUNK):
            futures = [
                await client.send(topic, value=value, key=key)
                for key, value in messages[start : start + _CHUNK]
                for topic in topics
            ]
            await asyncio.gather(*futures)
            done += len(futures)
            progress.update(done)
    finally:
        await client.stop()
    say(f"{total} events produced to {len(topics)} topics")
