"""Value conditions: ``lifetime`` metrics (with the derived ``predicted_value``) and ``rfm``.

**Predicted value** (``metric: predicted_value``): a simple one-year customer value,

    predicted_value = average_order_value x expected_orders
    expected_orders = orders per year of tenure x 1 year
                    = orders / (tenure_days / 365)
    tenure_days     = max(days since first seen, 30)

which simplifies to ``revenue * 365 / tenure_days``. The 30-day floor keeps a brand-new
customer's value from blowing up (their first order counts as one order a month). None (every
comparison false) for a customer with no order. With no new order it only decreases over time,
so a threshold ``v`` is crossed at ``first_seen + max(revenue * 365 / v, 30) days``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from streams.engine import model as m
from streams.engine.compiled import DAY, CompiledCondition, EvalContext, NextChange, Reason, never
from streams.engine.facts import Facts
from streams.engine.ops import numeric_check, numeric_predicate, numeric_text
from streams.engine.rfm import (
    ORDER_EVENT,
    RfmConfig,
    boundaries_for,
    next_rfm_change,
    rfm_scores,
)

_EPSILON = 1e-3
"""Added to a threshold instant so a strict comparison has flipped by then."""

YEAR_DAYS = 365.0
"""Days in the one-year horizon of ``predicted_value``."""

MIN_TENURE_DAYS = 30.0
"""Floor of the tenure in ``predicted_value`` (avoids dividing by a few hours)."""

_UNSET: Final = object()
"""Not in an evaluation's memo yet (None is a valid memoised value)."""


def predicted_value(facts: Facts) -> float | None:
    """Average order value x expected orders over one year (see the module docstring)."""
    orders = facts.metric("orders")
    first_seen = facts.metric("first_seen")
    if orders is None or orders < 1 or first_seen is None:
        return None
    revenue = facts.metric("revenue") or 0.0
    tenure_days = max((facts.now - first_seen) / DAY, MIN_TENURE_DAYS)
    average = revenue / orders
    expected_orders = orders / (tenure_days / YEAR_DAYS)
    return average * expected_orders


def predicted_value_crossings(facts: Facts, thresholds: tuple[float, ...]) -> float | None:
    """The earliest instant after ``now`` at which ``predicted_value`` crosses a threshold."""
    orders = facts.metric("orders")
    first_seen = facts.metric("first_seen")
    if orders is None or orders < 1 or first_seen is None:
        return None
    revenue = facts.metric("revenue") or 0.0
    if revenue <= 0:
        return None
    now = facts.now
    best: float | None = None
    for threshold in thresholds:
        if threshold <= 0:
            continue
        at = first_seen + max(revenue * YEAR_DAYS / threshold, MIN_TENURE_DAYS) * DAY
        best = _after(now, at, best)
    return best


class PredictedCrossings:
    """The next-change function of ``predicted_value`` conditions: ``at`` is the function.

    Several of them combined by their earliest result (the ``condition`` and ``stay_condition``
    of one segment, the children of ``all``/``any``) are one call over all their thresholds:
    see :func:`merge_crossings`.
    """

    __slots__ = ("thresholds",)

    def __init__(self, thresholds: tuple[float, ...]) -> None:
        self.thresholds = thresholds

    def at(self, facts: Facts) -> float | None:
        """``predicted_value_crossings(facts, self.thresholds)``."""
        return predicted_value_crossings(facts, self.thresholds)


def merge_crossings(functions: Sequence[NextChange]) -> tuple[NextChange, ...]:
    """``functions`` with every ``PredictedCrossings.at`` merged into one, at the first's place.

    For functions combined by their earliest result only: the earliest crossing over the union
    of the thresholds is the earliest of the crossings over each.
    """
    merged: list[float] = []
    result: list[NextChange] = []
    slot = -1
    found = 0
    for function in functions:
        owner = getattr(function, "__self__", None)
        if isinstance(owner, PredictedCrossings):
            found += 1
            merged.extend(owner.thresholds)
            if slot >= 0:
                continue
            slot = len(result)
        result.append(function)
    if found > 1:
        result[slot] = PredictedCrossings(tuple(merged)).at
    return tuple(result)


def _after(now: float, at: float, best: float | None) -> float | None:
    """``best`` lowered to the first of ``at``, ``at + _EPSILON`` that lies after ``now``.

    ``at + _EPSILON >= at``, so when ``at`` is after ``now`` it is the smaller candidate: the
    result is ``min`` of the candidates after ``now``, as a list of both would give.
    """
    t = at if at > now else at + _EPSILON
    if t > now and (best is None or t < best):
        return t
    return best


