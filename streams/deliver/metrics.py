"""The deliverer's counters in Redis: written by ``segmenter deliver``, read by ``/metrics``.

One hash per destination, ``<namespace>:deliver:<id>``: counters (``delivered``, ``retried``,
``dead_lettered``, ``requests``, ``skipped``) added by every deliverer process, the lag of each
migrations partition (``lag:<partition>``, set by the process that owns it) and ``updated_at``.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis


class RedisDeliveryMetrics:
    """Counters per destination in ``<ns>:deliver:<id>`` (a hash), read by ``/metrics``."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def key(self, destination: str) -> str:
        """The destination's metrics hash."""
        return f"{self.namespace}:deliver:{destination}"

    async def add(self, destination: str, counts: dict[str, int], lag: dict[int, int]) -> None:
        """Add the counts; set each owned partition's lag and the time of this report."""
        key = self.key(destination)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.sadd(f"{self.namespace}:deliver:ids", destination)
            for name, count in counts.items():
                pipe.hincrby(key, name, count)
            for partition, behind in lag.items():
                pipe.hset(key, f"lag:{partition}", behind)
            pipe.hset(key, "updated_at", f"{time.time():.3f}")
            await pipe.execute()


async def read_delivery_metrics(
    client: aioredis.Redis, namespace: str
) -> dict[str, dict[str, float]]:
    """Every destination's counters and total lag, as reported by the deliverers."""
    ids = sorted(_text(x) for x in await client.smembers(f"{namespace}:deliver:ids"))
    out: dict[str, dict[str, float]] = {}
    for destination in ids:
        raw = await client.hgetall(f"{namespace}:deliver:{destination}")
        values = {_text(k): float(v) for k, v in raw.items()}
        lag = sum(v for k, v in values.items() if k.startswith("lag:"))
        figures = {k: v for k, v in values.items() if not k.startswith("lag:")}
        figures["lag"] = lag
        out[destination] = figures
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
