"""The batch processor: Kafka records in, one atomic store commit out.

Named steps, each a plain function of explicit inputs:

1. ``decode``   raw bytes -> event, or a failure (errors are data: failures go to the DLQ);
2. ``route``    an event read from the wrong partition for its customer is re-sent to the right one;
3. ``load``     customer states, applied offsets, event-time clocks, and the timers now due;
4. ``apply``    per record, in partition order: skip redeliveries and duplicates, fire due timers,
                fold the event into the state, turn membership changes into migrations
                (:class:`~streams.pipeline.working_set.WorkingSet`);
5. ``commit``   one Lua call: states, memberships, offsets, clocks, timers and the outbox.

Sending the outbox to Kafka is the worker's job (:mod:`streams.pipeline.sender`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from streams.events.decode import DecodeFailure, decode
from streams.events.models import AliasEvent, BaseEvent, IdentifyEvent, iso
from streams.pipeline.context import PipelineContext
from streams.pipeline.control import CONTROL_HEADER, beyond_clock, is_control, read_control
from streams.pipeline.identity import MAX_HOPS, Refused
from streams.pipeline.loading import commit_work, read_states
from streams.pipeline.logic import Emission
from streams.pipeline.metrics import Metrics
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.routing import partition_for
from streams.pipeline.timekeeping import EventTime, Watermark
from streams.pipeline.working_set import CustomerFailed, WorkingSet
from streams.store.base import CommitBatch

log = logging.getLogger("segmenter.pipeline")

REROUTED_HEADER = "segmenter.rerouted-from"
"""Set on an event re-sent to the partition that owns its (merged) profile; it stays there."""


class Record(NamedTuple):
    """One Kafka message as the processor sees it (a named tuple: made for every input record,
    it costs half a frozen dataclass)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def dlq_entry(ctx: PipelineContext, record: Record, kind: str, message: str) -> OutboxEntry:
    """The record, unchanged, for the DLQ, with headers naming the error and where it came from."""
    headers = (
        *record.headers,
        ("segmenter.error.kind", kind.encode()),
        ("segmenter.error.message", message.encode("utf-8", "replace")[:1000]),
        ("segmenter.source.topic", record.topic.encode()),
        ("segmenter.source.partition", str(record.partition).encode()),
        ("segmenter.source.offset", str(record.offset).encode()),
    )
    return OutboxEntry(ctx.settings.dlq_topic, record.key, record.value, headers)


Item = BaseEvent | DecodeFailure | float
"""A decoded record: an event, a failure for the DLQ, or a control watermark."""


@dataclass
class ImportBatch:
    """A batch of an import run rather than of the input topic (see :mod:`streams.importer`).

    Its records are not Kafka's: their offsets are positions in the run, their partitions the
    customers' home partitions. The batch commits the run's checkpoint instead of input
    offsets, keeps the run's own event-time clocks, applies an event whose profile lives in
    another partition at once (no re-routing through Kafka), and reports records it cannot
    apply instead of sending them to the DLQ.
    """

    run: str
    clocks: dict[int, float]
    """The run's event-time clock per partition (adopted back after each commit)."""
    progress: dict[int, dict[str, int]] = field(default_factory=dict)
    """The checkpoint to commit with the batch (see ``CommitBatch.progress``)."""
    emission: Emission = "record"
    owns: Callable[[str], bool] | None = None
    """Whose timers this process fires (None: everyone's); another process imports the rest."""
    until: float | None = None
    """Fire every timer and close every open instant through this instant (the end of the
    history), as the control record of ``segmenter replay`` does."""
    keep_before: bool = True
    """Record each changed customer's memberships before the run (to announce at the end)."""
    rejected: list[tuple[Record, str]] = field(default_factory=list)
    """Filled by the batch: records not applied, and why."""


