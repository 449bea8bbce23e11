"""Step 3 of a batch, the read, and its commit: states through the worker's state cache.

:func:`read_states` loads what a batch needs from the store in one round trip (plus one for
the customers of due timers and one per merge hop, when there are any), taking the customers
the worker's :class:`~streams.pipeline.state_cache.StateCache` holds from memory instead;
:func:`commit_work` commits a batch and puts what it wrote back into that cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from streams.pipeline.context import PipelineContext
from streams.pipeline.identity import MAX_HOPS
from streams.pipeline.state_cache import CachedState, StateCache
from streams.pipeline.working_set import CustomerFailed, WorkingSet
from streams.state.customer import CustomerState, StateDecodeError
from streams.store.base import ANY_VERSION, CommitBatch, Snapshot, StoredState

DUE_LIMIT = 100_000
"""Due timers read per partition and batch."""


@dataclass(slots=True)
class ReadStates:
    """The customers a batch reads, decoded, with their stored versions and erasure times."""

    snapshot: Snapshot
    """Offsets, clocks and due timers as read (its ``states`` are only the ones read)."""
    states: dict[str, CustomerState | None] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, float] = field(default_factory=dict)

    def add_stored(self, stored: Mapping[str, StoredState | None], skip: frozenset[str]) -> None:
        """Decode states read from the store (``skip``: quarantined, left out)."""
        for cid, found in stored.items():
            self.versions[cid] = found.version if found else 0
            if cid in skip:
                continue
            try:
                self.states[cid] = CustomerState.from_json(found.data) if found else None
            except StateDecodeError as exc:
                raise CustomerFailed(cid, str(exc)) from exc

    def add_cached(self, cached: Mapping[str, CachedState], skip: frozenset[str]) -> None:
        """Take states from the cache as they were committed."""
        for cid, entry in cached.items():
            if cid in skip:
                continue
            self.states[cid] = entry.state
            self.versions[cid] = entry.version
            if entry.erased_at is not None:
                self.suppressed[cid] = entry.erased_at


async def read_states(
    ctx: PipelineContext,
    customers: Sequence[str],
    partitions: Sequence[int],
    due_until: Mapping[int, float],
    quarantined: frozenset[str],
    cache: StateCache | None,
) -> ReadStates:
    """The batch's customers, the customers of its due timers and the profiles they were
    merged into; offsets, clocks and due timers of ``partitions``.

    A quarantined customer's state is left out; one that cannot be read raises
    :class:`CustomerFailed` (the batch then quarantines it)."""
    cached, to_read = _from_cache(ctx, cache, customers)
    snapshot = await ctx.store.load(to_read, partitions, due_until, DUE_LIMIT)
    read = ReadStates(snapshot, suppressed=dict(snapshot.suppressed))
    read.add_cached(cached, quarantined)
    read.add_stored(snapshot.states, quarantined)
    timed = list(dict.fromkeys(cid for _, cid, _ in snapshot.due))
    await _read_more(ctx, read, timed, quarantined, cache)
    for _ in range(MAX_HOPS):
        targets = {
            state.merged_into
            for state in read.states.values()
            if state is not None
            and state.merged_into is not None
            and state.merged_into not in read.versions
        }
        if not targets:
            break
        await _read_more(ctx, read, sorted(targets), quarantined, cache)
    return read


async def _read_more(
    ctx: PipelineContext,
    read: ReadStates,
    wanted: Sequence[str],
    quarantined: frozenset[str],
    cache: StateCache | None,
) -> None:
    """Add ``wanted`` customers not read yet: from the cache, else from the store."""
    cached, missing = _from_cache(ctx, cache, [c for c in wanted if c not in read.versions])
    read.add_cached(cached, quarantined)
    if missing:
        found = await ctx.store.load(missing, [])
        read.suppressed.update(found.suppressed)
        read.add_stored(found.states, quarantined)


def _from_cache(
    ctx: PipelineContext, cache: StateCache | None, wanted: Sequence[str]
) -> tuple[dict[str, CachedState], list[str]]:
    """Take ``wanted`` from the cache; the others are to be read from the store (both
    counted in the metrics)."""
    cached = cache.take(wanted) if cache is not None else {}
    rest = [cid for cid in wanted if cid not in cached] if cached else list(wanted)
    ctx.metrics.state_cache_hits += len(cached)
    ctx.metrics.state_cache_misses += len(rest)
    return cached, rest


async def commit_work(ctx: PipelineContext, work: WorkingSet, commit: CommitBatch) -> None:
    """Commit a batch's changes (when there are any) and keep what it wrote in the cache."""
    if commit.is_empty():
        return
    commit.outbox_lengths = await ctx.store.commit(commit)
    cache = ctx.state_cache
    if cache is not None:
        cache.keep(_written(work, commit))


def _written(work: WorkingSet, commit: CommitBatch) -> Iterator[CachedState]:
    """The live profiles the commit wrote with a version check, as written."""
    claims = commit.claims
    for write in commit.states:
        cid = write.customer_id
        state = work.states.get(cid)
        if (
            write.data is None
            or write.expected == ANY_VERSION
            or state is None
            or state.merged_into is not None
            or state.handing_over
            or cid in claims
        ):
            continue
        yield CachedState(cid, write.expected + 1, state, work.suppressed.get(cid))
