"""The one section where a started worker changes the store: batches, timers, backfill pages.

:class:`Live` is what the worker's parts share once it has started: the context batches run
under (swapped when the rules, the live RFM boundaries or the models change), the lock that
keeps batches, timers, backfill pages and swaps from interleaving, and the partitions held.

:class:`BatchRunner` runs a piece of work under that lock and sends what it committed to the
outbox; infrastructure errors are retried with the worker's :class:`RetryPolicy`
(:class:`~streams.pipeline.retry.GaveUp` when they persist), a version conflict at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.retry import RetryPolicy
from streams.pipeline.sender import Outlet
from streams.pipeline.timekeeping import Clock
from streams.store.base import CommitBatch, ConflictError

log = logging.getLogger("segmenter.worker")

Work = Callable[..., Awaitable[CommitBatch]]
"""``work(ctx, *args)``: change the store under ``ctx`` and return the commit."""


@dataclass
class Live:
    """The context batches run under, the lock, and the input partitions this worker holds."""

    ctx: PipelineContext
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    assigned: frozenset[int] = frozenset()


@dataclass
class BatchRunner:
    """Runs work under the lock, sends its outbox, retries the infrastructure's errors."""

    live: Live
    outlet: Outlet
    retry: RetryPolicy
    clock: Clock
    flush_all: bool = True
    """Send every held partition's outbox before the next work (at start, after errors and
    rebalances): what was committed but not yet sent."""
    last_progress: float = 0.0
    """When work last completed (``/healthz`` reports a stall)."""

    def __post_init__(self) -> None:
        self.last_progress = self.clock.now()

    async def guarded(self, work: Work, *args: Any) -> None:
        """Run ``work(ctx, *args)`` under the lock, then send the outbox; retry infra errors."""
        live, outlet = self.live, self.outlet

        async def attempt() -> None:
            async with live.lock:
                ctx = live.ctx
                if self.flush_all and live.assigned:
                    for partition in sorted(live.assigned):
                        await outlet.flush(ctx.store, partition)
                    self.flush_all = False
                commit = await work(ctx, *args)
                await outlet.send(ctx.store, commit)
            self.last_progress = self.clock.now()

        def resend_everything(_exc: BaseException) -> None:
            # partitions committed before the error have messages to send, and what the
            # error interrupted is read again from the store (another writer, a restarted server)
            self.flush_all = True
            cache = live.ctx.state_cache
            if cache is not None:
                cache.forget()

        await self.retry.run(
            attempt,
            "infrastructure error",
            again_at_once=(ConflictError,),
            on_error=resend_everything,
            again_log="state of %s changed under this batch; applying it again",
        )

    async def handle(self, records: list[Record], partitions: Collection[int] = ()) -> None:
        """Apply one batch (and the timers due on ``partitions``), then send its outbox."""
        involved = sorted({r.partition for r in records} | set(partitions))
        await self.guarded(_batch, records, involved)

    def reassign(self, assigned: frozenset[int]) -> None:
        """The worker now holds ``assigned``: send their leftovers first, and drop the cached
        states of customers whose partitions it no longer owns."""
        live = self.live
        self.flush_all = True
        live.assigned = assigned
        ctx = live.ctx
        if ctx.state_cache is not None:
            home = ctx.home_partition
            dropped = ctx.state_cache.retain(lambda cid: home(cid) in assigned)
            if dropped:
                log.info("state cache: %d customers of revoked partitions dropped", dropped)


async def _batch(ctx: PipelineContext, records: list[Record], involved: list[int]) -> CommitBatch:
    return await process_batch(ctx, records, involved)


__all__ = ["BatchRunner", "Live", "Work"]
