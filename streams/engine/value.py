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

from typing import Any

from streams.engine import model as m
from streams.engine.compiled import DAY, CompiledCondition, EvalContext, Reason, never
from streams.engine.facts import Facts
from streams.engine.ops import numeric_predicate, numeric_text
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
    now = facts.now
    candidates: list[float] = []
    for threshold in thresholds:
        if threshold <= 0 or revenue <= 0:
            continue
        at = first_seen + max(revenue * YEAR_DAYS / threshold, MIN_TENURE_DAYS) * DAY
        candidates.extend(t for t in (at, at + _EPSILON) if t > now)
    return min(candidates) if candidates else None


def compile_lifetime(cond: m.LifetimeCondition) -> CompiledCondition:
    """A ``lifetime`` condition: a raw metric, days since first/last seen, or predicted value."""
    metric = cond.metric
    pred = numeric_predicate(cond.op, cond.value)
    text = f"lifetime {metric} {numeric_text(cond.op, cond.value)}"
    since = metric.removeprefix("days_since_") if metric.startswith("days_since_") else None
    predicted = metric == "predicted_value"
    thresholds = cond.value if isinstance(cond.value, tuple) else (cond.value,)

    def value(facts: Facts) -> float | None:
        if predicted:
            return predicted_value(facts)
        if since is None:
            return facts.metric(metric)
        base = facts.metric(since)
        return None if base is None else (facts.now - base) / DAY

    def test(ctx: EvalContext) -> bool:
        v = value(ctx.facts)
        return v is not None and pred(v)

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        v = value(ctx.facts)
        rounded = since is not None or predicted
        shown = round(v, 3) if rounded and v is not None else v
        return v is not None and pred(v), Reason(text, {metric: shown})

    if predicted:

        def predicted_next(facts: Facts) -> float | None:
            return predicted_value_crossings(facts, thresholds)

        return CompiledCondition(test, explain, predicted_next, frozenset(), ())
    if since is None:
        return CompiledCondition(test, explain, never, frozenset(), ())
    base_metric = since

    def next_change(facts: Facts) -> float | None:
        base = facts.metric(base_metric)
        if base is None:
            return None
        now = facts.now
        candidates: list[float] = []
        for threshold in thresholds:
            at = base + threshold * DAY
            candidates.extend(t for t in (at, at + _EPSILON) if t > now)
        return min(candidates) if candidates else None

    return CompiledCondition(test, explain, next_change, frozenset(), ())


def _range_text(letter: str, bounds: tuple[int, int]) -> str:
    low, high = bounds
    return f"{letter} = {low}" if low == high else f"{letter} {low}-{high}"


def compile_rfm(cond: m.RfmCondition, config: RfmConfig) -> CompiledCondition:
    """An ``rfm`` condition: each given score range holds (false with no order).

    Reason values are ``{"R": r, "F": f, "M": m}`` (null with no order). Only R changes with
    time, so ``next_change`` is the next R change when the condition tests R, else None.
    """
    ranges = tuple(
        (index, bounds)
        for index, bounds in enumerate((cond.r, cond.f, cond.m))
        if bounds is not None
    )
    text = "RFM " + ", ".join(_range_text("RFM"[i], b) for i, b in ranges)

    def holds(scores: tuple[int, int, int] | None) -> bool:
        if scores is None:
            return False
        return all(low <= scores[i] <= high for i, (low, high) in ranges)

    def test(ctx: EvalContext) -> bool:
        facts = ctx.facts
        return holds(rfm_scores(facts, boundaries_for(facts, config)))

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        facts = ctx.facts
        scores = rfm_scores(facts, boundaries_for(facts, config))
        values: dict[str, Any] = dict(zip("RFM", scores or (None, None, None), strict=True))
        if scores is None:
            return False, Reason(f"{text} (no order yet)", values)
        return holds(scores), Reason(text, values)

    if cond.r is None:
        return CompiledCondition(test, explain, never, frozenset({ORDER_EVENT}), ())

    def next_change(facts: Facts) -> float | None:
        return next_rfm_change(facts, boundaries_for(facts, config))

    return CompiledCondition(test, explain, next_change, frozenset({ORDER_EVENT}), ())


__all__ = [
    "MIN_TENURE_DAYS",
    "YEAR_DAYS",
    "compile_lifetime",
    "compile_rfm",
    "predicted_value",
    "predicted_value_crossings",
]
