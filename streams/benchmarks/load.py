"""The synthetic events of a run and producing them before the throughput phases."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.benchmarks.common import BenchError, Progress, say
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


PACE_TICK_S = 0.002


async def send_paced(
    client: AIOKafkaProducer,
    topic: str,
    messages: Sequence[tuple[str, Message]],
    rate: float,
    sent_at: dict[str, float],
    seconds: float | None = None,
) -> tuple[int, float]:
    """Send ``(tag, message)`` pairs at ``rate`` per second (until all are sent, or for at most
    ``seconds``), noting each tag's send time (monotonic) in ``sent_at``; the count sent and the
    seconds it took. Raises :class:`BenchError` when some could not be produced."""
    futures: list[asyncio.Future[Any]] = []
    start = time.monotonic()
    sent = 0
    while sent < len(messages):
        elapsed = time.monotonic() - start
        if seconds is not None and elapsed >= seconds:
            break
        for _ in range(min(int(rate * elapsed), len(messages)) - sent):
            tag, (key, value) = messages[sent]
            sent_at[tag] = time.monotonic()
            futures.append(await client.send(topic, value=value, key=key))
            sent += 1
        await asyncio.sleep(PACE_TICK_S)
    took = time.monotonic() - start
    results = await asyncio.gather(*futures, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise BenchError(f"{len(errors)} events could not be produced: {errors[0]!r}")
    return sent, took