def _decode_all(
    ctx: PipelineContext, records: Sequence[Record]
) -> list[tuple[Record, Item, int | None]]:
    """Steps 1 and 2: decode every record and decide where each event belongs."""
    out: list[tuple[Record, Item, int | None]] = []
    settings = ctx.settings
    secret = settings.control_secret.get_secret_value() if settings.control_secret else None
    latest = ctx.clock.now() + settings.max_future_s if settings.clock == "processing" else None
    for record in records:
        if record.headers and is_control(record.headers):
            out.append((record, read_control(record.value, record.headers, secret), None))
            continue
        item: Item = decode(record.value, settings.max_event_bytes)
        if latest is not None and isinstance(item, BaseEvent) and item.ts > latest:
            item = DecodeFailure(
                "schema",
                f"timestamp: expected at most SEGMENTER_MAX_FUTURE_S ({settings.max_future_s:g}s)"
                f" after the worker's clock, found {iso(item.ts)}",
            )
        target = None
        if (
            isinstance(item, BaseEvent)
            and ctx.input_partitions > 1
            and record.topic == ctx.settings.input_topic
            and not (record.headers and _rerouted(record.headers))
        ):
            right = partition_for(item.customer_id.encode(), ctx.input_partitions)
            target = right if right != record.partition else None
        out.append((record, item, target))
    return out


def _rerouted(headers: tuple[tuple[str, bytes], ...]) -> bool:
    return any(name == REROUTED_HEADER for name, _ in headers)


def _due_horizon(
    ctx: PipelineContext, items: Iterable[tuple[Record, Item, int | None]]
) -> dict[int, float]:
    """Per partition, the latest instant a timer can become due during this batch."""
    horizon: dict[int, float] = {}
    mode = ctx.mode
    for record, item, _target in items:
        if isinstance(item, float):
            reach = item
        elif isinstance(item, BaseEvent):
            reach = mode.due_reach(item.ts)
        else:
            continue
        horizon[record.partition] = max(reach, horizon.get(record.partition, reach))
    return horizon


async def load_working_set(
    ctx: PipelineContext,
    customers: list[str],
    partitions: list[int],
    horizon: dict[int, float] | None = None,
) -> WorkingSet:
    """Load a working set for ``customers`` (and the timers due on ``partitions``)."""
    work, _offsets, _due = await _load(ctx, customers, partitions, horizon or {})
    return work


async def _load(
    ctx: PipelineContext,
    customers: list[str],
    partitions: list[int],
    horizon: dict[int, float],
    run: ImportBatch | None = None,
    quarantined: frozenset[str] = frozenset(),
) -> tuple[WorkingSet, dict[int, int], list[tuple[int, str, float]]]:
    """Step 3: due timers first, then one round trip for states, offsets and clocks
    (:func:`~streams.pipeline.loading.read_states`; an import run reads no cache)."""
    now = ctx.clock.now()
    reach = ctx.mode.timer_reach(now)
    bounds = {p: max(horizon.get(p, float("-inf")), reach) for p in partitions}
    due_until = {p: bound for p, bound in bounds.items() if bound > float("-inf")}
    cache = ctx.state_cache if run is None else None
    read = await read_states(ctx, customers, partitions, due_until, quarantined, cache)
    snapshot = read.snapshot
    due = snapshot.due
    states = read.states
    work = WorkingSet(
        ctx=ctx,
        states=states,
        versions=read.versions,
        clocks=dict(snapshot.clocks),
        loaded_clocks=dict(snapshot.clocks),
        stored_due={cid: state.timer() if state else None for cid, state in states.items()},
        loaded={
            cid: None
            if state is None or (state.merged_into is not None and not state.handing_over)
            else (frozenset(state.members), state.primary)
            for cid, state in states.items()
        },
        suppressed=read.suppressed,
        instant=now,
        quarantined=quarantined,
    )
    if run is not None:
        work.clocks = dict(run.clocks)
        work.emission = run.emission
        owns = run.owns
        due = [item for item in due if owns is None or owns(item[1])]
    for _p, cid, when in due:
        work.schedule(cid, when)
    return work, dict(snapshot.offsets) if run is None else {}, due


