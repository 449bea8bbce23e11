"""When to send again: exponential backoff with full jitter, ``Retry-After``, a rate limit.

Time is injected (``monotonic`` and ``sleep``), so tests advance it instead of waiting.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from streams.deliver.config import Retry

Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]


@dataclass
class Backoff:
    """Delays between attempts: ``uniform(0, min(max, initial * 2**n))`` (full jitter).

    A ``Retry-After`` from the receiver is a floor: the next attempt waits at least that long.
    """

    policy: Retry
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.policy.max_backoff_s, self.policy.initial_backoff_s * 2 ** (attempt - 1))
        jittered = self.rng.uniform(0, ceiling)
        return max(jittered, retry_after) if retry_after is not None else jittered


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class RateLimit:
    """At most ``per_second`` requests a second, with bursts of up to one second's worth.

    The generic cell rate algorithm: each request reserves the next slot (``interval`` after the
    previous one) and waits until at most ``burst - 1`` slots lie ahead of now.
    """

    per_second: float
    monotonic: Monotonic = time.monotonic
    sleep: Sleep = asyncio.sleep
    next_slot: float = field(init=False)

    def __post_init__(self) -> None:
        self.interval = 1.0 / self.per_second
        self.tolerance = (max(1.0, self.per_second) - 1.0) * self.interval
        self.next_slot = self.monotonic()

    async def acquire(self) -> float:
        """Wait for a slot; return how long it waited."""
        now = self.monotonic()
        slot = max(self.next_slot, now)
        self.next_slot = slot + self.interval
        wait = slot - self.tolerance - now
        if wait <= 0:
            return 0.0
        await self.sleep(wait)
        return wait
