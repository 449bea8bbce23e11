"""One customer's logic: what an event or a timer does to its state, returned as effects.

In the style of bytewax's ``StatefulLogic``: a :class:`CustomerLogic` wraps one customer's
state during a batch. ``on_event``, ``on_timer``, ``catch_up``, ``refresh``, ``close``,
``exit_all`` and ``announce`` change the state and return its :class:`Effects` (member-set
changes and migrations to publish); ``notify_at`` and ``next_due`` say when it needs attention
with no event; ``snapshot`` is what the store keeps. It does no I/O and knows nothing of batches,
partitions or Kafka: the batch (:class:`~streams.pipeline.working_set.WorkingSet`) reads a
customer only through this interface, routes events and timers to it and collects the effects.

**One instant, one net change.** A change caused by an event (or a consent) is applied to the
memberships (and so to the member sets) at once, but its migrations are published only when
the customer's instant is over (:meth:`CustomerLogic.close`): events at one instant may change
a membership and change it back (two orders stamped with the same second; an order arriving
exactly when the last one's window ends), and a subscriber must then see nothing. The batch
closes the instant when the customer's next change is at a later instant, or when the
partition's time passes it. What is published is the net change, with the reasons as of the
end of the instant and the trigger of the last change. Changes made by timers, merges,
erasures and rule changes are published at once, after closing the open instant, if any.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Literal, cast

from streams.engine.inputs import event_tokens, trait_tokens
from streams.engine.instants import MS, ceil_instant
from streams.events.models import (
    BaseEvent,
    ConsentEvent,
    GroupEvent,
    IdentifyEvent,
    event_name,
)
from streams.pipeline.context import PipelineContext
from streams.pipeline.migrations import Migration, Trigger, TriggerKind
from streams.state.apply import apply_event, prune, remember
from streams.state.customer import CustomerState, OpenInstant
from streams.state.facts import StateFacts
from streams.store.base import MembershipChange

if TYPE_CHECKING:
    from streams.engine.ruleset import Evaluation, Transition

TIME = Trigger("time")
RULE_CHANGE = Trigger("rule_change")
IMPORT = Trigger("import")
CONSENT_TOKENS = frozenset({"consent", "seen"})

Emission = Literal["publish", "record", "none"]
"""What becomes of a change's migrations: ``publish`` numbers them in the customer's sequence
and sends them (live); ``record`` only counts them in the size history and the flow matrix, at
their own times (a quiet import: the past is recorded as it happened, nothing is sent and the
sequence does not move); ``none`` neither (a backfill with ``--no-emit``)."""


@dataclass(slots=True)
class Effects:
    """What a customer's logic asks the batch to do: change member sets, publish migrations."""

    memberships: list[MembershipChange] = field(default_factory=list)
    migrations: list[Migration] = field(default_factory=list)
    timers_fired: int = 0
    eval_seconds: float = 0.0
    changed: bool = False
    """Whether the state changed (to be written back)."""


