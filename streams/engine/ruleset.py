"""The compiled rule set: evaluation, explanation, timers and segment transitions.

A ``RuleSet`` is immutable and pure: every method reads only the ``Facts`` it is given. Segments
are evaluated in an order where every ``in_segment`` target (and its whole family) comes before
the segments that read it; a family is resolved as a unit, its members tried by descending
priority (ties by id), the first whose condition holds being the one member; except that a
member whose ``min_dwell`` has not elapsed keeps its family slot (see ``membership.py``).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from streams.engine.compiled import CompiledCondition, EvalContext, Reason
from streams.engine.facts import Facts, SeriesSpec
from streams.engine.membership import consent_given, in_dwell, is_holdout
from streams.engine.rfm import RfmConfig

Direction = Literal["entered", "exited"]

REMOVED_RULE = "segment removed from the rule set"
"""Reason text of the exit from a segment the rule set no longer has."""


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment's description, as written in its rule file (family and kind resolved)."""

    id: str
    name: str
    description: str
    kind: str
    family: str | None
    priority: int
    file: str
    requires_consent: str | None = None
    """The consent category the segment requires (``consent.<category>`` must be true)."""
    holdout_percent: float = 0.0
    """Share (percent) of the segment's members in its holdout (control) group."""
    min_dwell_s: float | None = None
    """Minimum time a customer stays after entering, in seconds."""
    has_stay_condition: bool = False
    """Whether membership, once entered, holds on a separate ``stay_condition``."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of evaluating every segment for one customer at one instant.

    ``holds`` has each segment's membership test before family resolution (its ``condition``,
    or for a current member its ``stay_condition`` or unexpired ``min_dwell``, and consent);
    ``members`` the segments the customer is in after
    family resolution; ``primary`` the member with the highest priority (ties by id).
    """

    members: frozenset[str]
    primary: str | None
    holds: dict[str, bool]


@dataclass(frozen=True, slots=True)
class SegmentExplanation:
    """Why a segment's condition holds or not, and whether the customer is a member."""

    holds: bool
    member: bool
    reason: Reason


@dataclass(frozen=True, slots=True)
class Transition:
    """One membership change: the customer ``entered`` or ``exited`` ``segment``.

    In a family move (one member replacing another) both events carry ``from_segment`` (the old
    member) and ``to_segment`` (the new one); the exit comes first. ``holdout``: the customer is
    in the segment's holdout group (still a member; downstream actions should skip it).
    """

    segment: str
    direction: Direction
    family: str | None
    from_segment: str | None
    to_segment: str | None
    reason: Reason
    holdout: bool = False


def _rank(info: SegmentInfo) -> tuple[int, str]:
    """Sort key: highest priority first, then id."""
    return (-info.priority, info.id)


class _Context:
    """One evaluation's state: facts plus memoised condition results and memberships."""

    __slots__ = ("_done", "_rules", "facts", "holds", "members")

    def __init__(self, facts: Facts, rules: RuleSet) -> None:
        self.facts = facts
        self._rules = rules
        self.holds: dict[str, bool] = {}
        self.members: set[str] = set()
        self._done: set[int] = set()

    def is_member(self, segment_id: str) -> bool:
        """Membership of ``segment_id``, resolving its unit (segment or family) if needed."""
        unit = self._rules._unit_of.get(segment_id)
        if unit is None:
            return False
        if unit not in self._done:
            self.resolve(unit)
        return segment_id in self.members

    def resolve(self, unit: int) -> None:
        """Evaluate the segments of one unit and record who is a member."""
        self._done.add(unit)
        rules = self._rules
        ids, is_family = rules._units[unit]
        conditions = rules._conditions
        holds = self.holds
        chosen = False
        if is_family:
            anchored = next((s for s in ids if rules._keeps_slot(self.facts, s)), None)
            if anchored is not None:
                self.members.add(anchored)
                chosen = True
        for segment_id in ids:
            held = holds.get(segment_id)
            if held is None:
                ctx: EvalContext = self
                held = holds[segment_id] = conditions[segment_id].test(ctx)
            if held and not chosen:
                self.members.add(segment_id)
                chosen = is_family


