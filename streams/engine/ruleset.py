"""The compiled rule set: evaluation, explanation, timers and segment transitions.

A ``RuleSet`` is immutable and pure: every method reads only the ``Facts`` it is given. Segments
are evaluated in an order where every ``in_segment`` target (and its whole family) comes before
the segments that read it; a family is resolved as a unit, its members tried by descending
priority (ties by id), the first whose condition holds being the one member; except that a
member whose ``min_dwell`` has not elapsed keeps its family slot (see ``membership.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from streams.engine.compiled import (
    CompiledCondition,
    Reason,
    Test,
)
from streams.engine.facts import Facts, SeriesSpec
from streams.engine.membership import consent_given, in_dwell, is_holdout
from streams.engine.nextdue import NextDue
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
class Conversion:
    """What a conversion is, for segment performance (the pack's ``performance`` file).

    The states keep ``series_id``, a series of the conversion event with ``value_property``
    summed, for at least ``window_s``: conversions and value within any window up to that are
    exact.
    """

    event: str
    value_property: str
    window_s: float
    series_id: str


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
    _context: _Context | None = field(default=None, repr=False, compare=False)
    """The evaluation's context (memberships as resolved), for ``RuleSet.transitions``."""


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


class _Unit(NamedTuple):
    """A unit (a segment, or a whole family) as ``_Context.resolve`` reads it."""

    ids: tuple[str, ...]
    """The unit's segment ids (a family's by descending priority, ties by id)."""
    tests: tuple[Test, ...]
    """The membership test of each segment in ``ids``."""
    family: bool
    dwell: tuple[str, ...]
    """The family members with a ``min_dwell`` (in ``ids`` order): they may keep the slot."""


class _Context:
    """One evaluation's state: facts plus memoised condition results and memberships.

    ``memo`` holds values the compiled closures compute once per evaluation (e.g. RFM scores).
    """

    __slots__ = ("_done", "_rules", "facts", "holds", "members", "memo")

    def __init__(self, facts: Facts, rules: RuleSet) -> None:
        self.facts = facts
        self._rules = rules
        self.holds: dict[str, bool] = {}
        self.members: set[str] = set()
        self._done: set[int] = set()
        self.memo: dict[Any, Any] = {}

    def is_member(self, segment_id: str) -> bool:
        """Membership of ``segment_id``, resolving its unit (segment or family) if needed."""
        unit = self._rules._unit_of.get(segment_id)
        if unit is None:
            return False
        if unit not in self._done:
            self.resolve(unit)
        return segment_id in self.members

    def resolve(self, unit: int) -> None:
        """Evaluate the segments of one unit and record who is a member.

        Runs once per unit (``_done``), so no segment of the unit has a result yet.
        """
        self._done.add(unit)
        ids, tests, is_family, dwell = self._rules._unit_specs[unit]
        holds = self.holds
        if not is_family:
            segment_id = ids[0]
            held = holds[segment_id] = tests[0](self)
            if held:
                self.members.add(segment_id)
            return
        chosen = False
        if dwell:
            rules = self._rules
            for segment_id in dwell:
                if rules._keeps_slot(self.facts, segment_id):
                    self.members.add(segment_id)
                    chosen = True
                    break
        for segment_id, test in zip(ids, tests, strict=True):
            held = holds[segment_id] = test(self)
            if held and not chosen:
                self.members.add(segment_id)
                chosen = True


@dataclass(frozen=True, slots=True)
class _Plan:
    """An incremental evaluation: units to evaluate, and what is kept from before."""

    units: tuple[int, ...]
    kept_units: frozenset[int]
    kept_ids: frozenset[str]
    next_due: NextDue
    """The earliest next change of the evaluated segments."""


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
    conversion: Conversion | None = field(default=None, compare=False)
    """The pack's conversion for performance (None for a rule set built without one)."""
    predictive: bool = field(default=False, compare=False)
    """Whether a segment reads the customer-base models (a ``predicted`` condition)."""
    _unit_specs: tuple[_Unit, ...] = field(init=False, repr=False, compare=False)
    """Per unit: what ``_Context.resolve`` reads (derived from ``_units`` and ``_conditions``)."""
    _next_due: NextDue = field(init=False, repr=False, compare=False)
    """The earliest next change of every segment (see ``streams.engine.nextdue``)."""
    _rank_of: Mapping[str, int] = field(init=False, repr=False, compare=False)
    """Segment id -> its position by descending priority (ties by id): the primary's order."""
    _steps: tuple[tuple[int, str | None, Test | None], ...] = field(init=False, compare=False)
    """Per unit: ``(unit, segment id, test)`` of a lone segment, ``(unit, None, None)`` else."""

    def __post_init__(self) -> None:
        specs = tuple(
            _Unit(
                ids,
                tuple(self._conditions[s].test for s in ids),
                family,
                tuple(s for s in ids if family and self._info[s].min_dwell_s is not None),
            )
            for ids, family in self._units
        )
        ranked = sorted(self._info.values(), key=_rank)
        steps = tuple(
            (unit, None, None) if spec.family else (unit, spec.ids[0], spec.tests[0])
            for unit, spec in enumerate(specs)
        )
        object.__setattr__(self, "_unit_specs", specs)
        object.__setattr__(self, "_steps", steps)
        object.__setattr__(self, "_next_due", NextDue.of(self._conditions.values()))
        object.__setattr__(self, "_rank_of", {info.id: i for i, info in enumerate(ranked)})

    @classmethod
    def build(
        cls,
        version: str,
        segments: Sequence[tuple[SegmentInfo, CompiledCondition]],
        series: Sequence[SeriesSpec] = (),
        rfm: RfmConfig | None = None,
        inputs: Mapping[str, frozenset[str]] | None = None,
        conversion: Conversion | None = None,
        predictive: bool = False,
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
        if conversion is not None:
            names = names | {conversion.event}
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
            conversion=conversion,
            predictive=predictive,
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
        """Every unit in order; a lone segment is resolved here, as ``_Context.resolve`` would."""
        ctx = _Context(facts, self)
        done = ctx._done
        mark = done.add
        holds = ctx.holds
        enter = ctx.members.add
        resolve = ctx.resolve
        for unit, segment_id, test in self._steps:
            if unit in done:
                continue
            if segment_id is None or test is None:
                resolve(unit)
                continue
            mark(unit)
            held = holds[segment_id] = test(ctx)
            if held:
                enter(segment_id)
        return ctx

    def _primary(self, members: Iterable[str]) -> str | None:
        return min(members, key=self._rank_of.__getitem__, default=None)

    def _evaluation(self, ctx: _Context) -> Evaluation:
        members = frozenset(ctx.members)
        return Evaluation(members, self._primary(members), ctx.holds, ctx)

    def evaluate(self, facts: Facts) -> Evaluation:
        """Every segment's condition, the resulting memberships and the primary segment."""
        return self._evaluation(self._evaluate(facts))

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
            next_due=NextDue.of(
                self._conditions[s] for u in sorted(found) for s in self._units[u][0]
            ),
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
        done = ctx._done
        done.update(plan.kept_units)
        ctx.members.update(plan.kept_ids.intersection(previous))
        resolve = ctx.resolve
        for unit in plan.units:
            if unit not in done:
                resolve(unit)
        return self._evaluation(ctx), plan.next_due.at(facts)

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
        return self._next_due.at(facts)

    def transitions(
        self,
        old: Collection[str],
        new: Collection[str],
        facts: Facts,
        customer_id: str | None = None,
        evaluation: Evaluation | None = None,
    ) -> list[Transition]:
        """The migration events that take a customer from ``old`` to ``new`` memberships.

        ``facts`` is the customer's state now (it gives the reasons). Segments the rule set no
        longer has are exited first (by id); then, in rule-set order, each unit's changes, with
        a family's exits before its entries. ``customer_id`` sets each transition's ``holdout``
        (``is_holdout``); without it ``holdout`` is False.

        ``evaluation``: the evaluation of these ``facts`` by this rule set that gave ``new``
        (from :meth:`evaluate` or :meth:`evaluate_changed`); its memberships explain the
        reasons instead of a second evaluation. Ignored when it was made from other facts.
        """
        ctx = None if evaluation is None else evaluation._context
        if ctx is not None and (ctx.facts is not facts or ctx._rules is not self):
            ctx = None
        result = self._transitions(set(old), set(new), facts, ctx)
        if customer_id is None:
            return result
        return [
            replace(t, holdout=True) if self.is_holdout(customer_id, t.segment) else t
            for t in result
        ]

    def _transitions(
        self, old_set: set[str], new_set: set[str], facts: Facts, ctx: _Context | None
    ) -> list[Transition]:
        unit_of = self._unit_of
        result = [
            Transition(sid, "exited", None, sid, None, Reason(REMOVED_RULE, {}))
            for sid in sorted(old_set - self._info.keys())
        ]
        touched = sorted({unit_of[s] for s in old_set ^ new_set if s in unit_of})
        if not touched:
            return result
        if ctx is None:
            ctx = self._evaluate(facts)
        for unit in touched:
            ids, is_family = self._units[unit]
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
