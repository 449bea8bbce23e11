"""The working set of one batch: loaded states, clocks, timers, and what the batch will commit.

Every change to a customer goes through here, in the partition's order:

* ``fire_due``   timers whose due time the clock passed, earliest first (``trigger.kind = time``,
                 ``ce_time`` = the due time, evaluated as of the due time);
* ``apply``      one event (``trigger.kind = event`` or ``consent``; ``erase`` exits everything);
* ``migrate``    membership before vs after, as migrations into the outbox and membership changes.

After each change the customer's next due time is recomputed from the rules (the instant its
outcome can next flip with no new event) and scheduled in the partition's timer set.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streams.events.models import BaseEvent, EraseEvent, event_name
from streams.pipeline.migrations import Migration, Trigger, TriggerKind
from streams.pipeline.outbox import OutboxEntry
from streams.state.apply import apply_event, message_digest, prune, remember
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from streams.store.base import CommitBatch, MembershipChange, StateWrite

if TYPE_CHECKING:
    from streams.pipeline.processor import PipelineContext


@dataclass
class WorkingSet:
    """Mutable state of one batch (never shared between batches)."""

    ctx: PipelineContext
    states: dict[str, CustomerState | None]
    versions: dict[str, int]
    clocks: dict[int, float]
    home: dict[str, int] = field(default_factory=dict)
    """Customer -> the input partition whose timer set holds its timer."""
    commit: CommitBatch = field(default_factory=CommitBatch)
    dirty: set[str] = field(default_factory=set)
    heap: list[tuple[float, str]] = field(default_factory=list)
    stored_due: dict[str, float | None] = field(default_factory=dict)

    def outbox(self, partition: int, entry: OutboxEntry) -> None:
        """Queue a message to send once the batch is committed."""
        self.commit.outbox.setdefault(partition, []).append(entry.encode())

    def advance(self, partition: int, event_ts: float) -> float:
        """Move the partition's event-time clock; return the evaluation instant for the event."""
        clock = max(self.clocks.get(partition, event_ts), event_ts)
        self.clocks[partition] = clock
        if self.ctx.settings.clock == "event":
            return clock
        return max(time.time(), event_ts)

    def watermark(self, partition: int) -> float:
        """Timers up to this instant are due: event time minus lateness, or the wall clock."""
        if self.ctx.settings.clock == "event":
            clock = self.clocks.get(partition)
            return float("-inf") if clock is None else clock - self.ctx.settings.allowed_lateness_s
        return time.time()

    def schedule(self, customer_id: str, due: float) -> None:
        """Remember a loaded timer (from the store) for firing in this batch."""
        state = self.states.get(customer_id)
        if state is not None and state.due == due:
            heapq.heappush(self.heap, (due, customer_id))

    def fire_due(self, partition: int, until: float) -> None:
        """Fire every loaded timer due at or before ``until``, earliest first (ties by id)."""
        while self.heap and self.heap[0][0] <= until:
            due, cid = heapq.heappop(self.heap)
            state = self.states.get(cid)
            if state is None or state.due != due:
                continue
            self._fire(partition, state, due)

    def fire_customer(self, partition: int, state: CustomerState, until: float) -> None:
        """Fire one customer's own timers due at or before ``until`` (per-customer time order)."""
        while state.due is not None and state.due <= until:
            self._fire(partition, state, state.due)

    def _fire(self, partition: int, state: CustomerState, due: float) -> None:
        ctx = self.ctx
        ctx.metrics.timers_fired += 1
        lateness = time.time() - due
        if ctx.settings.clock == "processing" and lateness > ctx.metrics.timer_lateness_max:
            ctx.metrics.timer_lateness_max = lateness
        prune(state, ctx.rules.series, due)
        facts = StateFacts(state, due, ctx.specs_by_id)
        evaluation = ctx.rules.evaluate(facts)
        self.migrate(partition, state, evaluation.members, facts, Trigger("time"), due)
        state.primary = evaluation.primary
        self.reschedule(partition, state, facts, after=due)

    def reschedule(
        self, partition: int, state: CustomerState, facts: StateFacts, after: float
    ) -> None:
        """Recompute the customer's next due time and record it for the commit."""
        nxt = self.ctx.rules.next_due(facts)
        state.due = nxt if nxt is not None and nxt > after else None
        self.home.setdefault(state.customer_id, partition)
        self.dirty.add(state.customer_id)
        if state.due is not None:
            heapq.heappush(self.heap, (state.due, state.customer_id))

    def migrate(
        self,
        partition: int,
        state: CustomerState,
        new_members: frozenset[str],
        facts: StateFacts,
        trigger: Trigger,
        when: float,
        reason_override: str | None = None,
    ) -> None:
        """Record the migrations from ``state.members`` to ``new_members``."""
        ctx = self.ctx
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
            settings = ctx.settings
            self.outbox(
                partition, migration.to_outbox(settings.migrations_topic, settings.ce_source)
            )
            entered = move.direction == "entered"
            if entered:
                state.members[move.segment] = when
            else:
                state.members.pop(move.segment, None)
            self.commit.memberships.append(
                MembershipChange(move.segment, state.customer_id, 1 if entered else -1)
            )
            ctx.metrics.count_migration(move.segment, move.direction, trigger.kind)

    def apply(self, partition: int, event: BaseEvent) -> None:
        """Fold one event into its customer's state and record what it changes."""
        ctx = self.ctx
        cid = event.customer_id
        state = self.states.get(cid)
        digest = message_digest(event.messageId)
        if state is not None and digest in state.recent:
            ctx.metrics.duplicates += 1
            return
        late_by = self.clocks.get(partition, event.ts) - event.ts
        now = self.advance(partition, event.ts)
        self.fire_due(partition, self.watermark(partition))
        if state is not None:
            self.fire_customer(partition, state, event.ts)
        if isinstance(event, EraseEvent):
            self._erase(partition, event, state, now)
            return
        if state is None:
            state = self.states[cid] = CustomerState(customer_id=cid)
        windows = late_by <= ctx.settings.allowed_lateness_s
        if not windows:
            ctx.metrics.late += 1
        apply_event(state, event, ctx.specs_by_event if windows else {}, now, ctx.rules.event_names)
        remember(state, digest, ctx.settings.dedupe_depth)
        prune(state, ctx.rules.series, now)
        facts = StateFacts(state, now, ctx.specs_by_id)
        started = time.perf_counter()
        evaluation = ctx.rules.evaluate(facts)
        ctx.metrics.eval_seconds += time.perf_counter() - started
        self.migrate(partition, state, evaluation.members, facts, _trigger_for(event), event.ts)
        state.primary = evaluation.primary
        self.reschedule(partition, state, facts, after=now)

    def _erase(
        self, partition: int, event: EraseEvent, state: CustomerState | None, now: float
    ) -> None:
        if state is None:
            return
        facts = StateFacts(state, now, self.ctx.specs_by_id)
        trigger = Trigger("erasure", event.messageId, "erase")
        self.migrate(partition, state, frozenset(), facts, trigger, event.ts, "customer erased")
        self.states[state.customer_id] = None
        self.home.setdefault(state.customer_id, partition)
        self.dirty.add(state.customer_id)

    def finish(self, offsets: dict[int, int]) -> CommitBatch:
        """The commit: dirty states, timers that moved, progress, and the outbox."""
        commit = self.commit
        commit.offsets = offsets
        for cid in sorted(self.dirty):
            state = self.states.get(cid)
            data = state.to_json() if state is not None else None
            commit.states.append(StateWrite(cid, self.versions.get(cid, 0), data))
            due = state.due if state is not None else None
            if due != self.stored_due.get(cid):
                commit.due.setdefault(self.home[cid], {})[cid] = due
        commit.clocks = dict(self.clocks)
        return commit


def _trigger_for(event: BaseEvent) -> Trigger:
    kind: TriggerKind = "consent" if event.type == "consent" else "event"
    return Trigger(kind, event.messageId, event_name(event) or event.type)