@dataclass(frozen=True, slots=True)
class _Plan:
    """An incremental evaluation: units to evaluate, and what is kept from before."""

    units: tuple[int, ...]
    kept_units: frozenset[int]
    kept_ids: frozenset[str]
    conditions: tuple[CompiledCondition, ...]


@dataclass(frozen=True)
class RuleSet:
    """An immutable, compiled rule pack.

    Build one with ``streams.engine.load_rules`` (or ``RuleSet.build`` from compiled parts).
    ``segments`` is in evaluation order; ``families`` maps a family id to its members by
    descending priority (ties by id). ``rfm`` is the pack's RFM configuration (None without an
    ``rfm`` file); ``rfm.live`` tells the pipeline to serve live boundaries through
    ``Facts.rfm_boundaries()``.
    """

    version: str
    segments: tuple[SegmentInfo, ...]
    series: tuple[SeriesSpec, ...]
    families: dict[str, tuple[str, ...]]
    event_names: frozenset[str]
    rfm: RfmConfig | None
    _conditions: Mapping[str, CompiledCondition] = field(repr=False, compare=False)
    _units: tuple[tuple[tuple[str, ...], bool], ...] = field(repr=False, compare=False)
    _unit_of: Mapping[str, int] = field(repr=False, compare=False)
    _info: Mapping[str, SegmentInfo] = field(repr=False, compare=False)
    _unit_inputs: tuple[frozenset[str], ...] = field(repr=False, compare=False, default=())
    """Per unit: the tokens its segments read (``streams.engine.inputs``); empty = unknown."""
    _readers: Mapping[int, frozenset[int]] = field(repr=False, compare=False, default_factory=dict)
    """Per unit: the later units that read its memberships through ``in_segment``."""
    _affected: dict[frozenset[str], _Plan] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def build(
        cls,
        version: str,
        segments: Sequence[tuple[SegmentInfo, CompiledCondition]],
        series: Sequence[SeriesSpec] = (),
        rfm: RfmConfig | None = None,
        inputs: Mapping[str, frozenset[str]] | None = None,
    ) -> RuleSet:
        """A rule set from segments already in evaluation order, each with its condition.

        Family members must be listed next to each other (a family is evaluated as a unit).
        Each condition is the segment's membership condition (``membership.segment_condition``
        applies consent, stay condition and minimum dwell).
        """
        infos = tuple(info for info, _ in segments)
        conditions = {info.id: cond for info, cond in segments}
        units: list[tuple[tuple[str, ...], bool]] = []
        unit_of: dict[str, int] = {}
        families: dict[str, tuple[str, ...]] = {}
        for info in infos:
            if info.family is None:
                unit_of[info.id] = len(units)
                units.append(((info.id,), False))
            elif info.family not in families:
                members = sorted((i for i in infos if i.family == info.family), key=_rank)
                families[info.family] = tuple(i.id for i in members)
                for member in members:
                    unit_of[member.id] = len(units)
                units.append((families[info.family], True))
        names = frozenset().union(*(c.event_names for c in conditions.values()))
        unit_inputs: tuple[frozenset[str], ...] = ()
        readers: dict[int, set[int]] = {}
        if inputs is not None:
            unit_inputs = tuple(
                frozenset().union(*(inputs.get(s, frozenset({"*"})) for s in ids))
                for ids, _family in units
            )
            for unit, tokens in enumerate(unit_inputs):
                for token in tokens:
                    if token.startswith("member:") and token[7:] in unit_of:
                        readers.setdefault(unit_of[token[7:]], set()).add(unit)
        return cls(
            version=version,
            segments=infos,
            series=tuple(series),
            families=families,
            event_names=names,
            rfm=rfm,
            _conditions=conditions,
            _units=tuple(units),
            _unit_of=unit_of,
            _info={i.id: i for i in infos},
            _unit_inputs=unit_inputs,
            _readers={unit: frozenset(r) for unit, r in readers.items()},
        )

    @classmethod
    def empty(cls) -> RuleSet:
        """A rule set with no segments."""
        return cls.build("0" * 16, ())

    @property
    def ids(self) -> tuple[str, ...]:
        """Segment ids in evaluation order."""
        return tuple(info.id for info in self.segments)

    def __contains__(self, segment_id: object) -> bool:
        return segment_id in self._info

    def segment(self, segment_id: str) -> SegmentInfo:
        """A segment's description; ``KeyError`` if the rule set has no such segment."""
        return self._info[segment_id]

    def _keeps_slot(self, facts: Facts, segment_id: str) -> bool:
        """A member in its minimum dwell (with consent, if required) keeps its family slot."""
        info = self._info[segment_id]
        if info.min_dwell_s is None or not in_dwell(facts, segment_id, info.min_dwell_s):
            return False
        return info.requires_consent is None or consent_given(facts, info.requires_consent)

    def is_holdout(self, customer_id: str, segment_id: str) -> bool:
        """Whether the customer is in the segment's holdout group (False for unknown segments)."""
        info = self._info.get(segment_id)
        return info is not None and is_holdout(customer_id, segment_id, info.holdout_percent)

    def _evaluate(self, facts: Facts) -> _Context:
        ctx = _Context(facts, self)
        for unit in range(len(self._units)):
            if unit not in ctx._done:
                ctx.resolve(unit)
        return ctx

    def _primary(self, members: Iterable[str]) -> str | None:
        ranked = sorted((self._info[s] for s in members), key=_rank)
        return ranked[0].id if ranked else None

    def evaluate(self, facts: Facts) -> Evaluation:
        """Every segment's condition, the resulting memberships and the primary segment."""
        ctx = self._evaluate(facts)
        members = frozenset(ctx.members)
        return Evaluation(members=members, primary=self._primary(members), holds=ctx.holds)

    def _plan(self, changed: frozenset[str]) -> _Plan:
        """What an incremental evaluation for ``changed`` re-evaluates and keeps (cached)."""
        cached = self._affected.get(changed)
        if cached is not None:
            return cached
        found: set[int] = set()
        for unit, tokens in enumerate(self._unit_inputs):
            if not tokens or "*" in tokens or tokens & changed:
                found.add(unit)
        frontier = list(found)
        while frontier:
            for reader in self._readers.get(frontier.pop(), ()):
                if reader not in found:
                    found.add(reader)
                    frontier.append(reader)
        kept_units = frozenset(u for u in range(len(self._units)) if u not in found)
        plan = _Plan(
            units=tuple(sorted(found)),
            kept_units=kept_units,
            kept_ids=frozenset(s for u in kept_units for s in self._units[u][0]),
            conditions=tuple(self._conditions[s] for u in sorted(found) for s in self._units[u][0]),
        )
        if len(self._affected) < 4096:
            self._affected[changed] = plan
        return plan

    def evaluate_changed(
        self, facts: Facts, previous: Collection[str], changed: frozenset[str]
    ) -> tuple[Evaluation, float | None]:
        """Re-evaluate only what ``changed`` can affect; keep the rest of ``previous``.

        Returns the evaluation and the earliest next change among the re-evaluated segments
        (combine it with the customer's earlier due time: the other segments' next changes
        did not move). Equal to :meth:`evaluate` when the customer's due timers have fired.
        """
        if not self._unit_inputs:
            return self.evaluate(facts), self.next_due(facts)
        plan = self._plan(changed)
        ctx = _Context(facts, self)
        ctx._done.update(plan.kept_units)
        ctx.members.update(plan.kept_ids.intersection(previous))
        for unit in plan.units:
            if unit not in ctx._done:
                ctx.resolve(unit)
        earliest_due: float | None = None
        for condition in plan.conditions:
            due = condition.next_change(facts)
            if due is not None and (earliest_due is None or due < earliest_due):
                earliest_due = due
        members = frozenset(ctx.members)
        evaluation = Evaluation(members=members, primary=self._primary(members), holds=ctx.holds)
        return evaluation, earliest_due

    def primary(self, members: Iterable[str]) -> str | None:
        """The highest-priority segment (ties by id) among ``members`` known to this rule set."""
        return self._primary(s for s in members if s in self._info)

    def explain(self, facts: Facts) -> dict[str, SegmentExplanation]:
        """For every segment, in evaluation order: holds, member, and the deciding reason."""
        ctx = self._evaluate(facts)
        result: dict[str, SegmentExplanation] = {}
        for info in self.segments:
            holds, reason = self._conditions[info.id].explain(ctx)
            result[info.id] = SegmentExplanation(holds, info.id in ctx.members, reason)
        return result

    def next_due(self, facts: Facts) -> float | None:
        """The earliest instant after ``facts.now`` at which any segment could change, or None."""
        earliest: float | None = None
        for cond in self._conditions.values():
            due = cond.next_change(facts)
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        return earliest

    def transitions(
        self,
        old: Collection[str],
        new: Collection[str],
        facts: Facts,
        customer_id: str | None = None,
    ) -> list[Transition]:
        """The migration events that take a customer from ``old`` to ``new`` memberships.

        ``facts`` is the customer's state now (it gives the reasons). Segments the rule set no
        longer has are exited first (by id); then, in rule-set order, each unit's changes, with
        a family's exits before its entries. ``customer_id`` sets each transition's ``holdout``
        (``is_holdout``); without it ``holdout`` is False.
        """
        result = self._transitions(set(old), set(new), facts)
        if customer_id is None:
            return result
        return [
            replace(t, holdout=True) if self.is_holdout(customer_id, t.segment) else t
            for t in result
        ]

    def _transitions(self, old_set: set[str], new_set: set[str], facts: Facts) -> list[Transition]:
        result = [
            Transition(sid, "exited", None, sid, None, Reason(REMOVED_RULE, {}))
            for sid in sorted(old_set - self._info.keys())
        ]
        if old_set == new_set:
            return result
        ctx = self._evaluate(facts)
        for ids, is_family in self._units:
            exits = [s for s in ids if s in old_set and s not in new_set]
            entries = [s for s in ids if s in new_set and s not in old_set]
            if not exits and not entries:
                continue
            if not is_family:
                for sid in exits:
                    _, reason = self._conditions[sid].explain(ctx)
                    result.append(Transition(sid, "exited", None, sid, None, reason))
                for sid in entries:
                    _, reason = self._conditions[sid].explain(ctx)
                    result.append(Transition(sid, "entered", None, None, sid, reason))
                continue
            result.extend(self._family_moves(ids, exits, entries, new_set, ctx))
        return result

    def _family_moves(
        self,
        ids: tuple[str, ...],
        exits: list[str],
        entries: list[str],
        new_set: set[str],
        ctx: _Context,
    ) -> list[Transition]:
        family = self._info[ids[0]].family
        current = next((s for s in ids if s in new_set), None)
        previous = exits[0] if exits else None
        moves: list[Transition] = []
        for sid in exits:
            holds, reason = self._conditions[sid].explain(ctx)
            if holds and current is not None:
                _, winner = self._conditions[current].explain(ctx)
                reason = Reason(f"moved to {current} (higher priority in {family})", winner.values)
            moves.append(Transition(sid, "exited", family, sid, current, reason))
        for sid in entries:
            _, reason = self._conditions[sid].explain(ctx)
            moves.append(Transition(sid, "entered", family, previous, sid, reason))
        return moves