class CustomerLogic:
    """One customer's state and the rules, for one batch (module docstring)."""

    __slots__ = ("ctx", "effects", "emission", "last", "state")

    def __init__(
        self, ctx: PipelineContext, state: CustomerState, emission: Emission = "publish"
    ) -> None:
        self.ctx = ctx
        self.state = state
        self.emission: Emission = emission
        """What becomes of the migrations (see :data:`Emission`)."""
        self.effects = Effects()
        self.last: tuple[StateFacts, Evaluation] | None = None
        """The latest evaluation (the reasons when the open instant closes)."""

    # -- inputs ---------------------------------------------------------------------------------

    def on_event(self, event: BaseEvent, now: float, digest: str, in_windows: bool) -> Effects:
        """Fold an event in at ``now``; its changes wait for the instant to be over."""
        ctx = self.ctx
        state = self.state
        specs = ctx.specs_by_event if in_windows else {}
        name = event_name(event)
        apply_event(state, event, specs, now, ctx.rules.event_names, name)
        remember(state, digest, ctx.settings.dedupe_depth)
        prune(state, ctx.rules.series, now)
        kind: TriggerKind = "consent" if event.type == "consent" else "event"
        trigger = Trigger(kind, event.messageId, name or event.type)
        self.settle(now, trigger, event.ts, changed_by(event, name))
        return self.effects

    def on_timer(self, due: float) -> Effects:
        """The customer's timer at ``due``: evaluate as of then, publish at once."""
        state = self.state
        self.effects.timers_fired += 1
        if state.open is not None:
            self.close()
        prune(state, self.ctx.rules.series, due)
        self.settle(due, TIME, due)
        return self.effects

    def fire_until(self, now: float) -> Effects:
        """Every timer of the customer due before ``now``, in time order."""
        state = self.state
        while state.due is not None and state.due < now:
            self.on_timer(state.due)
        return self.effects

    def refresh(self, now: float) -> Effects:
        """Re-evaluate under new rules (``trigger.kind = rule_change``) when evaluated under
        others."""
        state = self.state
        if state.merged_into is None and state.evaluated_under != self.ctx.version:
            self.settle(now, RULE_CHANGE, now)
        return self.effects

    def catch_up(self, now: float) -> Effects:
        """Bring the customer to ``now`` before a change at ``now``: re-evaluate it under the
        current rules, fire its timers due before ``now`` and close an earlier open instant."""
        state = self.state
        if (
            state.evaluated_under != self.ctx.version
            or (state.due is not None and state.due < now)
            or (state.open is not None and state.open.at < now)
        ):
            self.refresh(now)
            self.fire_until(now)
            if state.open is not None and state.open.at < now:
                self.close()
        return self.effects

    def exit_all(self, trigger: Trigger, when: float, now: float, reason: str) -> Effects:
        """Leave every segment at once (a merge folds the profile away; an erasure)."""
        facts = self.ctx.facts(self.state, now)
        self.publish(frozenset(), facts, trigger, when, reason)
        return self.effects

    def announce(self, before: frozenset[str], when: float) -> Effects:
        """Publish, as ``trigger.kind = import``, each membership that differs from ``before``
        (the memberships before an import), with the reasons as of ``when``. The memberships
        themselves do not change: the import recorded each move at its own time already."""
        state = self.state
        after = frozenset(state.members)
        if after == before:
            return self.effects
        facts = self.ctx.facts(state, when)
        saved = state.members
        state.members = dict.fromkeys(before, when)
        try:
            moves = self.ctx.rules.transitions(before, after, facts, state.customer_id)
        finally:
            state.members = saved
        self.effects.changed = True
        for move in moves:
            self._migration(move, IMPORT, when, None)
        return self.effects

    # -- what the batch reads -------------------------------------------------------------------

    def counted(self, digest: str, ts: float) -> bool:
        """Whether an event (its ``messageId`` digest, its time) is in the state already: a
        redelivery, or (the cut-over) an event of the history an import counted."""
        state = self.state
        imported = state.imported_until
        return digest in state.recent or (imported is not None and ts <= imported)

    def next_due(self) -> float | None:
        """When the customer next needs attention with no event (see ``CustomerState.timer``)."""
        return self.state.timer()

    def notify_at(self) -> tuple[float | None, float | None]:
        """``(due, open)``: when the customer's timer fires, and the instant whose changes are
        still open (published once the partition's time passes it); None for neither."""
        state = self.state
        opened = state.open
        return state.due, (opened.at if opened is not None else None)

    def snapshot(self) -> bytes:
        """The state as the store keeps it."""
        return self.state.to_json()

    def drained(self, effects: Effects) -> None:
        """The batch has taken ``effects`` in: start over, empty (the lists are reused)."""
        effects.memberships.clear()
        effects.migrations.clear()
        effects.timers_fired = 0
        effects.eval_seconds = 0.0
        effects.changed = False

    # -- evaluation -----------------------------------------------------------------------------

    def settle(
        self,
        now: float,
        trigger: Trigger,
        when: float,
        changed: frozenset[str] | None = None,
    ) -> None:
        """Evaluate the rules at ``now``, record the changes, and compute the next due time.

        With ``changed`` (the inputs an event moved, see :mod:`streams.engine.inputs`) only the
        segments reading them are re-evaluated; the customer's earlier due time still covers
        the others. Without it (timers, merges, rule changes, new customers), or when the
        customer's timer is due at ``now`` itself (an event at an instant goes before the timers
        due then, so this evaluation stands for that timer too), all are.
        """
        ctx = self.ctx
        state = self.state
        rules = ctx.rules
        facts = ctx.facts(state, now)
        started = perf_counter()
        due = state.due
        if (
            changed is None
            or state.evaluated_under != ctx.version
            or not ctx.settings.incremental_evaluation
            or (due is not None and due <= now)
        ):
            evaluation = rules.evaluate(facts)
            due = rules.next_due(facts)
        else:
            previous = frozenset(state.members)
            evaluation, partial = rules.evaluate_changed(facts, previous, changed)
            if partial is not None and (due is None or partial < due):
                due = partial
        effects = self.effects
        effects.eval_seconds += perf_counter() - started
        effects.changed = True
        self.last = (facts, evaluation)
        if trigger.kind == "event" or trigger.kind == "consent":
            self._hold(evaluation.members, now, trigger, when)
        else:
            self.publish(evaluation.members, facts, trigger, when, None, evaluation)
        state.primary = evaluation.primary
        state.evaluated_under = ctx.version
        evaluated_at = state.evaluated_at
        state.evaluated_at = now if evaluated_at is None or now > evaluated_at else evaluated_at
        if due is not None:
            due = ceil_instant(due)
            if due <= now:
                due = ceil_instant(now + MS)
        state.due = due

    # -- membership changes ---------------------------------------------------------------------

    def _hold(self, new_members: frozenset[str], now: float, trigger: Trigger, when: float) -> None:
        """Apply an event's changes at ``now``; publish them when the instant is over."""
        state = self.state
        opened = state.open
        if opened is not None and opened.at != now:
            self.close()
            opened = None
        members = state.members
        if members.keys() == new_members:
            return
        if opened is None:
            state.open = OpenInstant(now, dict(members), state.primary, _stored(trigger), when)
        else:
            opened.trigger = _stored(trigger)
            opened.when = when
        changes = self.effects.memberships
        cid = state.customer_id
        for segment in [s for s in members if s not in new_members]:
            del members[segment]
            changes.append(MembershipChange(segment, cid, -1))
        for segment in new_members:
            if segment not in members:
                members[segment] = when
                changes.append(MembershipChange(segment, cid, 1))

    def close(self) -> Effects:
        """Publish the net change of the open instant (nothing when it nets to none)."""
        state = self.state
        opened = state.open
        if opened is None:
            return self.effects
        self.effects.changed = True
        state.open = None
        before = opened.members
        after = state.members
        for segment, since in before.items():
            if segment in after:
                after[segment] = since
        if before.keys() == after.keys():
            return self.effects
        facts, evaluation = self._evaluated(opened.at)
        kind, message_id, event = opened.trigger
        trigger = Trigger(_kind(kind), message_id, event)
        # Reasons are explained as of the membership before the instant (what the evaluation
        # saw): an entry's reason is the segment's condition, not its stay condition.
        state.members = dict(before)
        try:
            moves = self.ctx.rules.transitions(
                frozenset(before), frozenset(after), facts, state.customer_id, evaluation
            )
        finally:
            state.members = after
        for move in moves:
            self._migration(move, trigger, opened.when, None)
        return self.effects

    def publish(
        self,
        new_members: frozenset[str],
        facts: StateFacts,
        trigger: Trigger,
        when: float,
        reason_override: str | None = None,
        evaluation: Evaluation | None = None,
    ) -> None:
        """Change and publish the memberships from ``state.members`` to ``new_members`` now.

        ``evaluation``: the rules' evaluation of ``facts`` that gave ``new_members``; the reasons
        are then explained from it rather than from a second evaluation.
        """
        state = self.state
        if state.open is not None:
            self.close()
        members = state.members
        if members.keys() == new_members:
            return
        self.effects.changed = True
        old = frozenset(members)
        moves = self.ctx.rules.transitions(old, new_members, facts, state.customer_id, evaluation)
        changes = self.effects.memberships
        for move in moves:
            entered = move.direction == "entered"
            if entered:
                members[move.segment] = when
            else:
                members.pop(move.segment, None)
            changes.append(MembershipChange(move.segment, state.customer_id, 1 if entered else -1))
            self._migration(move, trigger, when, reason_override)

    def _evaluated(self, now: float) -> tuple[StateFacts, Evaluation | None]:
        """The facts at ``now`` and the latest evaluation of them, when it is of ``now``."""
        last = self.last
        if last is not None and last[0].now == now:
            return last
        return self.ctx.facts(self.state, now), None

    def _migration(
        self, move: Transition, trigger: Trigger, when: float, reason_override: str | None
    ) -> None:
        """One migration, numbered in the customer's sequence when it is published (none at
        all without an emission)."""
        emission = self.emission
        if emission == "none":
            return
        ctx = self.ctx
        state = self.state
        if emission == "publish" or trigger.kind == "import":
            state.sequence += 1
        self.effects.migrations.append(
            Migration(
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
        )


def _stored(trigger: Trigger) -> tuple[str, str | None, str | None]:
    return (trigger.kind, trigger.message_id, trigger.event)


def _kind(stored: str) -> TriggerKind:
    """A stored trigger kind, typed (it was a ``TriggerKind`` when stored)."""
    return cast(TriggerKind, stored)


def changed_by(event: BaseEvent, name: str | None) -> frozenset[str]:
    """The rule inputs an event (counted as ``name``) moves (see :mod:`streams.engine.inputs`)."""
    if name is not None:
        return event_tokens(name)
    if isinstance(event, IdentifyEvent):
        return trait_tokens(event.traits.keys())
    if isinstance(event, GroupEvent):
        return trait_tokens(("company",))
    if isinstance(event, ConsentEvent):
        return CONSENT_TOKENS
    return event_tokens(None)
