"""The store interface: what the pipeline and the API need from the system of record.

Two implementations honour it: :mod:`streams.store.redis_store` (Redis, one Lua call per batch)
and :mod:`streams.store.memory` (in-memory, for pure unit tests). One contract test runs against
both. The store does not interpret customer state: it keeps opaque JSON plus a version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class StoredState:
    """A customer's state as stored: its JSON and the version it was written with."""

    version: int
    data: bytes


@dataclass(slots=True)
class Snapshot:
    """What a batch reads before it is applied."""

    states: dict[str, StoredState | None]
    offsets: dict[int, int]
    """Input partition -> highest offset already applied (absent: nothing applied)."""
    clocks: dict[int, float]
    """Input partition -> highest event time seen (the event-time clock)."""
    suppressed: dict[str, float] = field(default_factory=dict)
    """Customer -> when it was erased (events up to then must not re-create it)."""
    due: list[tuple[int, str, float]] = field(default_factory=list)
    """(partition, customer, due time) of the timers asked for, earliest first per partition."""


@dataclass(slots=True)
class StateWrite:
    """Replace a customer's state (``data``) or delete it (``None``), if still at ``expected``.

    ``expected = ANY_VERSION`` writes whatever the current version is.
    """

    customer_id: str
    expected: int
    data: bytes | None


@dataclass(slots=True)
class MembershipChange:
    """A customer entered (``+1``) or left (``-1``) a segment."""

    segment: str
    customer_id: str
    delta: int


@dataclass(slots=True)
class CommitBatch:
    """Everything one batch changes, written atomically or not at all."""

    states: list[StateWrite] = field(default_factory=list)
    memberships: list[MembershipChange] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    clocks: dict[int, float] = field(default_factory=dict)
    outbox: dict[int, list[bytes]] = field(default_factory=dict)
    """Input partition -> messages to send (encoded :class:`OutboxEntry`), in order."""
    due: dict[int, dict[str, float | None]] = field(default_factory=dict)
    """Input partition -> customer -> next timer (None removes it)."""
    matrix: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Input partition (of the migrations) -> day (``YYYY-MM-DD``) -> ``"<from>|<to>"`` -> moves
    to add (``-`` is no segment)."""
    suppress: dict[str, float] = field(default_factory=dict)
    """Erased customer id -> erasure time (stored under :func:`suppression_key`)."""
    history: dict[int, dict[int, dict[str, int]]] = field(default_factory=dict)
    """Input partition (of the migrations) -> hour (epoch seconds // 3600, of the migration's
    time) -> ``"<segment>|in"`` or ``"<segment>|out"`` -> migrations to add (the size history)."""
    origins: dict[str, int] = field(default_factory=dict)
    """Customer -> the input partition whose record or timer changed it (its own home partition
    except for the other side of a merge and the aliases of an erased profile)."""
    claims: dict[str, Claim] = field(default_factory=dict)
    """Merged-away customer -> the claim that hands its profile over to the survivor (used by
    the partitioned layout when the two live in different partitions; see ``redis_store``)."""
    outbox_lengths: dict[int, int] = field(default_factory=dict)
    """Filled after the commit: each written outbox's length (see ``Store.commit``)."""
    run: str = ""
    """An import run (``segmenter import``): names the keys of the three fields below."""
    progress: dict[int, dict[str, int]] = field(default_factory=dict)
    """Input partition -> checkpoint field -> position applied (raised, never lowered): the
    run's progress, committed with what it applied."""
    before: dict[str, bytes] = field(default_factory=dict)
    """Customer -> its memberships before the run, kept from the first write on (``HSETNX``)."""
    announced: list[str] = field(default_factory=list)
    """Customers whose ``before`` record is done with (deleted)."""

    def is_empty(self) -> bool:
        """True when committing would change nothing."""
        return not (
            self.states
            or self.memberships
            or self.offsets
            or self.clocks
            or self.due
            or self.matrix
            or self.suppress
            or self.history
            or any(self.outbox.values())
            or self.progress
            or self.before
            or self.announced
        )


ANY_VERSION = -1


@dataclass(frozen=True, slots=True)
class Claim:
    """Write ``data`` (the merged-away profile, marked as handing over) if still at ``expected``."""

    expected: int
    data: bytes


def counted(by_partition: Mapping[int, Mapping[K, Mapping[str, int]]]) -> dict[K, dict[str, int]]:
    """Per-partition counts (matrix or history) summed over the partitions."""
    total: dict[K, dict[str, int]] = {}
    for counts in by_partition.values():
        for when, cells in counts.items():
            into = total.setdefault(when, {})
            for name, count in cells.items():
                into[name] = into.get(name, 0) + count
    return total


