"""The worker's input behind a seam: what the batch loop needs from a Kafka consumer.

The batch loop (:meth:`streams.pipeline.runtime.Runtime.run_batches`) takes a batch, applies it
and sends its outbox, then acknowledges it; the periodic duties ask which input partitions the
worker holds. That is all it knows of the consumer, so a consumer library is one adapter
module: :mod:`streams.pipeline.faust_consumer` (faust-streaming, with every use of its private
API) today; another library replaces that one file. The unit tests drive the loop with an
in-memory consumer (tests/unit/test_runtime.py).

What an adapter must keep, whatever the library:

* **Group membership.** Partitions are assigned and revoked by the consumer group; a record is
  only ever taken from a partition the worker holds.
* **Offsets follow acknowledgements.** Only acknowledged records are committed. Offsets are a
  hint for where to resume: the store records the applied offset with each commit, so a record
  read again (after a crash, or by a partition's next owner) is skipped, never applied twice.
* **One batch in flight.** A rebalance that can wait for the batch in flight (faust's
  ``wait_empty``) lets it finish and be acknowledged first; the loop acknowledges a batch only
  for the partitions the worker still holds when it is done, so a partition revoked meanwhile
  is read again by its next owner from its last committed offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from streams.pipeline.processor import Record


class Consumer(Protocol):
    """The input topic's records for the batch loop, and the partitions this worker holds."""

    def assignment(self) -> frozenset[int]:
        """The input topic's partitions this worker holds now."""
        ...

    async def take(self, max_records: int, within: float) -> list[Record]:
        """The next batch: wait for a record, then take what is there, up to ``max_records``
        (with ``within`` > 0, wait that long after the first record for more). An empty batch
        means the input is closed: the loop commits and returns."""
        ...

    def ack(self, records: Sequence[Record]) -> None:
        """``records`` (of the last batch taken) are applied and their outbox sent: their
        offsets may be committed."""
        ...

    async def commit(self) -> None:
        """Commit the acknowledged offsets now (a consumer may also commit on its own
        schedule: faust commits every second and before a rebalance hands partitions over)."""
        ...


__all__ = ["Consumer"]
