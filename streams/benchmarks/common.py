"""What every bench phase shares: the run's configuration, its infrastructure, small helpers."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from streams.settings import Settings
from streams.stack.embedded import EmbeddedBroker, EmbeddedRedis

PARTITIONS = 8


class BenchError(RuntimeError):
    """Infrastructure failed: the bench reports it in one line and exits 1."""


def say(message: str) -> None:
    """Progress on stderr (stdout is for the table or the JSON object)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Progress:
    """Prints ``label: done/total`` on stderr at most every ``every`` seconds."""

    def __init__(self, label: str, total: int, every: float = 5.0) -> None:
        self.label = label
        self.total = total
        self.every = every
        self._last = time.monotonic()

    def update(self, done: int) -> None:
        """Report ``done`` if enough time has passed since the last report."""
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            say(f"{self.label}: {done}/{self.total}")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


OPEN_LOOP_TICK_S = 0.002


async def open_loop(
    rate: float, seconds: float, request: Callable[[int], Awaitable[None]], drain_s: float
) -> float:
    """Start ``request(n)`` on schedule, ``rate`` per second for ``seconds``, whether or not
    earlier ones have finished (open loop); wait up to ``drain_s`` for those still running.
    Return the seconds from the start to the end of the wait."""
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    issued = 0
    while (elapsed := time.monotonic() - start) < seconds:
        for _ in range(int(rate * elapsed) - issued):
            task = asyncio.ensure_future(request(issued))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            issued += 1
        await asyncio.sleep(OPEN_LOOP_TICK_S)
    if tasks:
        await asyncio.wait(tasks, timeout=drain_s)
    return time.monotonic() - start


@dataclass(frozen=True)
class Throughput:
    """What a throughput phase measured: the consumer's events/s and its CPU time per event."""

    events_per_s: float
    cpu_us_per_event: float | None = None


@dataclass(frozen=True)
class BenchConfig:
    """How big and how long the run is (the CLI options of ``segmenter bench``)."""

    events: int = 100_000
    customers: int = 100_000
    rate: float = 1000.0
    seconds: float = 10.0
    api_rate: float = 500.0
    workers: int = 1
    timer_customers: int = 200
    timer_delay_s: float = 2.0
    seed: int = 7
    visitors: int = 0
    """Open visitor streams of (j); 0 leaves (j) out."""
    visitor_rate: float = 200.0


@dataclass
class Infra:
    """The broker, Redis, topics, namespace and consumer group of one run."""

    settings: Settings
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    bootstrap: str = ""
    redis_url: str = ""
    broker: EmbeddedBroker | None = None
    redis_server: EmbeddedRedis | None = None

    @property
    def namespace(self) -> str:
        """The run's Redis key prefix."""
        return f"bench-{self.run}"

    @property
    def prefix(self) -> str:
        """The run's topic-name prefix."""
        return f"segmenter.bench.{self.run}"

    @property
    def ceiling_topic(self) -> str:
        """Input of (a), the raw consumer."""
        return f"{self.prefix}.ceiling"

    @property
    def input_topic(self) -> str:
        """Input of the worker: (b), then (c), (e) and (f)."""
        return f"{self.prefix}.events"

    @property
    def migrations_topic(self) -> str:
        """The worker's migrations."""
        return f"{self.prefix}.migrations"

    @property
    def dlq_topic(self) -> str:
        """The worker's dead letters (should stay empty)."""
        return f"{self.prefix}.dlq"

    @property
    def memberships_topic(self) -> str:
        """The worker's compacted membership topic (the worker creates it)."""
        return f"{self.prefix}.memberships"

    @property
    def topics(self) -> dict[str, int]:
        """The topics the bench creates, and their partition counts."""
        return {
            self.ceiling_topic: PARTITIONS,
            self.input_topic: PARTITIONS,
            self.migrations_topic: PARTITIONS,
            self.dlq_topic: 1,
        }

    @property
    def group_id(self) -> str:
        """The worker's consumer group."""
        return f"segmenter-bench-{self.run}"

    @property
    def external(self) -> bool:
        """True when a configured broker or Redis is used (so cleanup must delete what we made)."""
        return self.broker is None or self.redis_server is None

    def start(self) -> None:
        """Start embedded servers for whatever is not configured."""
        settings = self.settings
        if settings.kafka_bootstrap:
            self.bootstrap = settings.kafka_bootstrap
        else:
            self.broker = EmbeddedBroker()
            self.bootstrap = self.broker.start()
        if settings.redis_url:
            self.redis_url = settings.redis_url
        else:
            self.redis_server = EmbeddedRedis()
            self.redis_url = self.redis_server.start()

    def stop(self) -> None:
        """Stop the embedded servers (their data goes with them)."""
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.broker is not None:
            self.broker.stop()

    def redis(self) -> aioredis.Redis:
        """A new client of the run's Redis."""
        return aioredis.Redis.from_url(self.redis_url, decode_responses=False)


async def delete_keys(client: aioredis.Redis, pattern: str) -> int:
    """UNLINK every key matching ``pattern``, a SCAN page at a time; return how many."""
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=2000):
        batch.append(key)
        if len(batch) >= 2000:
            deleted += int(await client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(await client.unlink(*batch))
    return deleted


async def delete_run(infra: Infra, namespace: str, topics: list[str]) -> None:
    """Delete a namespace's Redis keys and those of ``topics`` that exist."""
    client = infra.redis()
    try:
        await delete_keys(client, f"{namespace}:*")
    finally:
        await client.aclose()
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [name for name in topics if name in existing]
        with contextlib.suppress(Exception):  # a broker that cannot delete topics keeps them
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def cleanup(infra: Infra) -> None:
    """Delete the run's Redis keys and topics (only needed on configured servers)."""
    await delete_run(infra, infra.namespace, [*infra.topics, infra.memberships_topic])
