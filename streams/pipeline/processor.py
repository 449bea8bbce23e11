"""The batch processor: Kafka records in, one atomic store commit out.

Named steps, each a plain function of explicit inputs:

1. ``decode``   raw bytes -> event, or a failure (errors are data: failures go to the DLQ);
2. ``route``    an event read from the wrong partition for its customer is re-sent to the right one;
3. ``load``     one store round trip: customer states, applied offsets, event-time clocks;
4. ``apply``    per event, in order: skip redeliveries and duplicates, fold the event into the
                state, evaluate the rules, turn membership changes into migrations;
5. ``commit``   one Lua call: states, memberships, offsets, clocks and the outbox, atomically.

Sending the outbox to Kafka is the worker's job (:mod:`streams.pipeline.worker`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from streams.engine import RuleSet
from streams.engine.facts import SeriesSpec
from streams.events.decode import DecodeFailure, decode
from streams.events.models import BaseEvent, EraseEvent, event_name
from streams.pipeline.migrations import Migration, Trigger, TriggerKind
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.state.apply import apply_event, message_digest, prune, remember
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from streams.store.base import CommitBatch, MembershipChange, StateWrite, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message as the processor sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class Metrics:
    """Counters the worker exposes on ``/metrics``."""

    events: int = 0
    batches: int = 0
    dlq: int = 0
    duplicates: int = 0
    redelivered: int = 0
    forwarded: int = 0
    migrations: int = 0
    late: int = 0
    migrations_by: dict[tuple[str, str, str], int] = field(default_factory=dict)
    eval_seconds: float = 0.0


@dataclass(frozen=True)
class PipelineContext:
    """Everything a batch needs, passed explicitly."""

    settings: Settings
    rules: RuleSet
    store: Store
    input_partitions: int
    specs_by_event: dict[str, list[SeriesSpec]]
    specs_by_id: dict[str, SeriesSpec]
    metrics: Metrics

    @classmethod
    def create(
        cls, settings: Settings, rules: RuleSet, store: Store, input_partitions: int
    ) -> PipelineContext:
        """Index the rule set's series for the hot path."""
        by_event: dict[str, list[SeriesSpec]] = {}
        for spec in rules.series:
            by_event.setdefault(spec.event, []).append(spec)
        return cls(
            settings=settings,
            rules=rules,
            store=store,
            input_partitions=input_partitions,
            specs_by_event=by_event,
            specs_by_id={spec.id: spec for spec in rules.series},
            metrics=Metrics(),
        )


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


@dataclass
class _Batch:
    """The mutable working set of one batch."""

    ctx: PipelineContext
    states: dict[str, CustomerState | None]
    versions: dict[str, int]
    offsets: dict[int, int]
    clocks: dict[int, float]
    commit: CommitBatch = field(default_factory=CommitBatch)
    dirty: set[str] = field(default_factory=set)

    def outbox(self, partition: int, entry: OutboxEntry) -> None:
        self.commit.outbox.setdefault(partition, []).append(entry.encode())

    def now(self, partition: int, event_ts: float) -> float:
        """The evaluation clock for an event: event time, or the wall clock in processing mode."""
        clock = max(self.clocks.get(partition, event_ts), event_ts)
        self.clocks[partition] = clock
        if self.ctx.settings.clock == "event":
            return clock
        return max(time.time(), event_ts)


def _migrate(
    batch: _Batch,
    partition: int,
    state: CustomerState,
    new_members: frozenset[str],
    facts: StateFacts,
    trigger: Trigger,
    when: float,
    reason_override: str | None = None,
) -> None:
    """Record the migrations from ``state.members`` to ``new_members`` (state and outbox)."""
    ctx = batch.ctx
    old = frozenset(state.members)
    if old == new_members:
        return
    for move in ctx.rules.transitions(old, new_members, facts):
        state.sequence += 1
        migration = Migration(
            customer_id=state.customer_id,
            segment=move.segment,
            direction=move.direction,
            family=move.family,
            from_segment=move.from_segment,
            to_segment=move.to_segment,
            trigger=trigger,
            reason_rule=reason_override or move.reason.rule,
            reason_values={} if reason_override else dict(move.reason.values),
            rule_version=ctx.rules.version,
            sequence=state.sequence,
            time=when,
        )
        batch.outbox(partition, migration.to_outbox(ctx.settings.migrations_topic, ctx.settings.ce_source))
        if move.direction == "entered":
            state.members[move.segment] = when
        else:
            state.members.pop(move.segment, None)
        batch.commit.memberships.append(
            MembershipChange(move.segment, state.customer_id, 1 if move.direction == "entered" else -1)
        )
        ctx.metrics.migrations += 1
        label = (move.segment, move.direction, trigger.kind)
        ctx.metrics.migrations_by[label] = ctx.metrics.migrations_by.get(label, 0) + 1


