"""The working set of one batch: loaded states, clocks, timers, and what the batch will commit.

Every change to a customer goes through here, in the partition's order; what a change does to
the customer is its :class:`~streams.pipeline.logic.CustomerLogic`'s job, and the working set
only routes inputs to it and collects its effects:

* ``fire_due``      timers due before the watermark, earliest first (``trigger.kind = time``,
                    ``ce_time`` = the due time, evaluated as of the due time);
* ``close_settled`` the customers' open instants that the partition's time has passed (their
                    net changes are published then);
* ``apply``         one event (``trigger.kind = event`` or ``consent``); ``alias`` merges and
                    ``erase`` forgets (:mod:`streams.pipeline.identity`);
* ``collect``       a logic's effects: member-set changes, migrations into the outbox,
                    migration-matrix counts and metrics.

After each change the customer's next due time (and open instant) is scheduled in its home
partition's timer heap. The time mode (:mod:`streams.pipeline.timekeeping`) says where each
partition's watermark is.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson

from streams.events.models import AliasEvent, BaseEvent, EraseEvent, IdentifyEvent, iso
from streams.pipeline.context import PipelineContext
from streams.pipeline.identity import Refused, erase, merge, resolve
from streams.pipeline.logic import CustomerLogic, Effects, Emission
from streams.pipeline.migrations import Trigger
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.timekeeping import Watermark
from streams.state.apply import message_digest
from streams.state.customer import CustomerState
from streams.store.base import ANY_VERSION, CommitBatch, StateWrite


class CustomerFailed(Exception):
    """Processing ``customer`` failed outside any one event's application (a timer, an open
    instant, encoding its state): the batch is applied again with the customer quarantined."""

    def __init__(self, customer: str, message: str) -> None:
        super().__init__(f"customer {customer!r}: {message}")
        self.customer = customer
        self.message = message


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
    emission: Emission = "publish"
    """What becomes of the migrations (:data:`~streams.pipeline.logic.Emission`): published
    live, only recorded in the size history by a quiet import, or dropped by a silent
    backfill. Membership records are written only when migrations are published."""
    instant: float = 0.0
    """The batch's clock reading (processing time: the instant its events are evaluated at)."""
    opens: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    """Per home partition: the customers' open instants, earliest first."""
    logics: dict[str, CustomerLogic] = field(default_factory=dict)
    """Customer -> its logic for this batch (made on first use)."""
    scheduled: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    """Customer -> (due, open instant) last pushed onto the heaps."""
    quarantined: frozenset[str] = frozenset()
    """Customers this batch leaves alone (their processing failed): no timer, no event."""

    def touch(self, customer_id: str, partition: int) -> None:
        """Mark a customer changed by an operation on ``partition``."""
        self.dirty.add(customer_id)
        self.where[customer_id] = partition

    def outbox(self, partition: int, entry: OutboxEntry) -> None:
        """Queue a message to send once the batch is committed."""
        self.commit.outbox.setdefault(partition, []).append(entry.encode())

    # -- customers ------------------------------------------------------------------------------

    def logic(self, state: CustomerState) -> CustomerLogic:
        """The customer's logic for this batch (a new one when its state object changed)."""
        logic = self.logics.get(state.customer_id)
        if logic is None or logic.state is not state:
            logic = self.logics[state.customer_id] = CustomerLogic(self.ctx, state, self.emission)
        return logic

    def collect(self, partition: int, logic: CustomerLogic) -> None:
        """Take a logic's effects into the commit, and schedule its timers."""
        effects = logic.effects
        if not effects.changed:
            return
        cid = logic.state.customer_id
        self._effects(partition, effects)
        logic.drained(effects)
        self.touch(cid, partition)
        due, opened = logic.notify_at()
        if self.scheduled.get(cid) != (due, opened):
            self.scheduled[cid] = (due, opened)
            if due is not None:
                self._push(cid, due)
            if opened is not None:
                self._open(cid, opened)

    def _effects(self, partition: int, effects: Effects) -> None:
        commit = self.commit
        if effects.memberships:
            commit.memberships.extend(effects.memberships)
        metrics = self.ctx.metrics
        metrics.timers_fired += effects.timers_fired
        metrics.eval_seconds += effects.eval_seconds
        if not effects.migrations:
            return
        settings = self.ctx.settings
        topic = settings.migrations_topic
        source = settings.ce_source
        publish = self.emission == "publish"
        history = commit.history.get(partition)
        if history is None:
            history = commit.history[partition] = {}
        matrix = commit.matrix.get(partition)
        if matrix is None:
            matrix = commit.matrix[partition] = {}
        outbox = commit.outbox.setdefault(partition, []) if publish else []
        for migration in effects.migrations:
            if publish:
                outbox.append(migration.outbox_record(topic, source))
            if migration.trigger.kind == "import":
                # a notice of where an import left the customer: its moves are in the size
                # history and the matrix at their own times already
                metrics.count_migration(migration.segment, migration.direction, "import")
                continue
            entered = migration.direction == "entered"
            if entered or migration.to_segment is None:
                cell = f"{migration.from_segment or '-'}|{migration.segment if entered else '-'}"
                moves = matrix.setdefault(iso(migration.time)[:10], {})
                moves[cell] = moves.get(cell, 0) + 1
            counts = history.get(hour := int(migration.time // 3600))
            if counts is None:
                counts = history[hour] = {}
            name = f"{migration.segment}|in" if entered else f"{migration.segment}|out"
            counts[name] = counts.get(name, 0) + 1
            metrics.count_migration(migration.segment, migration.direction, migration.trigger.kind)

    # -- time -----------------------------------------------------------------------------------

    def advance(self, partition: int, event_ts: float, state: CustomerState | None) -> float:
        """Move the partition's event-time clock; return the instant to evaluate the event at.

        Each customer has its own time: an event is evaluated at its own timestamp (event time)
        or the batch's instant (processing time), or at the customer's last evaluation instant
        when that is later (time never runs backwards for a customer). A late event therefore
        is judged as of when it happened, not as of the partition's latest event.
        """
        clock = self.clocks.get(partition, event_ts)
        if event_ts > clock:
            clock = event_ts
        self.clocks[partition] = clock
        own = None if state is None else state.evaluated_at
        return self.ctx.mode.evaluation_instant(self.instant, event_ts, own)

    def watermark(self, partition: int) -> Watermark:
        """Timers due before this have fired or may fire (see :mod:`.timekeeping`)."""
        return self.ctx.mode.watermark(self.instant, self.clocks.get(partition))

    def closing_watermark(self, partition: int) -> Watermark:
        """The partition's watermark once the batch's events are applied."""
        return self.ctx.mode.closing_watermark(self.instant, self.clocks.get(partition))

    def schedule(self, customer_id: str, due: float) -> None:
        """Remember a loaded timer (from the store) for firing in this batch."""
        state = self.states.get(customer_id)
        if state is None or customer_id in self.quarantined:
            return
        logic = self.logic(state)
        if logic.next_due() != due:
            return
        timer, opened = self.scheduled[customer_id] = logic.notify_at()
        if opened is not None:
            self._open(customer_id, opened)
        if timer is not None:
            self._push(customer_id, timer)

    def _push(self, customer_id: str, due: float) -> None:
        heap = self.heaps.setdefault(self.ctx.home_partition(customer_id), [])
        heapq.heappush(heap, (due, customer_id))

    def _open(self, customer_id: str, at: float) -> None:
        heap = self.opens.setdefault(self.ctx.home_partition(customer_id), [])
        heapq.heappush(heap, (at, customer_id))

    def close_settled(self, partition: int, bound: Watermark | None = None) -> None:
        """Publish the open instants that the partition's time (or ``bound``) has passed,
        earliest first."""
        heap = self.opens.get(partition)
        if not heap:
            return
        settled = self.ctx.mode.settled(self.instant, self.clocks.get(partition))
        before = settled.before if bound is None else max(settled.before, bound.before)
        while heap and heap[0][0] < before:
            at, cid = heapq.heappop(heap)
            state = self.states.get(cid)
            if (
                state is not None
                and state.merged_into is None
                and self.logic(state).notify_at()[1] == at
            ):
                with _failing_as(cid):
                    self.close(partition, state)

    def fire_due(self, partition: int, watermark: Watermark) -> None:
        """Fire every loaded timer due before ``watermark``, earliest first (ties by id)."""
        heap = self.heaps.get(partition)
        before = watermark.before
        while heap and heap[0][0] < before:
            due, cid = heapq.heappop(heap)
            state = self.states.get(cid)
            if state is None or state.merged_into is not None:
                continue
            logic = self.logic(state)
            if logic.notify_at()[0] == due:
                with _failing_as(cid):
                    logic.on_timer(due)
                    self._late_timer(due)
                    self.collect(partition, logic)

    def _late_timer(self, due: float) -> None:
        """Processing time: how late a timer fired (the ``timer_lateness`` metric)."""
        metrics = self.ctx.metrics
        lateness = self.instant - due
        if lateness > metrics.timer_lateness_max and self.ctx.settings.clock == "processing":
            metrics.timer_lateness_max = lateness

    # -- changes --------------------------------------------------------------------------------

    def close(self, partition: int, state: CustomerState) -> None:
        """Publish the customer's open instant now."""
        logic = self.logic(state)
        logic.close()
        self.collect(partition, logic)

    def settle(
        self, partition: int, state: CustomerState, now: float, trigger: Trigger, when: float
    ) -> None:
        """Evaluate a customer at ``now`` and publish its changes (merges)."""
        logic = self.logic(state)
        logic.settle(now, trigger, when)
        self.collect(partition, logic)

    def refresh(self, partition: int, state: CustomerState, now: float) -> None:
        """Re-evaluate a customer evaluated under other rules (``trigger.kind = rule_change``)."""
        logic = self.logic(state)
        logic.refresh(now)
        self.collect(partition, logic)

    def announce(
        self, partition: int, state: CustomerState, before: frozenset[str], when: float
    ) -> None:
        """Publish the memberships that differ from ``before`` as ``import`` migrations."""
        logic = self.logic(state)
        logic.announce(before, when)
        self.collect(partition, logic)

    def exit_all(
        self,
        partition: int,
        state: CustomerState,
        trigger: Trigger,
        when: float,
        now: float,
        reason: str,
    ) -> None:
        """Take the customer out of every segment now and publish it (merges, erasures)."""
        logic = self.logic(state)
        logic.exit_all(trigger, when, now, reason)
        self.collect(partition, logic)

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
        other = _merged_id(event)
        if self.quarantined and self._touches_quarantined(root, other):
            return Refused("processing", f"customer {root!r} could not be processed in this batch")
        home = ctx.home_partition(root)
        if home != partition:
            return home
        state = self.states.get(root)
        digest = message_digest(event.messageId)
        if state is not None and self.logic(state).counted(digest, event.ts):
            ctx.metrics.duplicates += 1
            return None
        late_by = self.clocks.get(partition, event.ts) - event.ts
        now = self.advance(partition, event.ts, state)
        if self.opens.get(partition):
            self.close_settled(partition)
        self.fire_due(partition, self.watermark(partition))
        if state is not None:
            self.catch_up(partition, state, now)
        if isinstance(event, EraseEvent):
            erase(self, partition, event, named, root, now)
            return None
        if other is not None and other != named:
            refused = merge(self, partition, named, root, other, event, now)
            if refused is not None:
                return refused
        state = self.states.get(root)
        if state is None:
            state = self.states[root] = CustomerState(customer_id=root)
        in_windows = late_by <= ctx.settings.allowed_lateness_s
        if not in_windows:
            ctx.metrics.late += 1
        logic = self.logic(state)
        logic.on_event(event, now, digest, in_windows)
        self.collect(partition, logic)
        return None

    def _touches_quarantined(self, root: str, other: str | None) -> bool:
        """Whether an event of ``root`` (merging ``other``) involves a quarantined customer."""
        if root in self.quarantined:
            return True
        return other is not None and resolve(self, other) in self.quarantined

    def catch_up(self, partition: int, state: CustomerState, now: float) -> None:
        """Bring a customer to ``now`` before a change at ``now`` (:meth:`CustomerLogic.catch_up`),
        whatever its own partition's time has reached: a profile merged away from another
        partition is brought to the merge's instant first."""
        logic = self.logic(state)
        logic.catch_up(now)
        self.collect(partition, logic)

    def finish(self, offsets: dict[int, int]) -> CommitBatch:
        """The commit: dirty states, timers that moved, membership records, progress, outbox."""
        commit = self.commit
        commit.offsets = offsets
        for cid in sorted(self.dirty):
            state = self.states.get(cid)
            logic = self.logic(state) if state is not None else None
            with _failing_as(cid):
                data = logic.snapshot() if logic is not None else None
            expected = ANY_VERSION if cid in self.unconditional else self.versions.get(cid, 0)
            commit.states.append(StateWrite(cid, expected, data))
            due = logic.next_due() if logic is not None else None
            if due != self.stored_due.get(cid) and cid not in self.unconditional:
                commit.due.setdefault(self.ctx.home_partition(cid), {})[cid] = due
            self._membership_record(cid, state)
        commit.origins = self.where
        commit.clocks = {
            p: clock for p, clock in self.clocks.items() if clock != self.loaded_clocks.get(p)
        }
        return commit

    def _membership_record(self, cid: str, state: CustomerState | None) -> None:
        """A compacted-topic record of the customer's segments if they changed, or a tombstone
        (only while migrations are published: a quiet import writes them when it announces)."""
        if self.emission != "publish":
            return
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


@contextmanager
def _failing_as(customer: str) -> Iterator[None]:
    """Turn any error of the block into :class:`CustomerFailed` for ``customer``."""
    try:
        yield
    except CustomerFailed:
        raise
    except Exception as exc:
        raise CustomerFailed(customer, repr(exc)) from exc


def _merged_id(event: BaseEvent) -> str | None:
    """The id an event asks to merge into its customer, if any."""
    if isinstance(event, AliasEvent):
        return event.previousId
    if isinstance(event, IdentifyEvent) and event.userId and event.anonymousId:
        return event.anonymousId
    return None
