"""(b) The segmenter: one real worker child draining the pre-filled input topic.

Progress is read where the worker records it: the ``ns:offsets`` hash (input partition -> last
applied offset), written in the same Lua call as the states, so ``sum(offset + 1)`` over the
partitions is the number of events applied and committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import redis.asyncio as aioredis

from streams.benchmarks.common import PARTITIONS, BenchError, Infra, Progress, Throughput, say
from streams.benchmarks.cpu import CpuMeter, per_event_us
from streams.stack.children import Child, settings_env
from streams.stack.embedded import free_port
from streams.store.redis_store import Keys

LATENESS_S = 7200.0
"""The bench worker's ``allowed_lateness_s``: (f) sends ``Product Added`` events back-dated by
almost an hour, and a worker must not treat them as too late to count (in the processing-time
clock the allowance only decides that; timers follow the wall clock)."""


def start_worker(infra: Infra, command: str = "worker", **extra: object) -> tuple[Child, int]:
    """Start ``segmenter worker`` (or ``api``) on the run's topics and namespace (``extra``
    settings on top); return it and its HTTP port."""
    port = free_port()
    values: dict[str, object] = dict(
        kafka_bootstrap=infra.bootstrap,
        redis_url=infra.redis_url,
        rules=infra.settings.rules.resolve(),
        input_topic=infra.input_topic,
        migrations_topic=infra.migrations_topic,
        dlq_topic=infra.dlq_topic,
        memberships_topic=infra.memberships_topic,
        input_partitions=PARTITIONS,
        migrations_partitions=PARTITIONS,
        namespace=infra.namespace,
        group_id=infra.group_id,
        clock="processing",
        allowed_lateness_s=LATENESS_S,
        http_host="127.0.0.1",
        http_port=port,
        api_key=None,
        log_level="warning",
    )
    values.update(extra)
    return Child([command], settings_env(**values)).start(), port


def side_worker_env(infra: Infra, prefix: str, namespace: str, **extra: object) -> dict[str, str]:
    """A worker of a side phase ((g), (i)): input ``<prefix>.events``, its own output topics,
    namespace and group, the processing clock, no HTTP; ``extra`` settings on top."""
    values: dict[str, object] = {
        "kafka_bootstrap": infra.bootstrap,
        "redis_url": infra.redis_url,
        "rules": infra.settings.rules.resolve(),
        "input_topic": f"{prefix}.events",
        "migrations_topic": f"{prefix}.migrations",
        "dlq_topic": f"{prefix}.dlq",
        "memberships_topic": f"{prefix}.memberships",
        "input_partitions": PARTITIONS,
        "migrations_partitions": PARTITIONS,
        "namespace": namespace,
        "group_id": f"{infra.group_id}-{namespace}",
        "clock": "processing",
        "http_port": 0,
        "api_key": None,
        "log_level": "warning",
    }
    values.update(extra)
    return settings_env(**values)


async def applied(infra: Infra, client: aioredis.Redis) -> int:
    """Events applied so far: the sum over input partitions of (last applied offset + 1)."""
    raw = await client.hgetall(Keys(infra.namespace).offsets)
    return sum(int(float(v)) + 1 for v in raw.values())


async def drain(
    label: str,
    children: Sequence[Child],
    count: int,
    done: Callable[[], Awaitable[int]],
    timeout: float,
    phase: str = "(b)",
) -> Throughput:
    """Poll ``done`` (events processed so far) until ``count``: events/s and the children's
    CPU time per event, both from the first processed event to the last."""
    meter = CpuMeter({label: [c.proc.pid for c in children if c.proc is not None]})
    progress = Progress(f"events applied by the {label}", count)
    deadline = time.monotonic() + timeout
    first: tuple[float, int] | None = None
    while True:
        seen = await done()
        now = time.monotonic()
        if seen and first is None:
            first = (now, seen)
            meter.start()
        if seen >= count:
            break
        for child in children:
            if not child.alive():
                raise BenchError(f"the {label} stopped: {child.log_tail(5)!r}")
        if now > deadline:
            raise BenchError(f"the {label} applied only {seen}/{count} in {timeout:.0f}s")
        progress.update(seen)
        await asyncio.sleep(0.02)
    assert first is not None
    elapsed = max(time.monotonic() - first[0], 1e-6)
    measured = max(count - first[1], 1)
    rate = measured / elapsed
    say(f"{phase} {label}: {count} events in {elapsed:.1f}s = {rate:.0f} events/s")
    return Throughput(rate, per_event_us(meter.used()[label], measured))


async def run_segmenter(
    infra: Infra, workers: Sequence[Child], count: int, timeout: float
) -> Throughput:
    """Events/s of the workers, from the first applied batch until all ``count`` are applied,
    and the workers' CPU time per event over the same span."""
    client = infra.redis()
    try:
        return await drain("workers", workers, count, lambda: applied(infra, client), timeout)
    finally:
        await client.aclose()


async def wait_http(port: int, worker: Child, timeout: float = 30.0) -> None:
    """Block until the worker's HTTP API answers ``/healthz``."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if not worker.alive():
                raise BenchError(f"the worker stopped: {worker.log_tail(5)!r}")
            await asyncio.sleep(0.2)
    raise BenchError(f"the worker's HTTP API on port {port} did not answer in {timeout:.0f}s")
