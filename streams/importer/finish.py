"""The end of an import: time brought to the namespace's now, then one notice per change.

1. **Settle**: every timer due by the end (the history's last instant in an event-clock
   namespace, the wall clock in a processing-clock one) fires and every open instant closes,
   quietly, as the last events' control record does in ``segmenter replay``. A worker started
   afterwards therefore finds nothing overdue to publish.
2. **Announce** (quiet imports): each customer the run changed gets one ``import`` migration
   per membership that differs from before the run, at the end time, with the reasons as of
   then, numbered in the customer's sequence; and its membership record. Each page of customers
   is one commit that also deletes their before-records, so an interrupted announce resumes
   where it stopped and never announces twice.
3. **Send**: the run's own outboxes go to Kafka (acks=all) through the worker's sender, and are
   trimmed once acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import orjson
from aiokafka import AIOKafkaProducer

from streams.importer.apply import until_committed
from streams.pipeline.processor import ImportBatch, PipelineContext, load_working_set, process_batch
from streams.pipeline.sender import flush_outbox
from streams.store.redis_store import RedisStore

PAGE = 500


async def settle(ctx: PipelineContext, run: str, until: float, keep_before: bool) -> int:
    """Fire every timer due through ``until`` on every partition; returns how many batches."""
    partitions = range(max(1, ctx.input_partitions))
    batches = 0
    while True:
        batch = ImportBatch(run=run, clocks={}, until=until, keep_before=keep_before)
        commit = await until_committed(
            partial(process_batch, ctx, [], partitions, run=batch), "settling the timers"
        )
        batches += 1
        if not commit.states:
            return batches


async def announce(
    ctx: PipelineContext,
    store: RedisStore,
    run: str,
    until: float,
    progress: Callable[[int], None],
    notify: bool = True,
) -> int:
    """Mark every customer the run touched as imported up to ``until`` (the cut-over) and,
    with ``notify``, publish its changed memberships; returns how many ``import`` migrations
    were committed."""
    migrations = 0
    for group in store.keys.groups:
        while True:
            page = await store.run_before(run, group, PAGE)
            if not page:
                break
            migrations += await until_committed(
                partial(_announce_page, ctx, run, until, dict(page), notify),
                f"announcing {len(page)} customers",
            )
            progress(len(page))
    return migrations


async def _announce_page(
    ctx: PipelineContext, run: str, until: float, page: dict[str, bytes], notify: bool
) -> int:
    ids = list(page)
    work = await load_working_set(ctx, ids, [])
    work.emission = "publish" if notify else "none"
    for cid in ids:
        state = work.states.get(cid)
        before = orjson.loads(page[cid])
        members = frozenset(before["m"])
        if notify:
            work.loaded[cid] = (members, before["p"]) if members else None
        if state is None or state.merged_into is not None:
            continue
        home = ctx.home_partition(cid)
        if state.imported_until is None or state.imported_until < until:
            state.imported_until = until
            work.touch(cid, home)
        if notify:
            work.announce(home, state, members, until)
    commit = work.finish({})
    commit.clocks = {}
    commit.run = run
    commit.announced = ids
    count = sum(1 for entries in commit.outbox.values() for raw in entries if b"ce_type" in raw)
    await ctx.store.commit(commit)
    return count


async def send(store: RedisStore, bootstrap: str, partitions: int, **client: object) -> int:
    """Send the run's outboxes to Kafka; returns how many messages."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **client)
    await producer.start()
    try:
        sent = 0
        for partition in range(max(1, partitions)):
            sent += await flush_outbox(store, producer, partition)
        return sent
    finally:
        await producer.stop()
