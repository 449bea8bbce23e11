"""The worker's state cache: it changes what a batch reads from, never what a batch writes.

The reference is the same pipeline with no cache (every batch reads and decodes the store),
whose own results the exactness tests check against an independent model.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streams.benchmarks.history_bench import LATENESS_S, history_messages
from streams.benchmarks.peer import PEER_RULES
from streams.engine import load_rules
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.state_cache import CachedState, StateCache
from streams.settings import Settings
from streams.state.customer import CustomerState
from streams.store.base import ConflictError, StoredState
from streams.store.memory import MemoryStore
from tests import events
from tests.events import encoded
from tests.kit import memory_store

PARTITIONS = 4


def state(cid: str) -> CustomerState:
    return CustomerState(customer_id=cid)


def test_take_removes_what_it_returns() -> None:
    cache = StateCache(10)
    cache.keep([CachedState("a", 3, state("a"), None), CachedState("b", 1, state("b"), 12.5)])
    found = cache.take(["a", "b", "c"])
    assert {cid: (e.version, e.erased_at) for cid, e in found.items()} == {
        "a": (3, None),
        "b": (1, 12.5),
    }
    assert len(cache) == 0
    assert cache.take(["a"]) == {}


def test_least_recently_kept_goes_first_and_revoked_customers_are_dropped() -> None:
    cache = StateCache(3)
    cache.keep([CachedState(cid, 1, state(cid), None) for cid in ("a", "b", "c")])
    cache.keep([CachedState("a", 2, state("a"), None), CachedState("d", 1, state("d"), None)])
    assert sorted(cache.take(["a", "b", "c", "d"])) == ["a", "c", "d"]
    cache.keep([CachedState(cid, 1, state(cid), None) for cid in ("x1", "y1", "x2")])
    assert cache.retain(lambda cid: cid.startswith("x")) == 1
    assert sorted(cache.take(["x1", "x2", "y1"])) == ["x1", "x2"]
    with pytest.raises(ValueError):
        StateCache(0)


def shop_records(customers: int) -> list[Record]:
    """A shop-shaped history (the bench's (m) generator), keyed and partitioned by customer."""
    ctx = context(None)
    offsets: dict[int, int] = {}
    records = []
    for key, value in history_messages(customers):
        partition = ctx.home_partition(key.decode())
        offset = offsets[partition] = offsets.get(partition, -1) + 1
        records.append(Record("segmenter.events", partition, offset, key, value))
    return records


def context(cache: StateCache | None) -> PipelineContext:
    settings = Settings(clock="event", allowed_lateness_s=LATENESS_S, idle_settle_s=0)
    rules = load_rules(PEER_RULES)
    return PipelineContext.create(settings, rules, MemoryStore(), PARTITIONS, state_cache=cache)


async def run(ctx: PipelineContext, records: Sequence[Record], size: int) -> None:
    for start in range(0, len(records), size):
        await process_batch(ctx, records[start : start + size], range(PARTITIONS))


def contents(store: MemoryStore) -> dict[str, object]:
    """Everything a batch can write to the in-memory store."""
    return {
        "states": dict(store.states),
        "segments": {name: sorted(members) for name, members in store.segments.items()},
        "outboxes": store.outboxes,
        "offsets": store.offsets,
        "clocks": store.clocks_by_partition,
        "timers": store.timers,
        "moves": store.moves,
        "history": store.history_counts,
    }


async def test_a_shop_history_writes_the_same_with_and_without_the_cache() -> None:
    records = shop_records(150)
    plain = context(None)
    await run(plain, records, 40)
    cache = StateCache(1_000)
    cached = context(cache)
    await run(cached, records, 40)
    assert contents(memory_store(cached)) == contents(memory_store(plain))
    hits, misses = cached.metrics.state_cache_hits, cached.metrics.state_cache_misses
    assert hits > len(records) // 3, "the customers' later batches came from the cache"
    assert (plain.metrics.state_cache_hits, plain.metrics.state_cache_misses) == (0, hits + misses)
    migrations = sum(len(entries) for entries in memory_store(plain).outboxes.values())
    assert migrations > 100


def order(mid: str, user: str, revenue: float, ts: str) -> bytes:
    return encoded(events.order(mid, user, revenue, ts))


def records(*values: bytes, start: int = 0) -> list[Record]:
    return [Record("segmenter.events", 0, start + i, b"ada", v) for i, v in enumerate(values)]


def single_context(cache: StateCache | None) -> PipelineContext:
    settings = Settings(clock="event", allowed_lateness_s=0, idle_settle_s=0)
    return PipelineContext.create(
        settings, load_rules(PEER_RULES), MemoryStore(), 1, state_cache=cache
    )


async def test_a_batch_whose_commit_failed_is_applied_again_from_the_store() -> None:
    """The failed attempt changed the cached state in memory; the retry must not see that
    (it would take its own event for a redelivery and count nothing)."""
    cache = StateCache(10)
    ctx = single_context(cache)
    await process_batch(ctx, records(order("m1", "ada", 10.0, "2025-01-01T00:00:00Z")))
    store = memory_store(ctx)
    second = records(order("m2", "ada", 20.0, "2025-01-02T00:00:00Z"), start=1)
    real_commit = store.commit

    async def broken(_batch: object) -> dict[int, int]:
        raise ConnectionError("redis went away")

    store.commit = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await process_batch(ctx, second)
    store.commit = real_commit  # type: ignore[method-assign]
    await process_batch(ctx, second)
    saved = CustomerState.from_json(store.states["ada"].data)
    assert (saved.orders, saved.revenue, store.states["ada"].version) == (2, 30.0, 2)


async def test_a_state_another_writer_changed_fails_the_version_check_then_is_read_again() -> None:
    cache = StateCache(10)
    ctx = single_context(cache)
    await process_batch(ctx, records(order("m1", "ada", 10.0, "2025-01-01T00:00:00Z")))
    store = memory_store(ctx)
    theirs = CustomerState.from_json(store.states["ada"].data)
    theirs.traits["plan"] = "pro"
    store.states["ada"] = StoredState(store.states["ada"].version + 1, theirs.to_json())
    second = records(order("m2", "ada", 20.0, "2025-01-02T00:00:00Z"), start=1)
    with pytest.raises(ConflictError):
        await process_batch(ctx, second)
    await process_batch(ctx, second)
    saved = CustomerState.from_json(store.states["ada"].data)
    assert (saved.orders, saved.revenue, saved.traits) == (2, 30.0, {"plan": "pro"})
    assert store.states["ada"].version == 3
