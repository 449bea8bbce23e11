"""Applying the sorted history: batches through the worker's own pipeline, each one commit.

A job reads the merged, time-ordered records, keeps those of its slots (all of them with one
job), and applies them in batches with :func:`~streams.pipeline.processor.process_batch` as an
:class:`~streams.pipeline.processor.ImportBatch`: the same per-customer logic, event clock and
Lua commit as a worker, with the run's checkpoint committed in the same call. A record already
covered by the checkpoint (an interrupted run started again) is skipped, its time still moving
the job's clocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from streams.importer.scan import Identities, split_payload
from streams.importer.sorting import Record as SortRecord
from streams.pipeline.logic import Emission
from streams.pipeline.processor import ImportBatch, PipelineContext, Record, process_batch
from streams.store.base import ConflictError

TOPIC = "segmenter.import"
"""The topic name import records carry (never produced: it only tells them apart)."""
CONFLICT_RETRIES = 20
"""Attempts of one import commit whose customers a live worker keeps changing."""

log = logging.getLogger("segmenter.import")
T = TypeVar("T")


async def until_committed(step: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``step`` (which reads its customers from the store and commits) again after each
    :class:`ConflictError`, waiting a little longer each time: a live worker firing the
    imported customers' timers moves their versions under any import commit (a batch, the
    settling, an announced page). Raises ConflictError after :data:`CONFLICT_RETRIES` attempts."""
    for attempt in range(CONFLICT_RETRIES):
        try:
            return await step()
        except ConflictError as exc:
            log.debug("%s: %r changed meanwhile; reading it again", what, exc)
            await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
    raise ConflictError(f"{what} kept conflicting with another writer")


@dataclass
class Job:
    """One process's share of a run: slots ``job`` modulo ``jobs``."""

    run: str
    job: int
    jobs: int
    identities: Identities
    clocks: dict[int, float]
    """The partitions' clocks before the run (the job's clocks start there)."""
    emission: Emission
    batch: int
    keep_before: bool = True
    applied: int = 0
    skipped: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(serial, message) of the records the pipeline refused."""

    def owns(self, customer_id: str) -> bool:
        """Whether this job imports the customer (its events and its timers)."""
        return self.identities.slot(customer_id) % self.jobs == self.job


@dataclass
class _Pending:
    records: list[Record] = field(default_factory=list)
    serials: dict[int, int] = field(default_factory=dict)
    progress: dict[int, dict[str, int]] = field(default_factory=dict)


def _own_records(
    ctx: PipelineContext,
    job: Job,
    merged: Iterable[SortRecord],
    checkpoint: dict[str, int],
    clocks: dict[int, float],
) -> Iterator[tuple[Record, int, str]]:
    """The job's records not applied yet, as pipeline records (offset = position in the run),
    with their serial and checkpoint field."""
    slot_of = job.identities.slot
    home = ctx.home_partition
    jobs, mine = job.jobs, job.job
    for position, (at, serial, payload) in enumerate(merged):
        cid, line = split_payload(payload)
        slot = slot_of(cid)
        if slot % jobs != mine:
            continue
        partition = home(cid)
        name = f"{partition}:{slot}"
        if position <= checkpoint.get(name, -1):
            job.skipped += 1
            instant = at / 1000
            if instant > clocks.get(partition, instant - 1):
                clocks[partition] = instant
            continue
        yield Record(TOPIC, partition, position, None, line), serial, name


async def apply_job(
    ctx: PipelineContext,
    job: Job,
    merged: Iterable[SortRecord],
    checkpoint: dict[str, int],
    progress: Callable[[int], None],
) -> dict[int, float]:
    """Apply the job's records in batches; returns the job's clocks at the end."""
    clocks = dict(job.clocks)
    pending = _Pending()
    for record, serial, name in _own_records(ctx, job, merged, checkpoint, clocks):
        pending.records.append(record)
        pending.serials[record.offset] = serial
        pending.progress.setdefault(record.partition, {})[name] = record.offset
        if len(pending.records) >= job.batch:
            await _commit(ctx, job, pending, clocks)
            progress(len(pending.records))
            pending = _Pending()
    if pending.records:
        await _commit(ctx, job, pending, clocks)
        progress(len(pending.records))
    return clocks


async def _commit(
    ctx: PipelineContext, job: Job, pending: _Pending, clocks: dict[int, float]
) -> None:
    """One batch, one atomic commit (applied again from the store after a conflict)."""
    batch = ImportBatch(
        run=job.run,
        clocks=clocks,
        progress=pending.progress,
        emission=job.emission,
        owns=job.owns if job.jobs > 1 else None,
        keep_before=job.keep_before,
    )
    await until_committed(
        lambda: process_batch(ctx, pending.records, run=batch),
        f"a batch of {len(pending.records)} records",
    )
    job.applied += len(pending.records) - len(batch.rejected)
    job.rejected.extend(
        (pending.serials[record.offset], message) for record, message in batch.rejected
    )