@dataclass(frozen=True, slots=True)
class Node:
    """A segment for ordering: its family and its ``in_segment`` references (target, line)."""

    id: str
    family: str | None
    file: str
    line: int
    refs: Sequence[tuple[str, int]]


def _unit_name(node: Node) -> str:
    return f"family {node.family}" if node.family else node.id


def evaluation_order(
    nodes: Sequence[Node], priorities: Mapping[str, int]
) -> tuple[list[str], list[tuple[str, int, str]]]:
    """Order segments so every ``in_segment`` target's unit comes before its readers.

    A unit is a segment, or a whole family (whose membership depends on all its members).
    Among ready units the first defined goes first; a family's members follow by descending
    priority, ties by id. Returns (segment ids in order, cycles as (file, line, message)).
    """
    units: dict[str, list[Node]] = {}
    for node in nodes:
        units.setdefault(_unit_name(node), []).append(node)
    unit_of = {node.id: _unit_name(node) for node in nodes}
    index = {name: i for i, name in enumerate(units)}
    deps: dict[str, set[str]] = {name: set() for name in units}
    for node in nodes:
        deps[unit_of[node.id]].update(unit_of[t] for t, _ in node.refs if t in unit_of)
    readers: dict[str, set[str]] = {name: set() for name in units}
    for name, needed in deps.items():
        for dep in needed:
            readers[dep].add(name)
    waiting = {name: len(needed) for name, needed in deps.items()}
    ready = [index[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = list(units)
    ordered: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        members = sorted(units[name], key=lambda n: (-priorities.get(n.id, 0), n.id))
        ordered.extend(n.id for n in members)
        for reader in readers[name]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, index[reader])
    stuck = [name for name in names if waiting[name] > 0]
    return ordered, _cycles(stuck, deps, units, unit_of)


def _reach(start: str, deps: Mapping[str, set[str]], within: set[str]) -> set[str]:
    """Units reachable from ``start`` through one or more dependency edges inside ``within``."""
    found: set[str] = set()
    todo = [d for d in deps[start] if d in within]
    while todo:
        unit = todo.pop()
        if unit not in found:
            found.add(unit)
            todo.extend(d for d in deps[unit] if d in within)
    return found


def _cycle_path(
    start: str, deps: Mapping[str, set[str]], scc: set[str], order: list[str]
) -> list[str]:
    """A shortest cycle from ``start`` back to itself inside its strongly connected component."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for unit in frontier:
            for dep in sorted((d for d in deps[unit] if d in scc), key=order.index):
                if dep == start:
                    path = [unit]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1]
                if dep not in parents:
                    parents[dep] = unit
                    following.append(dep)
        frontier = following
    return [start]


def _cycles(
    stuck: list[str],
    deps: Mapping[str, set[str]],
    units: Mapping[str, list[Node]],
    unit_of: Mapping[str, str],
) -> list[tuple[str, int, str]]:
    """One problem per strongly connected component with a cycle among the unordered units."""
    within = set(stuck)
    reach = {unit: _reach(unit, deps, within) for unit in stuck}
    reported: set[str] = set()
    problems: list[tuple[str, int, str]] = []
    for unit in stuck:
        if unit in reported or unit not in reach[unit]:
            continue
        scc = {v for v in reach[unit] if unit in reach[v]}
        reported |= scc
        problems.append(_cycle_problem(_cycle_path(unit, deps, scc, stuck), units, unit_of))
    return problems


def _cycle_problem(
    cycle: list[str], units: Mapping[str, list[Node]], unit_of: Mapping[str, str]
) -> tuple[str, int, str]:
    first, following = cycle[0], cycle[1] if len(cycle) > 1 else cycle[0]
    for node in units[first]:
        for target, line in node.refs:
            if unit_of.get(target) == following:
                text = " -> ".join([*cycle, first])
                if len(cycle) == 1 and node.family:
                    text += " (members of a family cannot read each other)"
                return node.file, line, f"in_segment '{target}' creates a cycle: {text}"
    node = units[first][0]
    return node.file, node.line, f"in_segment cycle: {' -> '.join([*cycle, first])}"
