"""Compile condition models into plain closures, once, at load time.

Each condition becomes a ``CompiledCondition`` of three closures:

- ``test(ctx) -> bool``: the fast path, allocates no reasons;
- ``explain(ctx) -> (bool, Reason)``: the outcome and the clause and values that decided it;
- ``next_change(facts) -> float | None``: the earliest instant after ``facts.now`` at which the
  outcome could change with no new event (early is harmless, late would be a bug).

``ctx`` is an ``EvalContext``: the customer's ``Facts`` plus the segment memberships already
resolved in this evaluation (needed by ``in_segment``). Window conditions register the
``SeriesSpec`` they read with the ``Compiler``, one series per (event, filter).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.engine import model as m
from streams.engine.compiled import (
    DAY,
    CompiledCondition,
    EvalContext,
    NextChange,
    Reason,
    never,
)
from streams.engine.condition_types import condition_type
from streams.engine.durations import format_duration
from streams.engine.facts import MISSING, Facts, SeriesSpec
from streams.engine.instants import HALF_MS
from streams.engine.nextdue import CountDue, Earliest, RecencyDue, SegmentNext, WindowDue
from streams.engine.ops import (
    numeric_check,
    numeric_predicate,
    numeric_text,
    trait_predicate,
    trait_text,
)
from streams.engine.predicted import compile_predicted
from streams.engine.rfm import RfmConfig
from streams.engine.value import RfmScorer, compile_lifetime, compile_rfm, merge_crossings


@dataclass
class _SeriesBuilder:
    id: str
    event: str
    where: Callable[[Mapping[str, Any]], bool]
    sum_props: set[str]
    horizon_s: float


def _lookup(props: Mapping[str, Any], path: str) -> Any:
    """A property by name, or by dotted path into nested mappings; ``MISSING`` if absent."""
    if path in props:
        return props[path]
    if "." not in path:
        return MISSING
    current: Any = props
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return MISSING
        current = current[part]
    return current


def _where_predicate(where: Mapping[str, m.PropertyFilter]) -> Callable[[Mapping[str, Any]], bool]:
    tests = tuple((prop, trait_predicate(flt.op, flt.value)) for prop, flt in sorted(where.items()))
    if not tests:
        return lambda _props: True

    def matches(props: Mapping[str, Any]) -> bool:
        return all(test(_lookup(props, prop)) for prop, test in tests)

    return matches


def _where_text(where: Mapping[str, m.PropertyFilter]) -> str:
    return " and ".join(trait_text(prop, flt.op, flt.value) for prop, flt in sorted(where.items()))


def _canonical_series(event: str, where: Mapping[str, m.PropertyFilter] | None) -> str:
    filters = [[prop, flt.op, flt.value] for prop, flt in sorted((where or {}).items())]
    return json.dumps(
        {"event": event, "where": filters}, sort_keys=True, separators=(",", ":"), default=str
    )


def _wrap(text: str) -> str:
    return f"({text})" if " and " in text or " or " in text else text


class Compiler:
    """Compiles conditions and collects the series they need.

    ``in_segment`` conditions need the next-change function of the segments they reference;
    those are bound after every segment is compiled, with ``bind_segment``.
    """

    def __init__(self, rfm: RfmConfig | None = None) -> None:
        self._series: dict[str, _SeriesBuilder] = {}
        self._segment_next: dict[str, NextChange] = {}
        self._rfm = rfm
        self._rfm_scorer = None if rfm is None else RfmScorer(rfm)

    def bind_segment(self, segment_id: str, next_change: NextChange) -> None:
        """Set the next-change function that ``in_segment: segment_id`` delegates to."""
        self._segment_next[segment_id] = next_change

    def series(self) -> tuple[SeriesSpec, ...]:
        """Every series registered so far, in registration order."""
        return tuple(
            SeriesSpec(
                id=b.id,
                event=b.event,
                where=b.where,
                sum_props=tuple(sorted(b.sum_props)),
                horizon_s=b.horizon_s,
            )
            for b in self._series.values()
        )

    def register_series(
        self,
        event: str,
        where: Mapping[str, m.PropertyFilter] | None,
        window_s: float,
        sum_prop: str | None = None,
    ) -> str:
        """Register (or widen) the series for ``event`` and ``where``; return its id."""
        canonical = _canonical_series(event, where)
        builder = self._series.get(canonical)
        if builder is None:
            series_id = "s" + hashlib.sha1(canonical.encode()).hexdigest()[:10]
            builder = _SeriesBuilder(
                series_id, event, _where_predicate(where or {}), set(), window_s
            )
            self._series[canonical] = builder
        builder.horizon_s = max(builder.horizon_s, window_s)
        if sum_prop is not None:
            builder.sum_props.add(sum_prop)
        return builder.id

    def compile(self, cond: m.Condition) -> CompiledCondition:
        """Compile a condition tree."""
        compiled = self._compile(cond)
        if cond.label is None:
            return compiled
        label = cond.label
        inner = compiled.explain

        def explain(ctx: EvalContext) -> tuple[bool, Reason]:
            ok, reason = inner(ctx)
            return ok, Reason(label, reason.values)

        return dataclasses.replace(compiled, explain=explain)

    def _compile(self, cond: m.Condition) -> CompiledCondition:
        return condition_type(cond).compile(self, cond)

    # One method per condition type, called through its registration (condition_types.py).

    def trait(self, cond: m.TraitCondition) -> CompiledCondition:
        """A ``trait`` condition."""
        return _trait(cond)

    def recency(self, cond: m.RecencyCondition) -> CompiledCondition:
        """A ``recency`` condition."""
        return _recency(cond)

    def lifetime(self, cond: m.LifetimeCondition) -> CompiledCondition:
        """A ``lifetime`` condition."""
        return compile_lifetime(cond)

    def predicted(self, cond: m.PredictedCondition) -> CompiledCondition:
        """A ``predicted`` condition."""
        return compile_predicted(cond)

    def rfm(self, cond: m.RfmCondition) -> CompiledCondition:
        """An ``rfm`` condition (the pack needs its rfm file)."""
        if self._rfm is None:
            raise ValueError("an 'rfm' condition needs the pack's rfm file")
        return compile_rfm(cond, self._rfm, self._rfm_scorer)

    def all_of(self, cond: m.AllCondition) -> CompiledCondition:
        """``all``: every child holds."""
        return _all([self.compile(c) for c in cond.of])

    def any_of(self, cond: m.AnyCondition) -> CompiledCondition:
        """``any``: a child holds."""
        return _any([self.compile(c) for c in cond.of])

    def not_of(self, cond: m.NotCondition) -> CompiledCondition:
        """``not``: the child does not hold."""
        return _not(self.compile(cond.condition))

    def count(self, cond: m.EventCountCondition) -> CompiledCondition:
        """An ``event_count`` condition."""
        series_id = self.register_series(cond.event, cond.where, cond.within)
        window = cond.within
        pred = numeric_predicate(cond.op, cond.value)
        check, bound = numeric_check(cond.op, cond.value)
        subject = _window_subject(cond.event, cond.where, None)
        dur = format_duration(window)
        text = f"count({subject} within {dur}) {numeric_text(cond.op, cond.value)}"
        key = f"count({subject}, {dur})"

        def test(ctx: EvalContext) -> bool:
            return check(ctx.facts.window_count(series_id, window), bound)

        def explain(ctx: EvalContext) -> tuple[bool, Reason]:
            n = ctx.facts.window_count(series_id, window)
            return pred(n), Reason(text, {key: n})

        next_change = CountDue(series_id, window, check, bound).at
        return CompiledCondition(test, explain, next_change, frozenset({cond.event}), ())

    def sum(self, cond: m.EventSumCondition | m.EventAverageCondition) -> CompiledCondition:
        """An ``event_sum`` or ``event_average`` condition."""
        prop = cond.property
        series_id = self.register_series(cond.event, cond.where, cond.within, prop)
        window = cond.within
        pred = numeric_predicate(cond.op, cond.value)
        check, bound = numeric_check(cond.op, cond.value)
        average = isinstance(cond, m.EventAverageCondition)
        fn = "avg" if average else "sum"
        subject = _window_subject(cond.event, cond.where, prop)
        dur = format_duration(window)
        text = f"{fn}({subject} within {dur}) {numeric_text(cond.op, cond.value)}"
        key = f"{fn}({subject}, {dur})"
        count_key = f"count({_window_subject(cond.event, cond.where, None)}, {dur})"

        def value(facts: Facts) -> float | None:
            total = facts.window_sum(series_id, prop, window)
            if not average:
                return total
            n = facts.window_count(series_id, window)
            return total / n if n else None

        def test(ctx: EvalContext) -> bool:
            v = value(ctx.facts)
            return v is not None and check(v, bound)

        def explain(ctx: EvalContext) -> tuple[bool, Reason]:
            v = value(ctx.facts)
            values: dict[str, Any] = {key: v}
            if average:
                values[count_key] = ctx.facts.window_count(series_id, window)
            return v is not None and pred(v), Reason(text, values)

        next_change = WindowDue(series_id, window).at
        return CompiledCondition(test, explain, next_change, frozenset({cond.event}), ())

    def in_segment(self, cond: m.InSegmentCondition) -> CompiledCondition:
        """An ``in_segment`` condition."""
        target = cond.segment
        text = f"in segment {target}"
        key = f"in_segment({target})"
        bound = self._segment_next

        def test(ctx: EvalContext) -> bool:
            return ctx.is_member(target)

        def explain(ctx: EvalContext) -> tuple[bool, Reason]:
            ok = ctx.is_member(target)
            return ok, Reason(text, {key: ok})

        next_change = SegmentNext(bound, target).at
        return CompiledCondition(test, explain, next_change, frozenset(), (target,))


def _window_subject(
    event: str, where: Mapping[str, m.PropertyFilter] | None, prop: str | None
) -> str:
    subject = f"{event}.{prop}" if prop else event
    if where:
        subject += f" where {_where_text(where)}"
    return subject


def _trait(cond: m.TraitCondition) -> CompiledCondition:
    path = cond.path
    pred = trait_predicate(cond.op, cond.value)
    text = trait_text(path, cond.op, cond.value)

    def test(ctx: EvalContext) -> bool:
        return pred(ctx.facts.trait(path))

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        v = ctx.facts.trait(path)
        return pred(v), Reason(text, {path: None if v is MISSING else v})

    return CompiledCondition(test, explain, never, frozenset(), ())


def _days(seconds: float) -> float:
    return round(seconds / DAY, 3)


def _recency(cond: m.RecencyCondition) -> CompiledCondition:
    event = cond.event
    negate = cond.not_within is not None
    window: float = cond.not_within if cond.not_within is not None else (cond.within or 0.0)
    dur = format_duration(window)
    text = f"no {event} within {dur}" if negate else f"{event} within {dur}"
    key = f"days_since_last({event})"
    limit = window - HALF_MS  # exact on canonical instants: see streams.engine.instants

    def recent(facts: Facts) -> bool:
        last = facts.last_time(event)
        return last is not None and facts.now - last < limit

    def test(ctx: EvalContext) -> bool:
        facts = ctx.facts
        last = facts.last_time(event)
        return (last is not None and facts.now - last < limit) != negate

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        facts = ctx.facts
        last = facts.last_time(event)
        days = None if last is None else _days(facts.now - last)
        return recent(facts) != negate, Reason(text, {key: days})

    next_change = RecencyDue(event, (window,)).at
    return CompiledCondition(test, explain, next_change, frozenset({event}), ())


def _merge(reasons: Sequence[Reason]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for reason in reasons:
        values.update(reason.values)
    return values


def _children_next(children: Sequence[CompiledCondition]) -> NextChange:
    """The earliest next change of ``children`` (``never`` children left out: always None)."""
    fns = merge_crossings([c.next_change for c in children if c.next_change is not never])
    if not fns:
        return never
    if len(fns) == 1:
        return fns[0]
    return Earliest(fns).at


def _union_names(children: Sequence[CompiledCondition]) -> frozenset[str]:
    return frozenset().union(*(c.event_names for c in children))


def _union_refs(children: Sequence[CompiledCondition]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ref for c in children for ref in c.segment_refs))


def _all(children: list[CompiledCondition]) -> CompiledCondition:
    tests = tuple(c.test for c in children)
    explains = tuple(c.explain for c in children)

    def test(ctx: EvalContext) -> bool:
        """A plain loop: no generator per call."""
        for t in tests:  # noqa: SIM110
            if not t(ctx):
                return False
        return True

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        reasons = []
        for fn in explains:
            ok, reason = fn(ctx)
            if not ok:
                return False, reason
            reasons.append(reason)
        return True, Reason(" and ".join(_wrap(r.rule) for r in reasons), _merge(reasons))

    return CompiledCondition(
        test, explain, _children_next(children), _union_names(children), _union_refs(children)
    )


def _any(children: list[CompiledCondition]) -> CompiledCondition:
    tests = tuple(c.test for c in children)
    explains = tuple(c.explain for c in children)

    def test(ctx: EvalContext) -> bool:
        """A plain loop: no generator per call."""
        for t in tests:  # noqa: SIM110
            if t(ctx):
                return True
        return False

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        reasons = []
        for fn in explains:
            ok, reason = fn(ctx)
            if ok:
                return True, reason
            reasons.append(reason)
        return False, Reason(" or ".join(_wrap(r.rule) for r in reasons), _merge(reasons))

    return CompiledCondition(
        test, explain, _children_next(children), _union_names(children), _union_refs(children)
    )


def _not(child: CompiledCondition) -> CompiledCondition:
    inner_test = child.test
    inner_explain = child.explain

    def test(ctx: EvalContext) -> bool:
        return not inner_test(ctx)

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        ok, reason = inner_explain(ctx)
        return not ok, Reason(f"not ({reason.rule})", reason.values)

    return CompiledCondition(
        test, explain, child.next_change, child.event_names, child.segment_refs
    )


__all__ = ["CompiledCondition", "Compiler", "EvalContext", "NextChange", "Reason"]
