"""The working set of one batch: loaded states, clocks, timers, and what the batch will commit.

Every change to a customer goes through here, in the partition's order:

* ``fire_due``   timers whose due time the clock passed, earliest first (``trigger.kind = time``,
                 ``ce_time`` = the due time, evaluated as of the due time);
* ``apply``      one event (``trigger.kind = event`` or ``consent``); ``alias`` merges and
                 ``erase`` forgets (:mod:`streams.pipeline.identity`);
* ``migrate``    membership before vs after, as migrations into the outbox, membership changes
                 and migration-matrix counts.

After each change the customer's next due time is recomputed from the rules (the instant its
outcome can next flip with no new event) and scheduled in its home partition's timer set.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from streams.engine.inputs import event_tokens, trait_tokens
from streams.events.models import (
    AliasEvent,
    BaseEvent,
    ConsentEvent,
    EraseEvent,
    GroupEvent,
    IdentifyEvent,
    event_name,
    iso,
)
from streams.pipeline.identity import Refused, erase, merge, resolve
from streams.pipeline.migrations import Migration, Trigger, TriggerKind
from streams.pipeline.outbox import OutboxEntry
from streams.state.apply import apply_event, message_digest, prune, remember
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from streams.store.base import ANY_VERSION, CommitBatch, MembershipChange, StateWrite

if TYPE_CHECKING:
    from streams.engine.ruleset import Evaluation
    from streams.pipeline.processor import PipelineContext


@dataclass
class WorkingSet:
    """Mutable state of one batch (never shared between batches)."""

    ctx: PipelineContext
    states: dict[str, CustomerState | None]
    versions: dict[str, int]
    clocks: dict[int, float]
    commit: CommitBatch = field(default_factory=CommitBatch)
    dirty: set[str] = field(default_factory=set)
    heaps: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    """Per home partition: the loaded timers, earliest first (a partition's watermark fires
    only its own customers' timers)."""
    stored_due: dict[str, float | None] = field(default_factory=dict)
    loaded: dict[str, tuple[frozenset[str], str | None] | None] = field(default_factory=dict)
    """Customer -> (segments, primary) as loaded; None for a customer with no profile."""
    suppressed: dict[str, float] = field(default_factory=dict)
    """Erased ids -> erasure time: their events up to then are dropped."""
    unconditional: set[str] = field(default_factory=set)
    """Keys deleted without a version check (alias redirects of an erased profile)."""
    where: dict[str, int] = field(default_factory=dict)
    """Customer -> the partition whose outbox carries its membership record."""
    loaded_clocks: dict[int, float] = field(default_factory=dict)
    emit: bool = True
    """False for a silent backfill: memberships change, no migration is published."""

    def touch(self, customer_id: str, partition: int) -> None:
        """Mark a customer changed by an operation on ``partition``."""
        self.dirty.add(customer_id)
        self.where[customer_id] = partition

    def outbox(self, partition: int, entry: OutboxEntry) -> None:
        """Queue a message to send once the batch is committed."""
        self.commit.outbox.setdefault(partition, []).append(entry.encode())

    def advance(self, partition: int, event_ts: float, state: CustomerState | None) -> float:
        """Move the partition's event-time clock; return the instant to evaluate the event at.

        Each customer has its own time: an event is evaluated at its own timestamp, or at the
        customer's last evaluation instant when that is later (time never runs backwards for a
        customer), or at the wall clock in processing mode. A late event therefore is judged
        as of when it happened, not as of the partition's latest event.
        """
        clock = max(self.clocks.get(partition, event_ts), event_ts)
        self.clocks[partition] = clock
        own = event_ts
        if state is not None and state.evaluated_at is not None:
            own = max(own, state.evaluated_at)
        if self.ctx.settings.clock == "event":
            return own
        return max(time.time(), own)

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
            self._push(customer_id, due)

    def _push(self, customer_id: str, due: float) -> None:
        heap = self.heaps.setdefault(self.ctx.home_partition(customer_id), [])
        heapq.heappush(heap, (due, customer_id))

    def fire_due(self, partition: int, until: float) -> None:
        """Fire every loaded timer due at or before ``until``, earliest first (ties by id)."""
        heap = self.heaps.get(partition)
        while heap and heap[0][0] <= until:
            due, cid = heapq.heappop(heap)
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
        self.settle(partition, state, due, Trigger("time"), due)

    def settle(
        self,
        partition: int,
        state: CustomerState,
        now: float,
        trigger: Trigger,
        when: float,
        changed: frozenset[str] | None = None,
    ) -> None:
        """Evaluate the rules at ``now``, record the migrations, and reschedule the timer.

        With ``changed`` (the inputs an event moved, see :mod:`streams.engine.inputs`) only the
        segments reading them are re-evaluated; the customer's earlier due time still covers
        the others. Without it (timers, merges, rule changes, new customers) all are.
        """
        ctx = self.ctx
        facts = ctx.facts(state, now)
        started = time.perf_counter()
        if (
            changed is None
            or state.evaluated_under != ctx.version
            or not ctx.settings.incremental_evaluation
        ):
            evaluation = ctx.rules.evaluate(facts)
            due = ctx.rules.next_due(facts)
        else:
            previous = frozenset(state.members)
            evaluation, partial = ctx.rules.evaluate_changed(facts, previous, changed)
            kept = state.due if state.due is not None and state.due > now else None
            due = partial if kept is None else kept if partial is None else min(kept, partial)
        ctx.metrics.eval_seconds += time.perf_counter() - started
        self.migrate(
            partition, state, evaluation.members, facts, trigger, when, evaluation=evaluation
        )
        state.primary = evaluation.primary
        state.evaluated_under = ctx.version
        instant = round(now, 3)
        state.evaluated_at = (
            instant if state.evaluated_at is None else max(state.evaluated_at, instant)
        )
        state.due = due if due is not None and due > now else None
        self.touch(state.customer_id, partition)
        if state.due is not None:
            self._push(state.customer_id, state.due)

    def refresh(self, partition: int, state: CustomerState, now: float) -> None:
        """Re-evaluate a customer evaluated under other rules (``trigger.kind = rule_change``)."""
        if state.merged_into is None and state.evaluated_under != self.ctx.version:
            self.settle(partition, state, now, Trigger("rule_change"), now)

    def migrate(
        self,
        partition: int,
        state: CustomerState,
        new_members: frozenset[str],
        facts: StateFacts,
        trigger: Trigger,
        when: float,
        reason_override: str | None = None,
        evaluation: Evaluation | None = None,
    ) -> None:
        """Record the migrations from ``state.members`` to ``new_members``.

        ``evaluation``: the rules' evaluation of ``facts`` that gave ``new_members``; the
        reasons are then explained from it rather than from a second evaluation.
        """
        ctx = self.ctx
        old = frozenset(state.members)
        if old == new_members:
            return
        settings = ctx.settings
        changes = ctx.rules.transitions(old, new_members, facts, state.customer_id, evaluation)
        for move in changes:
            entered = move.direction == "entered"
            if entered:
                state.members[move.segment] = when
            else:
                state.members.pop(move.segment, None)
            self.commit.memberships.append(
                MembershipChange(move.segment, state.customer_id, 1 if entered else -1)
            )
            if not self.emit:
                continue
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
                reason_values={} if reason_override else ctx.redact(move.reason.values),
                rule_version=ctx.rules.version,
                sequence=state.sequence,
                time=when,
                holdout=move.holdout,
            )
            self.outbox(
                partition, migration.to_outbox(settings.migrations_topic, settings.ce_source)
            )
            if entered or move.to_segment is None:
                cell = f"{move.from_segment or '-'}|{move.segment if entered else '-'}"
                moves = self.commit.matrix.setdefault(iso(when)[:10], {})
                moves[cell] = moves.get(cell, 0) + 1
            ctx.metrics.count_migration(move.segment, move.direction, trigger.kind)

    def apply(self, partition: int, event: BaseEvent) -> int | Refused | None:
        """Fold one event into its customer's profile and record what it changes.

        Returns the partition to re-route the event to when its profile lives elsewhere (after
        a merge), a :class:`Refused` for the DLQ, or None when the event was handled.
        """
        ctx = self.ctx
        named = event.customer_id
        erased_at = self.suppressed.get(named)
        if erased_at is not None and event.ts <= erased_at:
            ctx.metrics.suppressed += 1
            return None
        root = resolve(self, named)
        home = ctx.home_partition(root)
        if home != partition:
            return home
        state = self.states.get(root)
        digest = message_digest(event.messageId)
        if state is not None and digest in state.recent:
            ctx.metrics.duplicates += 1
            return None
        late_by = self.clocks.get(partition, event.ts) - event.ts
        now = self.advance(partition, event.ts, state)
        self.fire_due(partition, self.watermark(partition))
        if state is not None:
            self.refresh(partition, state, now)
            self.fire_customer(partition, state, now)
        if isinstance(event, EraseEvent):
            erase(self, partition, event, named, root, now)
            return None
        other = _merged_id(event)
        if other is not None and other != named:
            refused = merge(self, partition, named, root, other, event, now)
            if refused is not None:
                return refused
        state = self.states.get(root)
        if state is None:
            state = self.states[root] = CustomerState(customer_id=root)
        windows = late_by <= ctx.settings.allowed_lateness_s
        if not windows:
            ctx.metrics.late += 1
        apply_event(state, event, ctx.specs_by_event if windows else {}, now, ctx.rules.event_names)
        remember(state, digest, ctx.settings.dedupe_depth)
        prune(state, ctx.rules.series, now)
        self.settle(partition, state, now, _trigger_for(event), event.ts, _changed_by(event))
        return None

    def finish(self, offsets: dict[int, int]) -> CommitBatch:
        """The commit: dirty states, timers that moved, membership records, progress, outbox."""
        commit = self.commit
        commit.offsets = offsets
        for cid in sorted(self.dirty):
            state = self.states.get(cid)
            data = state.to_json() if state is not None else None
            expected = ANY_VERSION if cid in self.unconditional else self.versions.get(cid, 0)
            commit.states.append(StateWrite(cid, expected, data))
            due = state.due if state is not None else None
            if due != self.stored_due.get(cid) and cid not in self.unconditional:
                commit.due.setdefault(self.ctx.home_partition(cid), {})[cid] = due
            self._membership_record(cid, state)
        commit.clocks = {
            p: clock for p, clock in self.clocks.items() if clock != self.loaded_clocks.get(p)
        }
        return commit

    def _membership_record(self, cid: str, state: CustomerState | None) -> None:
        """A compacted-topic record of the customer's segments if they changed, or a tombstone."""
        before = self.loaded.get(cid)
        partition = self.where.get(cid, 0)
        topic = self.ctx.settings.memberships_topic
        if state is None or state.merged_into is not None:
            if before is not None:
                self.outbox(partition, OutboxEntry(topic, cid.encode(), None))
            return
        after = (frozenset(state.members), state.primary)
        if before == after or (before is None and not state.members):
            return
        value = {
            "customer_id": cid,
            "segments": sorted(state.members),
            "primary_segment": state.primary,
            "sequence": state.sequence,
            "rule_version": self.ctx.rules.version,
        }
        self.outbox(partition, OutboxEntry(topic, cid.encode(), orjson.dumps(value)))


def _merged_id(event: BaseEvent) -> str | None:
    """The id an event asks to merge into its customer, if any."""
    if isinstance(event, AliasEvent):
        return event.previousId
    if isinstance(event, IdentifyEvent) and event.userId and event.anonymousId:
        return event.anonymousId
    return None


def _changed_by(event: BaseEvent) -> frozenset[str]:
    """The rule inputs an event moves (see :mod:`streams.engine.inputs`)."""
    if isinstance(event, IdentifyEvent):
        return trait_tokens(event.traits.keys())
    if isinstance(event, GroupEvent):
        return trait_tokens(("company",))
    if isinstance(event, ConsentEvent):
        return CONSENT_TOKENS
    return event_tokens(event_name(event))


CONSENT_TOKENS = frozenset({"consent", "seen"})


def _trigger_for(event: BaseEvent) -> Trigger:
    kind: TriggerKind = "consent" if event.type == "consent" else "event"
    return Trigger(kind, event.messageId, event_name(event) or event.type)
