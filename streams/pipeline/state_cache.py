"""The worker's decoded customer states between batches (a write-through cache).

Loading a batch's customers from Redis and decoding their JSON is most of what a batch costs
when customers come back a few times over months (a shop's history): each batch reads states
that this worker itself wrote a few batches before. :class:`StateCache` keeps those states,
decoded, with the version they were written at:

* Redis stays the system of record. Every batch still writes its changed states, in the same
  atomic commit as before; the cache only spares the read and the decode.
* An entry is *taken* out of the cache when a batch loads it, and put back only once that
  batch is committed, with the version the commit gave it (the expected version + 1). A batch
  that fails (an error, a poisoned event applied again, a version conflict) therefore never
  leaves a half-changed state behind: what it took is gone, and the next load reads Redis.
* Only what a batch wrote is kept, exactly as written: a live profile (no redirect, not
  handing over) written with a version check. A state the batch read but did not write may
  have been changed in memory without being stored (an evaluation that changed nothing), so it
  is not put back.
* Another writer (another worker after a rebalance, a hand-over between partitions) changes
  the stored version; a batch that used a stale entry then fails its version check and is
  applied again from Redis (:class:`~streams.store.base.ConflictError`), so a stale entry can
  cost a retry, never a wrong write.
* Bounded: at most ``capacity`` customers, the least recently used dropped first; entries of
  partitions this worker no longer owns are dropped when the assignment changes.

Erasures are remembered with the entry (a customer erased and created again keeps its erasure
time, so late events from before it are still dropped).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.state.customer import CustomerState


@dataclass(frozen=True, slots=True)
class CachedState:
    """A state as this worker last committed it (what a committed batch wrote, and what the
    cache holds)."""

    customer_id: str
    version: int
    """The stored version (what the next write of it expects)."""
    state: CustomerState
    erased_at: float | None
    """When the customer was erased before (its suppression record), if ever."""


class StateCache:
    """Decoded states of the customers this worker wrote, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a state cache holds at least one customer")
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, customer_ids: Iterable[str]) -> dict[str, CachedState]:
        """Remove and return the entries of ``customer_ids`` that are held (the caller reads
        the others from the store)."""
        entries = self._entries
        found: dict[str, CachedState] = {}
        for cid in customer_ids:
            entry = entries.pop(cid, None)
            if entry is not None:
                found[cid] = entry
        return found

    def keep(self, written: Iterable[CachedState]) -> None:
        """Hold what a committed batch wrote (most recently used last)."""
        entries = self._entries
        for item in written:
            entries.pop(item.customer_id, None)
            entries[item.customer_id] = item
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def retain(self, owned: Callable[[str], bool]) -> int:
        """Drop the entries of customers not ``owned`` (after a rebalance); the count dropped."""
        gone = [cid for cid in self._entries if not owned(cid)]
        for cid in gone:
            del self._entries[cid]
        return len(gone)

    def forget(self) -> None:
        """Drop every entry (what an error interrupted is read again from the store)."""
        self._entries.clear()
