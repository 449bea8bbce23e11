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
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import orjson

from streams.events.decode import DecodeFailure, decode
from streams.events.models import AliasEvent, BaseEvent, IdentifyEvent
from streams.pipeline.context import PipelineContext
from streams.pipeline.identity import MAX_HOPS, Refused
from streams.pipeline.metrics import Metrics
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.routing import partition_for
from streams.pipeline.timekeeping import EventTime, Watermark
from streams.pipeline.working_set import WorkingSet
from streams.state.customer import CustomerState
from streams.store.base import CommitBatch

log = logging.getLogger("segmenter.pipeline")

CONTROL_HEADER = "segmenter.control"
"""A record with this header set to ``watermark`` and value ``{"until": <epoch s>}`` fires every
timer of its partition due up to ``until`` (``segmenter replay`` sends one after the last event)."""
DUE_LIMIT = 100_000
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


def control_until(record: Record) -> float | None:
    """The watermark a control record asks for, or None for an ordinary record."""
    for name, value in record.headers:
        if name == CONTROL_HEADER and value == b"watermark":
            try:
                until = orjson.loads(record.value or b"")["until"]
                return float(until)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return None
    return None


Item = BaseEvent | DecodeFailure | float
"""A decoded record: an event, a failure for the DLQ, or a control watermark."""


def _decode_all(
    ctx: PipelineContext, records: Sequence[Record]
) -> list[tuple[Record, Item, int | None]]:
    """Steps 1 and 2: decode every record and decide where each event belongs."""
    out: list[tuple[Record, Item, int | None]] = []
    for record in records:
        until = control_until(record)
        if until is not None:
            out.append((record, until, None))
            continue
        item = decode(record.value, ctx.settings.max_event_bytes)
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
    ctx: PipelineContext, customers: list[str], partitions: list[int], horizon: dict[int, float]
) -> tuple[WorkingSet, dict[int, int], list[tuple[int, str, float]]]:
    """Step 3: due timers first, then one round trip for states, offsets and clocks."""
    now = ctx.clock.now()
    reach = ctx.mode.timer_reach(now)
    bounds = {p: max(horizon.get(p, float("-inf")), reach) for p in partitions}
    due_until = {p: bound for p, bound in bounds.items() if bound > float("-inf")}
    snapshot = await ctx.store.load(customers, partitions, due_until, DUE_LIMIT)
    due = snapshot.due
    more = [cid for cid in dict.fromkeys(cid for _, cid, _ in due) if cid not in snapshot.states]
    if more:
        snapshot.states.update((await ctx.store.load(more, [])).states)
    stored = dict(snapshot.states)
    states = {cid: CustomerState.from_json(s.data) if s else None for cid, s in stored.items()}
    for _ in range(MAX_HOPS):
        targets = {
            state.merged_into
            for state in states.values()
            if state is not None
            and state.merged_into is not None
            and state.merged_into not in stored
        }
        if not targets:
            break
        found = (await ctx.store.load(sorted(targets), [])).states
        stored.update(found)
        states.update(
            (cid, CustomerState.from_json(s.data) if s else None) for cid, s in found.items()
        )
    work = WorkingSet(
        ctx=ctx,
        states=states,
        versions={cid: s.version if s else 0 for cid, s in stored.items()},
        clocks=dict(snapshot.clocks),
        loaded_clocks=dict(snapshot.clocks),
        stored_due={cid: state.timer() if state else None for cid, state in states.items()},
        loaded={
            cid: None
            if state is None or (state.merged_into is not None and not state.handing_over)
            else (frozenset(state.members), state.primary)
            for cid, state in states.items()
        },
        suppressed=dict(snapshot.suppressed),
        instant=now,
    )
    for _p, cid, when in due:
        work.schedule(cid, when)
    return work, dict(snapshot.offsets), due


async def process_batch(
    ctx: PipelineContext, records: Sequence[Record], partitions: Iterable[int] = ()
) -> CommitBatch:
    """Apply ``records`` (and the timers due on ``partitions``) and commit atomically.

    An event whose application raises (a bug, never bad input: that is a decode failure) is
    sent to the DLQ, and the batch is applied again from the store without it, so nothing
    that event half-changed (states, merges, timers, migrations) is committed. This costs a
    reload only when it happens, instead of a copy of the state before every event.
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
    quiet = _quiet(ctx, involved)
    for p, clock in quiet.items():
        horizon[p] = max(horizon.get(p, clock), clock)
    poisoned: dict[tuple[int, int], str] = {}
    while True:
        counters = ctx.metrics.snapshot()
        work, applied, _due = await _load(ctx, customers, involved, horizon)
        try:
            offsets = _apply_all(ctx, work, items, applied, poisoned)
            break
        except _Poisoned as bad:
            ctx.metrics.restore(counters)
            poisoned[bad.where] = bad.message
    for p in involved:
        work.close_settled(p, Watermark.through(quiet[p]) if p in quiet else None)
        work.fire_due(p, work.closing_watermark(p))
    ctx.quiet.observe(work.clocks, work.instant)
    commit = work.finish(offsets)
    if not commit.is_empty():
        commit.outbox_lengths = await ctx.store.commit(commit)
    ctx.metrics.batches += 1
    return commit


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
            work.clocks[p] = max(work.clocks.get(p, item), item + ctx.settings.allowed_lateness_s)
            work.close_settled(p, Watermark.through(item))
            work.fire_due(p, Watermark.through(item))
        elif isinstance(item, DecodeFailure):
            ctx.metrics.dlq += 1
            work.outbox(p, dlq_entry(ctx, record, item.kind, item.message))
        elif target is not None:
            _forward(ctx, work, record, item, target)
        elif (p, record.offset) in poisoned:
            ctx.metrics.dlq += 1
            work.outbox(p, dlq_entry(ctx, record, "processing", poisoned[(p, record.offset)]))
        else:
            _apply_one(ctx, work, record, item)
    return offsets


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


def _apply_one(ctx: PipelineContext, work: WorkingSet, record: Record, event: BaseEvent) -> None:
    """Apply one event; raise :class:`_Poisoned` when that fails (see :func:`process_batch`)."""
    ctx.metrics.events += 1
    try:
        outcome = work.apply(record.partition, event)
    except Exception as exc:
        log.exception("event %s could not be processed; sent to the DLQ", event.messageId)
        raise _Poisoned((record.partition, record.offset), repr(exc)) from exc
    if isinstance(outcome, Refused):
        ctx.metrics.dlq += 1
        work.outbox(record.partition, dlq_entry(ctx, record, outcome.kind, outcome.message))
    elif outcome is not None:
        ctx.metrics.events -= 1
        _forward(ctx, work, record, event, outcome)


__all__ = [
    "CONTROL_HEADER",
    "REROUTED_HEADER",
    "Metrics",
    "PipelineContext",
    "Record",
    "dlq_entry",
    "load_working_set",
    "process_batch",
]
