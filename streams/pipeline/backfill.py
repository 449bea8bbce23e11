"""Backfill: re-evaluate stored customers after the rules (or RFM boundaries) changed.

Each worker backfills the customers whose home partition it owns, a page at a time, under the
same lock as event batches, so events keep flowing between pages and nothing is lost. Each
customer records the version it was evaluated under, so a backfill interrupted by a crash
resumes where it stopped, and an event arriving for a customer not yet backfilled re-evaluates
it first (``trigger.kind = rule_change``) before applying the event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence

from streams.pipeline.loading import commit_work
from streams.pipeline.processor import PipelineContext, load_working_set
from streams.store.base import CommitBatch

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