def suppression_key(customer_id: str) -> str:
    """How an erased id is remembered: a digest, never the id itself."""
    return hashlib.sha256(customer_id.encode()).hexdigest()[:32]


HISTORY_HOURS = 90 * 24
"""Default retention of the hourly size history (see ``SEGMENTER_HISTORY_RETENTION_HOURS``)."""


@dataclass(frozen=True, slots=True)
class SizeHistory:
    """Migrations per hour and segment, as stored.

    ``hours``: hour -> ``"<segment>|in"``/``"<segment>|out"`` -> count, for the retained hours
    (those within the retention of the newest hour seen, in migration time). ``base``: the same
    counts summed over every hour dropped by retention, so sizes stay exact.
    """

    base: dict[str, int]
    hours: dict[int, dict[str, int]]


def fold_history(
    base: dict[str, int],
    hours: dict[int, dict[str, int]],
    add: Mapping[int, Mapping[str, int]],
    retention: int,
) -> None:
    """Add a batch's counts, then move hours older than ``retention`` before the newest into
    ``base`` (the rule both stores follow; commit.lua does the same)."""
    for hour, fields in add.items():
        counts = hours.setdefault(hour, {})
        for name, count in fields.items():
            counts[name] = counts.get(name, 0) + count
    if not hours:
        return
    cutoff = max(hours) - retention
    for hour in [h for h in hours if h < cutoff]:
        for name, count in hours.pop(hour).items():
            base[name] = base.get(name, 0) + count


class ConflictError(Exception):
    """A state changed since it was read: nothing was written; reload and apply again."""


class Store(Protocol):
    """The system of record."""

    async def load(
        self,
        customer_ids: Sequence[str],
        partitions: Sequence[int],
        due_until: Mapping[int, float] | None = None,
        due_limit: int = 100_000,
    ) -> Snapshot:
        """One round trip: states of ``customer_ids``, progress of ``partitions``, and the
        timers due by ``due_until[partition]`` (at most ``due_limit`` per partition)."""
        ...

    async def commit(self, batch: CommitBatch) -> dict[int, int]:
        """Apply ``batch`` atomically; raise :class:`ConflictError` if a version moved.

        Returns each written outbox's length after the write (equal to what the batch added
        when nothing older was waiting).
        """
        ...

    async def outbox(self, partition: int, limit: int) -> list[bytes]:
        """The oldest ``limit`` unsent messages of a partition, oldest first."""
        ...

    async def outbox_trim_many(self, counts: Mapping[int, int]) -> None:
        """``outbox_trim`` for several partitions in one round trip."""
        ...

    async def outbox_trim(self, partition: int, count: int) -> None:
        """Forget the oldest ``count`` messages of a partition (they were sent)."""
        ...

    async def due(self, partition: int, until: float, limit: int) -> list[tuple[str, float]]:
        """Customers of a partition whose timer is due at or before ``until``, earliest first."""
        ...

    async def get_state(self, customer_id: str) -> StoredState | None:
        """One customer's stored state."""
        ...

    async def clocks(self) -> dict[int, float]:
        """Input partition -> event-time clock (the latest event time applied there)."""
        ...

    async def segment_sizes(self) -> dict[str, int]:
        """Segment id -> live member count."""
        ...

    async def matrix(self, day: str) -> dict[str, int]:
        """``"<from>|<to>"`` -> number of moves on ``day`` (UTC, ``YYYY-MM-DD``)."""
        ...

    async def members(self, segment: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """A page of a segment's members and the cursor of the next page (0 when done)."""
        ...

    async def history(self) -> SizeHistory:
        """The retained hourly size history (migrations per hour and segment)."""
        ...

    async def common_members(self, a: str, b: str) -> int:
        """How many customers are members of both segments (exact)."""
        ...

    async def scan_customers(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """A page of stored customer ids (redirects included) and the next cursor (0: done)."""
        ...

    async def meta_get(self, name: str) -> bytes | None:
        """A small named value (the published rule pack, the RFM boundaries...)."""
        ...

    async def meta_set(self, name: str, value: bytes) -> None:
        """Store a small named value."""
        ...

    async def progress_add(self, name: str, count: int) -> int:
        """Add to a named progress counter; return the new total."""
        ...

    async def ping(self) -> bool:
        """True when the store answers."""
        ...

    async def recover(self) -> int:
        """Finish hand-overs that a crash interrupted; return how many (see ``redis_store``)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
