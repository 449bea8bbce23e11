"""(d) Redis memory per customer, from ``MEMORY USAGE`` of the run's own keys.

Counted per stored customer:

- ``state``: the customer's hash ``ns:c:{id}`` (state JSON and version), the mean over a sample
  of up to :data:`SAMPLE` keys found by SCAN;
- ``membership``: every segment member set ``ns:m:<segment>``, summed and divided by the number
  of stored customers (each customer's share of the sets it belongs to);
- ``timers``: the due-timer sorted sets ``ns:due:<partition>``, summed and divided likewise.

Not counted: the per-run constants (``ns:sizes``, ``ns:offsets``, ``ns:clocks``) and the outbox
lists, which are empty once the worker has caught up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from streams.benchmarks.common import BenchError, Infra, say
from streams.store.redis_store import Keys

SAMPLE = 2000


@dataclass
class MemoryReport:
    """Bytes per stored customer, by kind of key, and a sample of stored customer ids."""

    customers: int
    state: float
    membership: float
    timers: float
    sample_ids: list[str] = field(default_factory=list)

    @property
    def per_customer(self) -> float:
        """All three together: what one more customer costs."""
        return self.state + self.membership + self.timers


async def _keys(client: aioredis.Redis, pattern: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=pattern, count=2000)]


async def _usage(client: aioredis.Redis, keys: list[bytes]) -> list[int]:
    """``MEMORY USAGE key SAMPLES 0`` (exact, every element counted) of each key, pipelined."""
    out: list[int] = []
    for start in range(0, len(keys), 500):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 500]:
            pipe.execute_command("MEMORY USAGE", key, "SAMPLES", "0")
        replies: list[Any] = await pipe.execute()
        out.extend(int(r) for r in replies if r is not None)
    return out


async def measure_memory(infra: Infra, seed: int) -> MemoryReport:
    """Measure the namespace's keys now (after (b), before any more traffic)."""
    client = infra.redis()
    try:
        ns = infra.namespace
        keys = Keys(ns)
        customer_keys = await _keys(client, keys.customer_pattern)
        count = len(customer_keys)
        if not count:
            raise BenchError("no customer state in Redis after the throughput phase")
        sample = random.Random(seed).sample(customer_keys, min(SAMPLE, count))
        state = await _usage(client, sample)
        members = await _usage(client, await _keys(client, f"{ns}:m:*"))
        timers = await _usage(client, await _keys(client, f"{ns}:due:*"))
    finally:
        await client.aclose()
    report = MemoryReport(
        customers=count,
        state=sum(state) / max(len(state), 1),
        membership=sum(members) / count,
        timers=sum(timers) / count,
        sample_ids=[keys.customer_id(key.decode()) for key in sample],
    )
    say(
        f"(d) memory: {count} customers stored, {report.per_customer:.0f} bytes each "
        f"(state {report.state:.0f}, memberships {report.membership:.0f}, "
        f"timers {report.timers:.0f})"
    )
    return report