async def process_batch(
    ctx: PipelineContext,
    records: Sequence[Record],
    partitions: Iterable[int] = (),
    run: ImportBatch | None = None,
) -> CommitBatch:
    """Apply ``records`` (and the timers due on ``partitions``) and commit atomically.

    An event whose application raises (a bug, never bad input: that is a decode failure) is
    sent to the DLQ, and the batch is applied again from the store without it, so nothing
    that event half-changed (states, merges, timers, migrations) is committed. This costs a
    reload only when it happens, instead of a copy of the state before every event. A failure
    that belongs to a customer rather than to an event (its state cannot be read, a timer or
    an open instant of it fails, its state cannot be encoded) quarantines the customer: the
    batch is applied again without it, its events of the batch go to the DLQ, its timer is
    dropped (it fires again with its next event), and the partition goes on.

    ``run``: the records are an import run's (see :class:`ImportBatch`).
    """
    items = _decode_all(ctx, records)
    customers = list(
        dict.fromkeys(
            cid
            for _, item, target in items
            if isinstance(item, BaseEvent) and target is None
            for cid in _ids_of(item)
        )
    )
    involved = sorted({r.partition for r in records} | set(partitions))
    horizon = _due_horizon(ctx, items)
    settle = _settle_bounds(ctx, involved, run)
    for p, clock in settle.items():
        horizon[p] = max(horizon.get(p, clock), clock)
    poisoned: dict[tuple[int, int], str] = {}
    quarantined: dict[str, str] = {}
    while True:
        counters = ctx.metrics.snapshot()
        try:
            work, applied, _due = await _load(
                ctx, customers, involved, horizon, run, frozenset(quarantined)
            )
            if run is not None:
                run.rejected = []
            offsets = _apply_all(ctx, work, items, applied, poisoned, run)
            for p in involved:
                work.close_settled(p, Watermark.through(settle[p]) if p in settle else None)
                work.fire_due(p, _closing(work, p, run))
            commit = work.finish(offsets)
            break
        except _Poisoned as bad:
            ctx.metrics.restore(counters)
            poisoned[bad.where] = bad.message
        except CustomerFailed as bad:
            ctx.metrics.restore(counters)
            log.error("%s; its events of this batch go to the DLQ", bad)
            quarantined[bad.customer] = bad.message
    _quarantine(ctx, commit, quarantined)
    ctx.quiet.observe(work.clocks, work.instant)
    if run is not None:
        _run_commit(work, commit, run)
    await commit_work(ctx, work, commit)
    if run is not None:
        run.clocks.update(work.clocks)
    ctx.metrics.batches += 1
    return commit


def _quarantine(ctx: PipelineContext, commit: CommitBatch, quarantined: dict[str, str]) -> None:
    """Drop the timers of the customers the batch left alone, so that they do not fail every
    batch (an event of theirs brings them up to date, or goes to the DLQ in its turn)."""
    for cid in quarantined:
        ctx.metrics.quarantined += 1
        commit.due.setdefault(ctx.home_partition(cid), {})[cid] = None


def _settle_bounds(
    ctx: PipelineContext, involved: list[int], run: ImportBatch | None
) -> dict[int, float]:
    """Partitions whose instants are all over through a bound: an import run's end, or (event
    time, live) the partitions quiet for ``SEGMENTER_IDLE_SETTLE_S``."""
    if run is None:
        return _quiet(ctx, involved)
    if run.until is None:
        return {}
    return dict.fromkeys(involved, run.until)


def _closing(work: WorkingSet, partition: int, run: ImportBatch | None) -> Watermark:
    """Where the batch leaves the partition's watermark: its closing watermark, or through an
    import run's end when that is later."""
    closing = work.closing_watermark(partition)
    if run is None or run.until is None:
        return closing
    bound = Watermark.through(run.until)
    return closing if closing.before > bound.before else bound


def _run_commit(work: WorkingSet, commit: CommitBatch, run: ImportBatch) -> None:
    """An import run's part of the commit: its checkpoint instead of input offsets, and the
    memberships before the run of each customer it changed (kept from the first change on)."""
    commit.offsets = {}
    commit.run = run.run
    commit.progress = run.progress
    if run.keep_before:
        for state in commit.states:
            loaded = work.loaded.get(state.customer_id)
            members, primary = loaded if loaded is not None else (frozenset(), None)
            commit.before[state.customer_id] = orjson.dumps({"m": sorted(members), "p": primary})


def _quiet(ctx: PipelineContext, involved: list[int]) -> dict[int, float]:
    """Event time: the partitions quiet for ``SEGMENTER_IDLE_SETTLE_S``, with their clocks."""
    after = ctx.settings.idle_settle_s
    if after <= 0 or not isinstance(ctx.mode, EventTime):
        return {}
    return ctx.quiet.quiet(involved, ctx.clock.now(), after)