def compile_lifetime(cond: m.LifetimeCondition) -> CompiledCondition:
    """A ``lifetime`` condition: a raw metric, days since first/last seen, or predicted value."""
    metric = cond.metric
    pred = numeric_predicate(cond.op, cond.value)
    check, bound = numeric_check(cond.op, cond.value)
    text = f"lifetime {metric} {numeric_text(cond.op, cond.value)}"
    since = metric.removeprefix("days_since_") if metric.startswith("days_since_") else None
    predicted = metric == "predicted_value"
    thresholds = cond.value if isinstance(cond.value, tuple) else (cond.value,)

    base_metric = since or ""

    def raw_value(ctx: EvalContext) -> float | None:
        return ctx.facts.metric(metric)

    def days_value(ctx: EvalContext) -> float | None:
        facts = ctx.facts
        base = facts.metric(base_metric)
        return None if base is None else (facts.now - base) / DAY

    value: Callable[[EvalContext], float | None] = (
        _predicted if predicted else raw_value if since is None else days_value
    )
    if value is raw_value:

        def test(ctx: EvalContext) -> bool:
            v = ctx.facts.metric(metric)
            return v is not None and check(v, bound)

    else:

        def test(ctx: EvalContext) -> bool:
            v = value(ctx)
            return v is not None and check(v, bound)

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        v = value(ctx)
        rounded = since is not None or predicted
        shown = round(v, 3) if rounded and v is not None else v
        return v is not None and pred(v), Reason(text, {metric: shown})

    if predicted:
        crossings = PredictedCrossings(thresholds)
        return CompiledCondition(test, explain, crossings.at, frozenset(), ())
    if since is None:
        return CompiledCondition(test, explain, never, frozenset(), ())

    def next_change(facts: Facts) -> float | None:
        base = facts.metric(base_metric)
        if base is None:
            return None
        now = facts.now
        best: float | None = None
        for threshold in thresholds:
            best = _after(now, base + threshold * DAY, best)
        return best

    return CompiledCondition(test, explain, next_change, frozenset(), ())


def _predicted(ctx: EvalContext) -> float | None:
    """``predicted_value(ctx.facts)``, computed once per evaluation."""
    memo = ctx.memo
    found = memo.get(predicted_value, _UNSET)
    if found is _UNSET:
        found = memo[predicted_value] = predicted_value(ctx.facts)
    return found  # type: ignore[no-any-return]


class RfmScorer:
    """What every ``rfm`` condition of a pack shares: its scores and its next R change.

    ``scores`` computes the customer's (R, F, M) once per evaluation (in ``ctx.memo``), however
    many ``rfm`` conditions read it; ``next_change`` is one function for every condition that
    tests R, so ``RuleSet.next_due`` calls it once.
    """

    __slots__ = ("config", "next_change")

    def __init__(self, config: RfmConfig) -> None:
        self.config = config

        def next_change(facts: Facts) -> float | None:
            return next_rfm_change(facts, boundaries_for(facts, config))

        self.next_change: NextChange = next_change

    def scores(self, ctx: EvalContext) -> tuple[int, int, int] | None:
        """(R, F, M) of the customer at this evaluation, or None with no order."""
        memo = ctx.memo
        found = memo.get(self, _UNSET)
        if found is _UNSET:
            facts = ctx.facts
            found = memo[self] = rfm_scores(facts, boundaries_for(facts, self.config))
        return found  # type: ignore[no-any-return]


def _range_text(letter: str, bounds: tuple[int, int]) -> str:
    low, high = bounds
    return f"{letter} = {low}" if low == high else f"{letter} {low}-{high}"


def compile_rfm(
    cond: m.RfmCondition, config: RfmConfig, scorer: RfmScorer | None = None
) -> CompiledCondition:
    """An ``rfm`` condition: each given score range holds (false with no order).

    Reason values are ``{"R": r, "F": f, "M": m}`` (null with no order). Only R changes with
    time, so ``next_change`` is the next R change when the condition tests R, else None.
    ``scorer``: the pack's shared ``RfmScorer`` for ``config`` (a new one when None).
    """
    if scorer is None or scorer.config is not config:
        scorer = RfmScorer(config)
    scores_of = scorer.scores
    ranges = tuple(
        (index, bounds)
        for index, bounds in enumerate((cond.r, cond.f, cond.m))
        if bounds is not None
    )
    text = "RFM " + ", ".join(_range_text("RFM"[i], b) for i, b in ranges)

    checks = tuple((index, low, high) for index, (low, high) in ranges)

    def holds(scores: tuple[int, int, int] | None) -> bool:
        if scores is None:
            return False
        return all(low <= scores[i] <= high for i, (low, high) in ranges)

    def test(ctx: EvalContext) -> bool:
        """``holds(scores_of(ctx))``, reading the memoised scores directly; a plain loop."""
        scores = ctx.memo.get(scorer, _UNSET)
        if scores is _UNSET:
            scores = scores_of(ctx)
        if scores is None:
            return False
        for index, low, high in checks:  # noqa: SIM110
            if not low <= scores[index] <= high:
                return False
        return True

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        scores = scores_of(ctx)
        values: dict[str, Any] = dict(zip("RFM", scores or (None, None, None), strict=True))
        if scores is None:
            return False, Reason(f"{text} (no order yet)", values)
        return holds(scores), Reason(text, values)

    next_change = never if cond.r is None else scorer.next_change
    return CompiledCondition(test, explain, next_change, frozenset({ORDER_EVENT}), ())


__all__ = [
    "MIN_TENURE_DAYS",
    "YEAR_DAYS",
    "PredictedCrossings",
    "RfmScorer",
    "compile_lifetime",
    "compile_rfm",
    "merge_crossings",
    "predicted_value",
    "predicted_value_crossings",
]
