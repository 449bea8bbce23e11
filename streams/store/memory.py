"""An in-memory store with the same contract as the Redis one (for pure unit tests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streams.store.base import (
    ANY_VERSION,
    HISTORY_HOURS,
    CommitBatch,
    ConflictError,
    SizeHistory,
    Snapshot,
    StoredState,
    counted,
    fold_history,
    suppression_key,
)


class MemoryStore:
    """Dictionaries behind the :class:`~streams.store.base.Store` interface."""

    def __init__(self, history_hours: int = HISTORY_HOURS) -> None:
        self.history_hours = history_hours
        self.history_base: dict[str, int] = {}
        self.history_counts: dict[int, dict[str, int]] = {}
        self.states: dict[str, StoredState] = {}
        self.offsets: dict[int, int] = {}
        self.clocks_by_partition: dict[int, float] = {}
        self.segments: dict[str, set[str]] = {}
        self.outboxes: dict[int, list[bytes]] = {}
        self.timers: dict[int, dict[str, float]] = {}
        self.moves: dict[str, dict[str, int]] = {}
        self.suppressed: dict[str, float] = {}
        self.meta: dict[str, bytes] = {}
        self.counters: dict[str, int] = {}
        self.runs: dict[str, tuple[dict[str, int], dict[str, bytes]]] = {}
        """Import run -> (checkpoint, memberships before it)."""

    async def load(
        self,
        customer_ids: Sequence[str],
        partitions: Sequence[int],
        due_until: Mapping[int, float] | None = None,
        due_limit: int = 100_000,
    ) -> Snapshot:
        """Read states, partition progress and due timers."""
        due = [
            (p, cid, when)
            for p, until in (due_until or {}).items()
            for cid, when in await self.due(p, until, due_limit)
        ]
        return Snapshot(
            due=due,
            states={cid: self.states.get(cid) for cid in customer_ids},
            offsets={p: self.offsets[p] for p in partitions if p in self.offsets},
            clocks={
                p: self.clocks_by_partition[p] for p in partitions if p in self.clocks_by_partition
            },
            suppressed={
                cid: self.suppressed[suppression_key(cid)]
                for cid in customer_ids
                if suppression_key(cid) in self.suppressed
            },
        )

    async def commit(self, batch: CommitBatch) -> dict[int, int]:
        """Check every expected version first, then write everything."""
        for write in batch.states:
            current = self.states.get(write.customer_id)
            version = current.version if current else 0
            if write.expected != ANY_VERSION and version != write.expected:
                raise ConflictError(write.customer_id)
        for write in batch.states:
            if write.data is None:
                self.states.pop(write.customer_id, None)
            else:
                current = self.states.get(write.customer_id)
                version = current.version if current else 0
                self.states[write.customer_id] = StoredState(version + 1, write.data)
        for change in batch.memberships:
            members = self.segments.setdefault(change.segment, set())
            if change.delta > 0:
                members.add(change.customer_id)
            else:
                members.discard(change.customer_id)
        for partition, offset in batch.offsets.items():
            self.offsets[partition] = max(offset, self.offsets.get(partition, -1))
        for partition, clock in batch.clocks.items():
            self.clocks_by_partition[partition] = max(
                clock, self.clocks_by_partition.get(partition, clock)
            )
        lengths: dict[int, int] = {}
        for partition, entries in batch.outbox.items():
            if entries:
                self.outboxes.setdefault(partition, []).extend(entries)
                lengths[partition] = len(self.outboxes[partition])
        for day, moves in counted(batch.matrix).items():
            counts = self.moves.setdefault(day, {})
            for move, count in moves.items():
                counts[move] = counts.get(move, 0) + count
        for cid, when in batch.suppress.items():
            self.suppressed[suppression_key(cid)] = when
        if batch.history:
            fold_history(
                self.history_base, self.history_counts, counted(batch.history), self.history_hours
            )
        if batch.run:
            progress, before = self.runs.setdefault(batch.run, ({}, {}))
            for fields in batch.progress.values():
                for name, position in fields.items():
                    progress[name] = max(position, progress.get(name, position))
            for cid, value in batch.before.items():
                before.setdefault(cid, value)
            for cid in batch.announced:
                before.pop(cid, None)
        for partition, timers in batch.due.items():
            due = self.timers.setdefault(partition, {})
            for cid, at in timers.items():
                if at is None:
                    due.pop(cid, None)
                else:
                    due[cid] = at
        return lengths

    async def outbox(self, partition: int, limit: int) -> list[bytes]:
        """Oldest unsent messages."""
        return list(self.outboxes.get(partition, [])[:limit])

    async def outbox_trim_many(self, counts: Mapping[int, int]) -> None:
        """Drop sent messages of several partitions."""
        for partition, count in counts.items():
            await self.outbox_trim(partition, count)

    async def outbox_trim(self, partition: int, count: int) -> None:
        """Drop sent messages."""
        del self.outboxes.get(partition, [])[:count]

    async def due(self, partition: int, until: float, limit: int) -> list[tuple[str, float]]:
        """Due timers, earliest first (ties by customer id)."""
        table = self.timers.get(partition, {})
        due = sorted((when, cid) for cid, when in table.items() if when <= until)
        return [(cid, when) for when, cid in due[:limit]]

    async def matrix(self, day: str) -> dict[str, int]:
        """Moves of one day."""
        return dict(self.moves.get(day, {}))

    async def common_members(self, a: str, b: str) -> int:
        """Size of the intersection of two member sets."""
        return len(self.segments.get(a, set()) & self.segments.get(b, set()))

    async def history(self) -> SizeHistory:
        """The retained hourly counts and the base of the dropped ones."""
        hours = {hour: dict(counts) for hour, counts in self.history_counts.items()}
        return SizeHistory(dict(self.history_base), hours)

    async def get_state(self, customer_id: str) -> StoredState | None:
        """One state."""
        return self.states.get(customer_id)

    async def clocks(self) -> dict[int, float]:
        """The partitions' event-time clocks."""
        return dict(self.clocks_by_partition)

    async def segment_sizes(self) -> dict[str, int]:
        """Live counts."""
        return {segment: len(members) for segment, members in self.segments.items() if members}

    async def members(self, segment: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """Members in id order, paged by position."""
        ordered = sorted(self.segments.get(segment, ()))
        page = ordered[cursor : cursor + count]
        following = cursor + count
        return (following if following < len(ordered) else 0), page

    async def scan_customers(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """Ids in sorted order, paged by position."""
        ordered = sorted(self.states)
        page = ordered[cursor : cursor + count]
        following = cursor + count
        return (following if following < len(ordered) else 0), page

    async def meta_get(self, name: str) -> bytes | None:
        """A named value."""
        return self.meta.get(name)

    async def meta_set(self, name: str, value: bytes) -> None:
        """Store a named value."""
        self.meta[name] = value

    async def progress_add(self, name: str, count: int) -> int:
        """Add to a counter."""
        self.counters[name] = self.counters.get(name, 0) + count
        return self.counters[name]

    async def ping(self) -> bool:
        """Always reachable."""
        return True

    async def recover(self) -> int:
        """Nothing is ever half-committed here."""
        return 0

    async def close(self) -> None:
        """Nothing to release."""
