"""Retrying infrastructure errors, and the errors that end a worker.

One :class:`RetryPolicy` (attempts, a doubling delay up to a maximum, an injectable ``sleep``)
serves every place that waits for Redis or Kafka to come back. When the budget runs out it
raises :class:`GaveUp`; nothing below the process entry ends the process. The entry
(:func:`streams.pipeline.worker.run_worker`) maps a :class:`WorkerExit` to the exit code the
supervisor reads: 75 (infrastructure: restart me later), 78 (configuration: a restart fails the
same way), 70 (a bug in the batch loop: restart me).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.settings import Settings

log = logging.getLogger("segmenter.worker")
T = TypeVar("T")

RETRIABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    KafkaError,
    OSError,
    asyncio.TimeoutError,
)
"""Errors of the infrastructure that a later attempt may not meet."""

EXIT_SOFTWARE = 70
EXIT_INFRASTRUCTURE = 75
EXIT_CONFIG = 78


class WorkerExit(Exception):
    """The worker must stop; ``code`` is the process exit code its entry returns."""

    code = EXIT_SOFTWARE


class GaveUp(WorkerExit):
    """Infrastructure errors outlasted the retry budget (``EX_TEMPFAIL``: restart me later)."""

    code = EXIT_INFRASTRUCTURE


class ConfigMismatch(WorkerExit):
    """The settings do not fit the namespace or the topics (``EX_CONFIG``)."""

    code = EXIT_CONFIG


class BatchLoopFailed(WorkerExit):
    """The batch loop met an error that is not the infrastructure's (``EX_SOFTWARE``)."""

    code = EXIT_SOFTWARE


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries, waiting ``first_delay_s`` after the first failure and twice as long
    after each next one, at most ``max_delay_s``."""

    attempts: int
    max_delay_s: float
    first_delay_s: float = 0.2
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> RetryPolicy:
        """``SEGMENTER_RETRY_ATTEMPTS`` and ``SEGMENTER_RETRY_MAX_DELAY_S``."""
        return cls(settings.retry_attempts, settings.retry_max_delay_s, sleep=sleep)

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        failing: str,
        again_at_once: tuple[type[BaseException], ...] = (),
        on_error: Callable[[BaseException], None] | None = None,
        again_log: str = "%s; trying again",
    ) -> T:
        """``attempt()`` until it returns; :data:`RETRIABLE` errors wait and count, errors of
        ``again_at_once`` count without waiting (logged with ``again_log``); :class:`GaveUp`
        when no attempt is left. ``failing`` is the warning logged before each wait (the
        attempt, ``n/N``, and the error follow); ``on_error`` sees every error caught."""
        delay = self.first_delay_s
        for number in range(1, self.attempts + 1):
            try:
                return await attempt()
            except again_at_once as exc:
                if on_error is not None:
                    on_error(exc)
                log.warning(again_log, exc)
            except RETRIABLE as exc:
                if on_error is not None:
                    on_error(exc)
                log.warning("%s (attempt %d/%d): %r", failing, number, self.attempts, exc)
                await self.sleep(delay)
                delay = min(delay * 2, self.max_delay_s)
        raise GaveUp(f"giving up after {self.attempts} attempts")