class _Poisoned(Exception):
    """Applying the record at ``where`` (partition, offset) raised: ``message`` says what."""

    def __init__(self, where: tuple[int, int], message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _apply_all(
    ctx: PipelineContext,
    work: WorkingSet,
    items: Sequence[tuple[Record, Item, int | None]],
    applied: dict[int, int],
    poisoned: dict[tuple[int, int], str],
    run: ImportBatch | None = None,
) -> dict[int, int]:
    """Step 4 for every record, in order; returns the highest offset seen per partition."""
    offsets: dict[int, int] = {}
    for record, item, target in items:
        p = record.partition
        if record.offset <= applied.get(p, -1):
            ctx.metrics.redelivered += 1
            continue
        offsets[p] = max(record.offset, offsets.get(p, -1))
        if isinstance(item, float):
            _settle_until(ctx, work, record, item, run)
        elif isinstance(item, DecodeFailure):
            _dead_letter(ctx, work, record, item.kind, item.message, run)
        elif target is not None:
            _forward(ctx, work, record, item, target)
        elif (p, record.offset) in poisoned:
            _dead_letter(ctx, work, record, "processing", poisoned[(p, record.offset)], run)
        else:
            _apply_one(ctx, work, record, item, run)
    return offsets


def _settle_until(
    ctx: PipelineContext, work: WorkingSet, record: Record, until: float, run: ImportBatch | None
) -> None:
    """A control record: everything of the partition up to ``until`` is over (publish the open
    instants, fire the timers), unless ``until`` is past the partition's clock (to the DLQ)."""
    p = record.partition
    clock = work.clocks.get(p) if isinstance(ctx.mode, EventTime) else work.instant
    refused = beyond_clock(until, clock)
    if refused is not None:
        _dead_letter(ctx, work, record, refused.kind, refused.message, run)
        return
    work.clocks[p] = max(work.clocks.get(p, until), until + ctx.settings.allowed_lateness_s)
    work.close_settled(p, Watermark.through(until))
    work.fire_due(p, Watermark.through(until))


def _dead_letter(
    ctx: PipelineContext,
    work: WorkingSet,
    record: Record,
    kind: str,
    message: str,
    run: ImportBatch | None,
) -> None:
    """A record that cannot be applied: to the DLQ, or (an import) to the run's rejects."""
    if run is not None:
        run.rejected.append((record, f"{kind}: {message}"))
        return
    ctx.metrics.dlq += 1
    work.outbox(record.partition, dlq_entry(ctx, record, kind, message))


def _ids_of(event: BaseEvent) -> tuple[str, ...]:
    """Every customer id an event touches (two for a merge)."""
    if isinstance(event, AliasEvent):
        return (event.customer_id, event.previousId)
    if isinstance(event, IdentifyEvent) and event.userId and event.anonymousId:
        return (event.userId, event.anonymousId)
    return (event.customer_id,)


def _forward(
    ctx: PipelineContext, work: WorkingSet, record: Record, event: BaseEvent, target: int
) -> None:
    """Re-send an event, unchanged, to the partition that owns its customer."""
    ctx.metrics.forwarded += 1
    headers = (*record.headers, (REROUTED_HEADER, str(record.partition).encode()))
    key = event.customer_id.encode()
    work.outbox(record.partition, OutboxEntry(record.topic, key, record.value, headers, target))


def _apply_one(
    ctx: PipelineContext,
    work: WorkingSet,
    record: Record,
    event: BaseEvent,
    run: ImportBatch | None = None,
) -> None:
    """Apply one event; raise :class:`_Poisoned` when that fails (see :func:`process_batch`).

    An import applies an event whose profile lives in another partition there at once."""
    ctx.metrics.events += 1
    partition = record.partition
    try:
        outcome = work.apply(partition, event)
        hops = 0
        while run is not None and isinstance(outcome, int) and hops < MAX_HOPS:
            partition, hops = outcome, hops + 1
            outcome = work.apply(partition, event)
    except CustomerFailed:
        raise
    except Exception as exc:
        log.exception("event %s could not be processed; sent to the DLQ", event.messageId)
        raise _Poisoned((record.partition, record.offset), repr(exc)) from exc
    if isinstance(outcome, Refused):
        _dead_letter(ctx, work, record, outcome.kind, outcome.message, run)
    elif outcome is not None:
        ctx.metrics.events -= 1
        _forward(ctx, work, record, event, outcome)


__all__ = [
    "CONTROL_HEADER",
    "REROUTED_HEADER",
    "ImportBatch",
    "Metrics",
    "PipelineContext",
    "Record",
    "dlq_entry",
    "load_working_set",
    "process_batch",
]
