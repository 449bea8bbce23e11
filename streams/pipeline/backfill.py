"""Backfill: re-evaluate stored customers after the rules (or RFM boundaries) changed.

Each worker backfills the customers whose home partition it owns, a page at a time, under the
same lock as event batches, so events keep flowing between pages and nothing is lost. Each
customer records the version it was evaluated under, so a backfill interrupted by a crash
resumes where it stopped, and an event arriving for a customer not yet backfilled re-evaluates
it first (``trigger.kind = rule_change``) before applying the event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

from streams.pipeline.loading import commit_work
from streams.pipeline.processor import PipelineContext, load_working_set
from streams.pipeline.retry import RETRIABLE, WorkerExit
from streams.pipeline.timekeeping import Clock
from streams.store.base import CommitBatch

log = logging.getLogger("segmenter.worker")

PAGE = 500


async def refresh_customers(
    ctx: PipelineContext, customer_ids: Sequence[str], emit: bool, now: float | None = None
) -> CommitBatch:
    """Re-evaluate ``customer_ids`` under ``ctx``'s rules and commit (one Lua call)."""
    homes = sorted({ctx.home_partition(cid) for cid in customer_ids})
    work = await load_working_set(ctx, list(customer_ids), homes)
    work.emission = "publish" if emit else "none"
    for cid in customer_ids:
        state = work.states.get(cid)
        home = ctx.home_partition(cid)
        if now is not None:
            instant = now
        elif ctx.settings.clock == "event":
            instant = work.clocks.get(home, work.instant)
        else:
            instant = work.instant
        if state is not None:
            work.refresh(home, state, instant)
    commit = work.finish({})
    commit.clocks = {}
    await commit_work(ctx, work, commit)
    return commit


async def backfill(
    ctx_now: Callable[[], PipelineContext],
    partitions: Collection[int],
    emit: bool,
    run_page: Callable[[Sequence[str], bool], Awaitable[None]],
    progress: Callable[[int], Awaitable[None]] | None = None,
    page: int = PAGE,
) -> int:
    """Walk every stored customer owned by ``partitions`` and re-evaluate it with ``run_page``.

    ``ctx_now`` gives the current context (rules can change again during a backfill: each page
    uses the newest). Returns how many customers this worker re-evaluated.
    """
    done = 0
    cursor = 0
    while True:
        ctx = ctx_now()
        cursor, ids = await ctx.store.scan_customers(cursor, page)
        mine = [cid for cid in ids if ctx.home_partition(cid) in partitions]
        if mine:
            await run_page(mine, emit)
            done += len(mine)
            if progress is not None:
                # this worker's own customers only: the workers' counts add up to the total
                await progress(len(mine))
        if cursor == 0:
            return done


@dataclass
class Backfiller:
    """A worker's backfill: which held partitions are evaluated under the current context, and
    the task re-evaluating the others (one at a time, a page per ``run_page``, in the
    background of the batch loop)."""

    current: Callable[[], PipelineContext]
    run_page: Callable[[Sequence[str], bool], Awaitable[None]]
    """Re-evaluate a page of customers (under the worker's lock, with its retries)."""
    clock: Clock
    emit: bool = True
    """Whether the backfill emits ``rule_change`` migrations (not for ``--no-emit`` packs)."""
    done: set[int] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def reassign(self, assigned: frozenset[int]) -> None:
        """Forget the partitions no longer held (a partition held again is backfilled again)."""
        self.done &= assigned

    def restart(self, emit: bool) -> None:
        """The context changed: every held partition is to be backfilled again."""
        self.emit = emit
        self.done.clear()

    def schedule(self, assigned: frozenset[int]) -> None:
        """Start backfilling the held partitions not done yet, unless a backfill is running;
        :class:`WorkerExit` when the last one's retries ran out (as a batch's would)."""
        pending = assigned - self.done
        self._raise_if_gave_up()
        if pending and (self.task is None or self.task.done()):
            self.task = asyncio.create_task(self.run(frozenset(pending)))

    def _raise_if_gave_up(self) -> None:
        task = self.task
        if task is not None and task.done() and not task.cancelled():
            failed = task.exception()
            if isinstance(failed, WorkerExit):
                self.task = None
                raise failed

    async def run(self, partitions: frozenset[int]) -> None:
        """Re-evaluate the stored customers of ``partitions`` a page at a time."""
        version = self.current().version
        started = self.clock.now()

        async def progress(count: int) -> None:
            await self.current().store.progress_add(f"backfill:{version}", count)

        try:
            done = await backfill(self.current, partitions, self.emit, self.run_page, progress)
        except RETRIABLE as exc:
            log.warning("backfill interrupted (%r); it will resume", exc)
            return
        if self.current().version == version:
            self.done |= partitions
        if done:
            log.info(
                "backfilled %d customers of partitions %s under %s in %.1fs",
                done,
                sorted(partitions),
                version,
                self.clock.now() - started,
            )