def _trigger_for(event: BaseEvent) -> Trigger:
    kind: TriggerKind = "consent" if event.type == "consent" else "event"
    return Trigger(kind, event.messageId, event_name(event) or event.type)


def _apply_one(batch: _Batch, record: Record, event: BaseEvent) -> None:
    """Fold one event into its customer's state and record the migrations it causes."""
    ctx = batch.ctx
    cid = event.customer_id
    state = batch.states.get(cid)
    digest = message_digest(event.messageId)
    if state is not None and digest in state.recent:
        ctx.metrics.duplicates += 1
        return
    now = batch.now(record.partition, event.ts)
    if isinstance(event, EraseEvent):
        if state is not None:
            facts = StateFacts(state, now, ctx.specs_by_id)
            _migrate(batch, record.partition, state, frozenset(), facts,
                     Trigger("erasure", event.messageId, "erase"), event.ts, "customer erased")
            batch.states[cid] = None
            batch.dirty.add(cid)
        return
    if state is None:
        state = CustomerState(customer_id=cid)
        batch.states[cid] = state
    if now - event.ts > ctx.settings.allowed_lateness_s:
        ctx.metrics.late += 1
    apply_event(state, event, ctx.specs_by_event, now, ctx.rules.event_names)
    remember(state, digest, ctx.settings.dedupe_depth)
    prune(state, ctx.rules.series, now)
    facts = StateFacts(state, now, ctx.specs_by_id)
    started = time.perf_counter()
    evaluation = ctx.rules.evaluate(facts)
    ctx.metrics.eval_seconds += time.perf_counter() - started
    _migrate(batch, record.partition, state, evaluation.members, facts, _trigger_for(event), event.ts)
    state.primary = evaluation.primary
    batch.dirty.add(cid)


def _route(ctx: PipelineContext, record: Record, event: BaseEvent) -> int | None:
    """The partition the event belongs on, when it is not the one it was read from."""
    if ctx.input_partitions <= 1 or record.topic != ctx.settings.input_topic:
        return None
    target = partition_for(event.customer_id.encode(), ctx.input_partitions)
    return None if target == record.partition else target


async def process_batch(ctx: PipelineContext, records: Sequence[Record]) -> CommitBatch:
    """Apply a batch of records and commit the result atomically; return what was committed."""
    max_bytes = ctx.settings.max_event_bytes
    decoded: list[tuple[Record, BaseEvent | DecodeFailure, int | None]] = []
    customers: dict[str, None] = {}
    for record in records:
        item = decode(record.value, max_bytes)
        target = _route(ctx, record, item) if isinstance(item, BaseEvent) else None
        if isinstance(item, BaseEvent) and target is None:
            customers[item.customer_id] = None
        decoded.append((record, item, target))

    partitions = sorted({record.partition for record in records})
    snapshot = await ctx.store.load(list(customers), partitions)
    batch = _Batch(
        ctx=ctx,
        states={
            cid: CustomerState.from_json(stored.data) if stored else None
            for cid, stored in snapshot.states.items()
        },
        versions={cid: stored.version if stored else 0 for cid, stored in snapshot.states.items()},
        offsets=dict(snapshot.offsets),
        clocks=dict(snapshot.clocks),
    )
    applied = dict(snapshot.offsets)
    for record, item, target in decoded:
        if record.offset <= applied.get(record.partition, -1):
            ctx.metrics.redelivered += 1
            continue
        batch.commit.offsets[record.partition] = max(
            record.offset, batch.commit.offsets.get(record.partition, -1)
        )
        if isinstance(item, DecodeFailure):
            ctx.metrics.dlq += 1
            batch.outbox(record.partition, dlq_entry(ctx, record, item.kind, item.message))
            continue
        if target is not None:
            ctx.metrics.forwarded += 1
            forwarded = (*record.headers, ("segmenter.rerouted-from", str(record.partition).encode()))
            entry = OutboxEntry(record.topic, item.customer_id.encode(), record.value, forwarded, target)
            batch.outbox(record.partition, entry)
            continue
        ctx.metrics.events += 1
        cid = item.customer_id
        state = batch.states.get(cid)
        backup = state.to_json() if state is not None else None
        try:
            _apply_one(batch, record, item)
        except Exception as exc:
            log.exception("event %s could not be processed; sent to the DLQ", item.messageId)
            batch.states[cid] = CustomerState.from_json(backup) if backup is not None else None
            ctx.metrics.dlq += 1
            batch.outbox(record.partition, dlq_entry(ctx, record, "processing", repr(exc)))

    for cid in sorted(batch.dirty):
        state = batch.states.get(cid)
        batch.commit.states.append(
            StateWrite(cid, batch.versions.get(cid, 0), state.to_json() if state is not None else None)
        )
    batch.commit.clocks = {p: c for p, c in batch.clocks.items() if p in batch.commit.offsets}
    await ctx.store.commit(batch.commit)
    ctx.metrics.batches += 1
    return batch.commit
