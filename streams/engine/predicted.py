"""The ``predicted`` condition: a model prediction compared with a threshold.

Predictions fall as time passes without a conversion, so the condition has exact due times:
the first canonical instant after now at which the comparison's result changes. For ``p_alive``
that instant comes from a closed form, for the others from bisection (see
``streams.models.predictor``); the instant is then checked against the comparison itself, so a
threshold met exactly is decided as the operator says.
"""

from __future__ import annotations

from streams.engine import model as m
from streams.engine.compiled import CompiledCondition, EvalContext, Reason
from streams.engine.durations import format_duration
from streams.engine.facts import Facts
from streams.engine.ops import numeric_check, numeric_predicate, numeric_text


def _subject(cond: m.PredictedCondition) -> str:
    if cond.metric == "expected_orders" and cond.within is not None:
        return f"predicted expected_orders within {format_duration(cond.within)}"
    if cond.metric == "clv":
        return f"predicted clv over {format_duration(cond.horizon or 365 * 86400)}"
    return "predicted p_alive"


def compile_predicted(cond: m.PredictedCondition) -> CompiledCondition:
    """A ``predicted`` condition."""
    metric = cond.metric
    horizon = cond.within if metric == "expected_orders" else cond.horizon
    pred = numeric_predicate(cond.op, cond.value)
    check, bound = numeric_check(cond.op, cond.value)
    subject = _subject(cond)
    text = f"{subject} {numeric_text(cond.op, cond.value)}"
    key = subject.removeprefix("predicted ").replace(" ", "_")
    thresholds = cond.value if isinstance(cond.value, tuple) else (cond.value,)

    def test(ctx: EvalContext) -> bool:
        v = ctx.facts.prediction(metric, horizon)
        return v is not None and check(v, bound)

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        v = ctx.facts.prediction(metric, horizon)
        return v is not None and pred(v), Reason(text, {key: v})

    def holds(value: float) -> bool:
        return check(value, bound)

    def next_change(facts: Facts) -> float | None:
        best: float | None = None
        for threshold in thresholds:
            due = facts.prediction_due(metric, horizon, threshold, holds)
            if due is not None and (best is None or due < best):
                best = due
        return best

    return CompiledCondition(test, explain, next_change, frozenset(), ())
